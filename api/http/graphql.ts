/**
 * The yoga instance: schema, context, hardening plugins (graphql-armor limits),
 * error masking and request ids. HTTP requests reach it through api/server.ts
 * (body cap, uploads); WebSocket operations through api/http/subscriptions.ts,
 * which runs the same envelop plugins.
 */
import { EnvelopArmorPlugin } from "@escape.tech/graphql-armor";
import { createYoga, type Plugin, type YogaServerInstance } from "graphql-yoga";
import { GraphQLError, type ExecutionResult, type ValidationRule } from "graphql";
import type { Config } from "../../shared/config.ts";
import { createContext, type Context, type Deps, type Viewer } from "../context.ts";
import { errorCodeOf, errorCodes, isGraphQLError } from "../../shared/errors.ts";
import { schema } from "../schema/index.ts";
import type { StoredUpload } from "../services/uploads.ts";
import { GRAPHIQL_OPTIONS, renderVegaGraphiQL } from "./graphiql.ts";

/** What the Node server passes along with each HTTP request: the caller is authenticated before yoga sees the query. */
export interface HttpServerContext {
  vega?: { requestId: string; viewer: Viewer | null; uploads?: Map<string, StoredUpload> };
}

/** What graphql-ws passes (see subscriptions.ts): the viewer authenticated at connection_init. */
interface WebSocketServerContext {
  extra?: { viewer?: Viewer | null; requestId?: string };
}

export type VegaYoga = YogaServerInstance<HttpServerContext & WebSocketServerContext, Context>;

/**
 * Armor's refusals are validation errors: give them a code and 400, like any
 * bad request. Armor words them as parse errors ("Syntax Error: Query Cost
 * limit of …"), which they are not: the query parsed, and was too expensive.
 */
function armorRejection(_ctx: unknown, error: GraphQLError) {
  const extensions = error.extensions as Record<string, unknown>;
  extensions.code = "BAD_USER_INPUT";
  extensions.http = { status: 400 };
  error.message = error.message.replace(/^Syntax Error: /, "");
}

/** The caller as the server context knows it before execution: HTTP requests carry it, WebSocket connections too. */
const callerOf = (context: HttpServerContext & WebSocketServerContext): Viewer | null =>
  context.vega?.viewer ?? context.extra?.viewer ?? null;

/** graphql-js's "Did you mean …?" endings (fields, arguments, types, enum values), which describe the schema. */
const withoutSuggestions = (message: string) => message.replace(/\s*Did you mean [^?]*\?/g, "");

/** The same error with another message (and, when given, extensions), keeping where it points in the query. */
const rewordError = (error: GraphQLError, message: string, extensions = error.extensions) =>
  new GraphQLError(message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    extensions,
  });

/** Introspection (`__schema`, `__type`) answers authenticated callers only; codegen reads the committed schema.graphql. */
const IntrospectionNeedsToken: ValidationRule = (context) => ({
  Field(node) {
    if (node.name.value === "__schema" || node.name.value === "__type") {
      context.reportError(new GraphQLError(`Introspection (${node.name.value}) needs a bearer token`, { nodes: node }));
    }
  },
});

/**
 * What an anonymous caller learns of the schema: no introspection, and no
 * suggestions in error messages (armor hides field suggestions from everyone;
 * enum values and arguments are hidden here).
 */
function schemaHiddenFromAnonymousCallers(): Plugin<HttpServerContext & WebSocketServerContext> {
  return {
    onValidate({ context, addValidationRule }) {
      if (callerOf(context)) return;
      addValidationRule(IntrospectionNeedsToken);
      return ({ valid, result, setResult }) => {
        if (!valid) setResult(result.map((error) => (isGraphQLError(error) ? rewordError(error, withoutSuggestions(error.message)) : error)));
      };
    },
  };
}

/**
 * The spec's request errors: a variable of the wrong type, an unknown enum
 * value or input field, a missing required variable. graphql-js reports them
 * before execution begins, as a result with no `data`; they are the client's
 * mistake, so they answer 400 BAD_USER_INPUT instead of being masked as
 * unexpected. (Subscriptions get the same from graphql-tools' subscribe.)
 */
function requestErrorsAreBadUserInput(): Plugin<Context> {
  const badUserInput = { code: "BAD_USER_INPUT", http: { status: errorCodes.BAD_USER_INPUT.status } };
  return {
    onExecute() {
      return {
        onExecuteDone({ args, result, setResult }) {
          if (Symbol.asyncIterator in result || "data" in result) return;
          const anonymous = !args.contextValue.viewer;
          const errors = (result as ExecutionResult).errors ?? [];
          setResult({
            errors: errors.map((error) =>
              errorCodeOf(error) ? error : rewordError(error, anonymous ? withoutSuggestions(error.message) : error.message, badUserInput),
            ),
          });
        },
      };
    },
  };
}

/**
 * Cross-origin browser calls from VEGA_CORS_ORIGINS only (none by default;
 * same-origin pages need no CORS). Tokens travel in the Authorization header,
 * never in cookies, so no credentials are allowed.
 */
function corsPolicy(config: Pick<Config, "corsOrigins">) {
  if (config.corsOrigins.length === 0) return false;
  return (request: Request) => {
    const origin = request.headers.get("origin");
    if (origin === null || !config.corsOrigins.includes(origin)) return false;
    return { origin: [origin], methods: ["GET", "POST"], credentials: false, exposedHeaders: ["x-request-id"], maxAge: 600 };
  };
}

/** The CORS answer depends on the Origin header: caches must keep one copy per origin. */
function varyByOrigin(config: Pick<Config, "corsOrigins">): Plugin {
  return {
    onResponse({ response }) {
      if (config.corsOrigins.length > 0) response.headers.append("vary", "Origin");
    },
  };
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
    // GET /graphql with `Accept: text/html` (a browser): GraphiQL, bundled (graphiql.ts).
    graphiql: GRAPHIQL_OPTIONS,
    renderGraphiQL: renderVegaGraphiQL,
    logging: {
      debug: (...args) => deps.log.debug(yogaLogFields(args), yogaLogMessage(args)),
      info: (...args) => deps.log.info(yogaLogFields(args), yogaLogMessage(args)),
      warn: (...args) => deps.log.warn(yogaLogFields(args), yogaLogMessage(args)),
      error: (...args) => deps.log.error(yogaLogFields(args), yogaLogMessage(args)),
    },
    // The Node server parses multipart uploads itself (streamed to disk); yoga never sees them.
    multipart: false,
    cors: corsPolicy(config),
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
    context: (initial) => {
      const http = initial.vega;
      if (http) return createContext(deps, http.viewer, { requestId: http.requestId, uploads: http.uploads });
      return createContext(deps, initial.extra?.viewer ?? null, { requestId: initial.extra?.requestId });
    },
    plugins: [
      schemaHiddenFromAnonymousCallers(),
      requestErrorsAreBadUserInput(),
      varyByOrigin(config),
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
