/**
 * The yoga instance: schema, context, hardening plugins (graphql-armor limits),
 * error masking and request ids. HTTP requests reach it through src/server.ts
 * (body cap, uploads); WebSocket operations through src/http/subscriptions.ts,
 * which runs the same envelop plugins.
 */
import { EnvelopArmorPlugin } from "@escape.tech/graphql-armor";
import { createYoga, type Plugin, type YogaServerInstance } from "graphql-yoga";
import { GraphQLError } from "graphql";
import { authenticate, createContext, type Context, type Deps, type Viewer } from "../context.ts";
import { errorCodeOf, isGraphQLError } from "../errors.ts";
import { schema } from "../schema/index.ts";
import type { StoredUpload } from "../services/uploads.ts";

/** What the Node server passes along with each HTTP request. */
export interface HttpServerContext {
  vega?: { requestId: string; uploads?: Map<string, StoredUpload>; viewer?: Viewer | null };
}

/** What graphql-ws passes (see subscriptions.ts): the viewer authenticated at connection_init. */
interface WebSocketServerContext {
  extra?: { viewer?: Viewer | null; requestId?: string };
}

export type VegaYoga = YogaServerInstance<HttpServerContext & WebSocketServerContext, Context>;

/** Armor's refusals are validation errors: give them a code and 400, like any bad request. */
function armorRejection(_ctx: unknown, error: GraphQLError) {
  const extensions = error.extensions as Record<string, unknown>;
  extensions.code = "BAD_USER_INPUT";
  extensions.http = { status: 400 };
}

/**
 * Parse and validation errors (armor's limits among them) answer 400 whatever
 * the Accept header: GraphQL-over-HTTP would let `application/json` clients
 * get 200, and a refused operation must not look like a successful one.
 */
function invalidOperationsAre400(): Plugin {
  return {
    onResultProcess({ result }) {
      if (Array.isArray(result) || Symbol.asyncIterator in (result as object)) return;
      for (const error of (result as { errors?: readonly GraphQLError[] }).errors ?? []) {
        const http = error.extensions?.http as { spec?: boolean; status?: number } | undefined;
        if (http?.spec) (error.extensions as Record<string, unknown>).http = { status: http.status ?? 400 };
      }
    },
  };
}

/** Logs every unexpected (masked) error with the request id the client received. */
function logUnexpectedErrors(): Plugin<Context> {
  return {
    onExecute() {
      return {
        onExecuteDone({ args, result }) {
          const results = "errors" in result ? [result] : [];
          for (const { errors } of results) {
            for (const error of errors ?? []) {
              if (!errorCodeOf(error) && error.originalError) {
                args.contextValue.log.error({ err: error.originalError, path: error.path }, "unexpected error");
              }
            }
          }
        },
      };
    },
  };
}

const yogaLogMessage = (args: unknown[]) => (args[0] instanceof Error ? args[0].message : String(args[0]));
const yogaLogFields = (args: unknown[]) => (args[0] instanceof Error ? { err: args[0] } : { details: args.slice(1) });

export function createGraphQLHandler(deps: Deps): VegaYoga {
  const { config } = deps;
  return createYoga<HttpServerContext & WebSocketServerContext, Context>({
    schema,
    graphqlEndpoint: "/graphql",
    landingPage: false,
    graphiql: false,
    logging: {
      debug: (...args) => deps.log.debug(yogaLogFields(args), yogaLogMessage(args)),
      info: (...args) => deps.log.info(yogaLogFields(args), yogaLogMessage(args)),
      warn: (...args) => deps.log.warn(yogaLogFields(args), yogaLogMessage(args)),
      error: (...args) => deps.log.error(yogaLogFields(args), yogaLogMessage(args)),
    },
    // The Node server parses multipart uploads itself (streamed to disk); yoga never sees them.
    multipart: false,
    maskedErrors: {
      maskError(error, message) {
        const original = isGraphQLError(error) ? error : undefined;
        if (original && errorCodeOf(original)) return original;
        if (original && !original.originalError) return original; // parse/validation errors speak for themselves
        return new GraphQLError(message, {
          extensions: { code: "INTERNAL_SERVER_ERROR", http: { status: 500 } },
        });
      },
    },
    context: async (initial) => {
      const http = initial.vega;
      if (http) {
        const viewer = http.viewer !== undefined ? http.viewer : await authenticate(deps, initial.request.headers.get("authorization"));
        return createContext(deps, viewer, { requestId: http.requestId, uploads: http.uploads });
      }
      return createContext(deps, initial.extra?.viewer ?? null, { requestId: initial.extra?.requestId });
    },
    plugins: [
      EnvelopArmorPlugin({
        maxDepth: { n: config.graphqlMaxDepth, onReject: [armorRejection] },
        maxAliases: { n: config.graphqlMaxAliases, onReject: [armorRejection] },
        maxTokens: { n: config.graphqlMaxTokens, onReject: [armorRejection] },
        maxDirectives: { n: config.graphqlMaxDirectives, onReject: [armorRejection] },
        costLimit: { maxCost: config.graphqlMaxCost, onReject: [armorRejection] },
        blockFieldSuggestion: { enabled: true },
      }),
      invalidOperationsAre400(),
      logUnexpectedErrors(),
    ],
  });
}
