/**
 * graphql-ws on the GraphQL path of the same port, per yoga's recipe: each
 * operation goes through yoga.getEnveloped, so armor limits, error masking and
 * scope-auth apply to WebSocket operations as to HTTP ones. The token comes in
 * the connection_init payload ({ authorization: "Bearer ..." }).
 *
 * A subscription that its subscriber's own `subscribe` authorized joins the
 * group of subscribers with the same document, variables and visibility
 * (subscription-groups.ts): each event is executed and serialized once per
 * group, not once per subscriber.
 */
import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import type { ExecutionArgs, ExecutionResult } from "graphql";
import { GraphQLError } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer, type WebSocket } from "ws";
import { visibilityKey } from "../services/visibility.ts";
import { authenticate, type Context, type Deps, type Viewer } from "../context.ts";
import { errorCodeOf, isGraphQLError } from "../../shared/errors.ts";
import type { VegaYoga } from "./graphql.ts";

/** graphql-ws close codes: 4401 when the token is missing or invalid, 4403 when it is refused. */
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_FORBIDDEN = 4403;

/** What onSubscribe hands the execute and subscribe hooks (graphql-ws passes rootValue through). */
interface GroupedRoot {
  execute: (args: ExecutionArgs) => unknown;
  subscribe: (args: ExecutionArgs) => unknown;
  /** The subscriber's group: the operation as sent, and what its token may see. */
  groupKey: () => Promise<string>;
  socket: WebSocket;
  id: string;
}

const isAsyncIterable = (value: unknown): value is AsyncIterable<ExecutionResult> =>
  typeof value === "object" && value !== null && Symbol.asyncIterator in value;

export function attachSubscriptions(httpServer: Server, yoga: VegaYoga, deps: Deps) {
  // ws accepts 100 MiB frames by default, buffered whole before anyone looks at
  // them: a larger frame is refused from its header (close 1009) instead.
  const wsServer = new WebSocketServer({ server: httpServer, path: yoga.graphqlEndpoint, maxPayload: deps.config.maxRequestBytes });
  const disposable = useServer<Record<string, unknown> | undefined, { viewer: Viewer | null; requestId: string }>(
    {
      execute: (args) => (args.rootValue as GroupedRoot).execute(args) as never,
      subscribe: async (args) => {
        const root = args.rootValue as GroupedRoot;
        const stream = await root.subscribe(args);
        // Refused (scope, visibility, validation of the variables): this subscriber's errors, as before.
        if (!isAsyncIterable(stream)) return stream as never;
        let key: string;
        try {
          key = await root.groupKey();
        } catch (error) {
          await (stream as AsyncIterable<ExecutionResult> & { return?: () => Promise<unknown> }).return?.();
          throw error;
        }
        return deps.subscriptionGroups.join(key, stream, root.socket, root.id) as never;
      },
      onConnect: async (ctx) => {
        const authorization = ctx.connectionParams?.authorization ?? ctx.connectionParams?.Authorization;
        if (typeof authorization !== "string" || authorization === "") {
          ctx.extra.socket.close(CLOSE_UNAUTHORIZED, "Unauthorized: connection_init must carry { authorization: \"Bearer <token>\" }");
          return false;
        }
        try {
          const viewer = await authenticate(deps, authorization);
          if (viewer?.principal.scope === "runner") {
            ctx.extra.socket.close(CLOSE_FORBIDDEN, "Forbidden: runner tokens cannot subscribe");
            return false;
          }
          Object.assign(ctx.extra, { viewer, requestId: randomUUID() });
          return true;
        } catch (error) {
          const code = errorCodeOf(error);
          const reason = isGraphQLError(error) ? error.message : "authentication failed";
          ctx.extra.socket.close(code === "FORBIDDEN" ? CLOSE_FORBIDDEN : CLOSE_UNAUTHORIZED, `Unauthorized: ${reason}`.slice(0, 120));
          return false;
        }
      },
      onSubscribe: async (ctx, id, params) => {
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
          req: ctx.extra.request,
          socket: ctx.extra.socket,
          params,
        });
        let document;
        try {
          document = parse(params.query);
        } catch (error) {
          return [error as GraphQLError];
        }
        // Armor's limits throw from validation rather than return: either way this
        // operation fails alone, and the socket with its other operations stays open.
        let errors: readonly GraphQLError[];
        try {
          errors = validate(schema, document);
        } catch (error) {
          return [error as GraphQLError];
        }
        if (errors.length > 0) return errors;
        const contextValue = (await contextFactory()) as unknown as Context;
        const groupKey = async () =>
          JSON.stringify([
            params.query,
            params.operationName ?? null,
            params.variables ?? null,
            await visibilityKey(contextValue.viewer, (userId) => contextValue.loaders.memberWorkspaceIds.load(userId)),
          ]);
        return {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables ?? undefined,
          contextValue,
          rootValue: { execute, subscribe, groupKey, socket: ctx.extra.socket, id } satisfies GroupedRoot,
        };
      },
    },
    wsServer,
  );
  return {
    wsServer,
    async close() {
      for (const client of wsServer.clients) client.close(1001, "Server shutting down");
      await disposable.dispose();
      await new Promise<void>((resolve) => wsServer.close(() => resolve()));
    },
  };
}
