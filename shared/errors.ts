import { GraphQLError } from "graphql";

/**
 * Every error a client can act on: its code, its HTTP status and what it means.
 * The README's error table is printed from this list and graphqlServerErrorCodes
 * (`npx tsx scripts/error-table.ts`); a test keeps both in step and provokes
 * every code through a real server.
 */
export const errorCodes = {
  UNAUTHENTICATED: {
    status: 401,
    meaning: "missing, malformed, expired or wrongly signed bearer token, one without `exp`, issued in the future, or with an over-long subject or group",
  },
  FORBIDDEN: { status: 403, meaning: "the token is valid but lacks the scope the operation needs" },
  NOT_FOUND: { status: 404, meaning: "no such object, or one the caller may not see" },
  BAD_USER_INPUT: {
    status: 400,
    meaning:
      "an argument, a variable (wrong type, unknown enum value or input field, missing) or a request body is malformed, " +
      "or an operation is over a GraphQL limit (depth, aliases, tokens, directives, cost, page size)",
  },
  NOT_ACCEPTABLE: {
    status: 406,
    meaning: "the Accept header admits none of application/json, application/graphql-response+json, text/event-stream",
  },
  REQUEST_TIMEOUT: { status: 408, meaning: "a request body (an upload) sent no byte for VEGA_UPLOAD_IDLE_SECONDS; nothing of it was kept" },
  CONFLICT: {
    status: 409,
    meaning: "the object is not in a state that allows the operation (e.g. the SARIF report of a scan that has not succeeded or failed)",
  },
  PAYLOAD_TOO_LARGE: { status: 413, meaning: "a non-upload request body is over VEGA_MAX_REQUEST_BYTES" },
  SOURCE_TOO_LARGE: { status: 413, meaning: "the uploaded source archive is over VEGA_MAX_SOURCE_BYTES" },
  ARCHIVE_TOO_MANY_ENTRIES: { status: 413, meaning: "the archive has more entries than VEGA_MAX_ARCHIVE_ENTRIES" },
  ARCHIVE_TOO_LARGE: {
    status: 413,
    meaning: "the archive's declared uncompressed size is over VEGA_MAX_ARCHIVE_UNCOMPRESSED_BYTES",
  },
  ARCHIVE_INVALID: { status: 422, meaning: "the upload is empty, or not a safe, well-formed zip with files in it (the reason and entry are given)" },
  QUOTA_EXCEEDED: { status: 429, meaning: "the user already has VEGA_MAX_ACTIVE_SCANS_PER_USER active scans" },
  SESSION_LIMIT_EXCEEDED: { status: 429, meaning: "the workspace already has VEGA_MAX_SESSIONS_PER_WORKSPACE open sessions" },
  INTERNAL_SERVER_ERROR: { status: 500, meaning: "an unexpected error; the message is masked and the request id logged" },
} as const;

export type ErrorCode = keyof typeof errorCodes;

/**
 * The codes graphql-yoga gives the requests it refuses before execution. Vega
 * never raises them itself, but clients see them, so they are documented and
 * tested with Vega's own.
 */
export const graphqlServerErrorCodes = {
  GRAPHQL_PARSE_FAILED: { statuses: [400], meaning: "the query is not valid GraphQL syntax" },
  GRAPHQL_VALIDATION_FAILED: {
    statuses: [400],
    meaning: "the query does not fit the schema (an unknown field or argument, a literal of the wrong type, introspection without a token)",
  },
  OPERATION_RESOLUTION_FAILURE: { statuses: [400], meaning: "the document has several operations and `operationName` names none of them" },
  BAD_REQUEST: {
    statuses: [400, 405],
    meaning:
      "not a GraphQL-over-HTTP request: invalid JSON, no `query`, a batch, an unknown parameter (400); a method other than GET " +
      "and POST, or a mutation sent with GET (405)",
  },
} as const satisfies Record<string, { statuses: readonly number[]; meaning: string }>;

