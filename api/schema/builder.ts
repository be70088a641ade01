import SchemaBuilder from "@pothos/core";
import DataloaderPlugin from "@pothos/plugin-dataloader";
import RelayPlugin from "@pothos/plugin-relay";
import ScopeAuthPlugin from "@pothos/plugin-scope-auth";
import { GraphQLError, Kind } from "graphql";
import type { Context } from "../context.ts";
import { forbidden, unauthenticated } from "../../shared/errors.ts";

export const builder = new SchemaBuilder<{
  Context: Context;
  DefaultFieldNullability: false;
  AuthScopes: {
    authenticated: boolean;
    operator: boolean;
    worker: boolean;
    runner: boolean;
  };
  Scalars: {
    DateTime: { Input: Date; Output: Date | string };
    BigInt: { Input: bigint; Output: bigint | number };
    JSON: { Input: unknown; Output: unknown };
    File: { Input: string; Output: never };
  };
}>({
  defaultFieldNullability: false,
  plugins: [ScopeAuthPlugin, RelayPlugin, DataloaderPlugin],
  scopeAuth: {
    // Scope checks run when a subscription starts, not on every event it delivers.
    authorizeOnSubscribe: true,
    authScopes: (ctx) => ({
      authenticated: ctx.viewer?.principal.scope === "user",
      operator: ctx.viewer?.isOperator ?? false,
      worker: ctx.viewer?.principal.scope === "worker",
      runner: ctx.viewer?.principal.scope === "runner",
    }),
    // Scope-auth's default refusal carries no code and HTTP 200; clients act on codes.
    unauthorizedError: (_parent, ctx, info) =>
      ctx.viewer ? forbidden(`${info.parentType.name}.${info.fieldName} needs a scope this token does not have`) : unauthenticated("A bearer token is required"),
  },
  relay: {
    clientMutationId: "omit",
    cursorType: "String",
    nodeQueryOptions: false,
    nodesQueryOptions: false,
  },
});

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});

builder.scalarType("DateTime", {
  description: "An instant, as an ISO 8601 string in UTC.",
  serialize: (value) => (value instanceof Date ? value.toISOString() : new Date(value).toISOString()),
  parseValue: (value) => {
    const date = new Date(String(value));
    if (Number.isNaN(date.getTime())) throw new GraphQLError(`Invalid DateTime ${JSON.stringify(value)}`);
    return date;
  },
});

builder.scalarType("BigInt", {
  description:
    "An integer that may exceed 2^31 (byte counts), serialized as a decimal string so that no client loses precision.",
  serialize: (value) => BigInt(value).toString(),
  parseValue: (value) => {
    if (typeof value !== "string" && typeof value !== "number") throw new GraphQLError("BigInt must be a decimal string");
    if (!/^-?\d+$/.test(String(value))) throw new GraphQLError(`Invalid BigInt ${JSON.stringify(value)}`);
    return BigInt(value);
  },
  parseLiteral: (node) => {
    if (node.kind !== Kind.STRING && node.kind !== Kind.INT) throw new GraphQLError("BigInt must be a decimal string");
    return BigInt(node.value);
  },
});

builder.scalarType("JSON", {
  description: "Arbitrary JSON.",
  serialize: (value) => value,
  parseValue: (value) => value,
});

builder.scalarType("File", {
  description:
    "An uploaded file, sent per the GraphQL multipart request spec. The server streams it to the artifact store " +
    "before the operation runs; resolvers receive a reference to the stored file.",
  serialize: () => {
    throw new GraphQLError("File is an input-only scalar");
  },
  parseValue: (value) => {
    if (typeof value !== "string") throw new GraphQLError("File must be sent as a multipart upload");
    return value;
  },
});
