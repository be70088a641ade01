/**
 * graphql-ws on the GraphQL path of the same port, per yoga's recipe: each
 * operation goes through yoga.getEnveloped, so armor limits, error masking and
 * scope-auth apply to WebSocket operations as to HTTP ones. The token comes in
 * the connection_init payload ({ authorization: "Bearer ..." }).
 */
import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import type { ExecutionArgs } from "graphql";
import { GraphQLError } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer } from "ws";
import { authenticate, type Deps, type Viewer } from "../context.ts";
import { errorCodeOf, isGraphQLError } from "../../shared/errors.ts";
import type { VegaYoga } from "./graphql.ts";

/** graphql-ws close codes: 4401 when the token is missing or invalid, 4403 when it is refused. */
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_FORBIDDEN = 4403;

export function attachSubscriptions(httpServer: Server, yoga: VegaYoga, deps: Deps) {
  // ws accepts 100 MiB frames by default, buffered whole before anyone looks at
  // them: a larger frame is refused from its header (close 1009) instead.
  const wsServer = new WebSocketServer({ server: httpServer, path: yoga.graphqlEndpoint, maxPayload: deps.config.maxRequestBytes });
  const disposable = useServer<Record<string, unknown> | undefined, { viewer: Viewer | null; requestId: string }>(
    {
      execute: (args) => (args.rootValue as { execute: (args: ExecutionArgs) => unknown }).execute(args) as never,
      subscribe: (args) => (args.rootValue as { subscribe: (args: ExecutionArgs) => unknown }).subscribe(args) as never,
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
      onSubscribe: async (ctx, _id, params) => {
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
        return {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables ?? undefined,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
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