/** Every code a client can see, with its HTTP statuses, in the order the README lists them. */
export function clientVisibleErrorCodes(): { code: string; statuses: readonly number[]; meaning: string }[] {
  return [
    ...Object.entries(errorCodes).map(([code, { status, meaning }]) => ({ code, statuses: [status], meaning })),
    ...Object.entries(graphqlServerErrorCodes).map(([code, entry]) => ({ code, ...entry })),
  ];
}

/** The one way to raise a client-facing error. */
export function vegaError(code: ErrorCode, message: string, details: Record<string, unknown> = {}): GraphQLError {
  return new GraphQLError(message, {
    extensions: { code, http: { status: errorCodes[code].status }, ...details },
  });
}

/**
 * Duck-typed rather than `instanceof`: graphql-js may be loaded twice (its ESM
 * and CommonJS builds, by different dependencies), and errors cross between them.
 */
export function isGraphQLError(error: unknown): error is GraphQLError {
  return error instanceof Error && error.name === "GraphQLError" && "extensions" in error;
}

export function errorCodeOf(error: unknown): ErrorCode | undefined {
  if (!isGraphQLError(error)) return undefined;
  const code = error.extensions?.code;
  if (typeof code === "string" && code in errorCodes) return code as ErrorCode;
  return error.originalError ? errorCodeOf(error.originalError) : undefined;
}

export const unauthenticated = (reason: string) => vegaError("UNAUTHENTICATED", reason);

export const forbidden = (what: string) => vegaError("FORBIDDEN", `Not allowed: ${what}`);

export const notFound = (kind: string, id: string) =>
  vegaError("NOT_FOUND", `${kind} ${id} was not found`, { kind, id });

export const badUserInput = (message: string, details: Record<string, unknown> = {}) =>
  vegaError("BAD_USER_INPUT", message, details);

export const conflict = (message: string, details: Record<string, unknown> = {}) =>
  vegaError("CONFLICT", message, details);

export const quotaExceeded = ({ limit, active }: { limit: number; active: number }) =>
  vegaError(
    "QUOTA_EXCEEDED",
    `Active scan quota exceeded: ${active} scans queued, starting or running, limit ${limit}. ` +
      `Wait for a scan to finish or cancel one.`,
    { limit, active },
  );

export const sessionLimitExceeded = ({ limit, open }: { limit: number; open: number }) =>
  vegaError("SESSION_LIMIT_EXCEEDED", `Open session limit exceeded: ${open} open sessions, limit ${limit}`, {
    limit,
    open,
  });

export const sourceTooLarge = ({ limit, size }: { limit: number; size?: number }) =>
  vegaError(
    "SOURCE_TOO_LARGE",
    size === undefined
      ? `Source archive is larger than the limit of ${limit} bytes`
      : `Source archive is ${size} bytes, over the limit of ${limit} bytes`,
    { limit, ...(size === undefined ? {} : { size }) },
  );

export const archiveTooManyEntries = ({ limit, entries }: { limit: number; entries: number }) =>
  vegaError("ARCHIVE_TOO_MANY_ENTRIES", `Archive has ${entries} entries, over the limit of ${limit}`, {
    limit,
    entries,
  });

export const archiveTooLarge = ({ limit, uncompressedBytes }: { limit: number; uncompressedBytes: number }) =>
  vegaError(
    "ARCHIVE_TOO_LARGE",
    `Archive declares ${uncompressedBytes} uncompressed bytes, over the limit of ${limit}`,
    { limit, uncompressedBytes },
  );

export const requestTimeout = ({ idleSeconds }: { idleSeconds: number }) =>
  vegaError("REQUEST_TIMEOUT", `No byte of the request body arrived for ${idleSeconds} seconds; the upload was discarded`, {
    idleSeconds,
  });

export const archiveInvalid = (reason: string, entry?: string) =>
  vegaError("ARCHIVE_INVALID", entry === undefined ? `Invalid archive: ${reason}` : `Invalid archive: ${reason} (entry "${entry}")`, {
    reason,
    ...(entry === undefined ? {} : { entry }),
  });
