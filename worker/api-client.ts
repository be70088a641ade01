/**
 * The worker's GraphQL client: codegen's typed documents (worker/operations/*.graphql,
 * documentMode string) sent with fetch. No graphql-js at run time, no database.
 */
import type { DocumentTypeDecoration } from "@graphql-typed-document-node/core";

/** A request that failed: the GraphQL error codes when the API answered, none for network failures and timeouts. */
export class ApiRequestError extends Error {
  override name = "ApiRequestError";
  constructor(
    message: string,
    /** `extensions.code` of each GraphQL error, e.g. ["FORBIDDEN"]. */
    readonly codes: string[],
    /** The HTTP status, when a response arrived. */
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  hasCode(...codes: string[]): boolean {
    return this.codes.some((code) => codes.includes(code));
  }
}

export interface ApiClientOptions {
  /** The API's GraphQL endpoint (VEGA_API_URL). */
  url: string;
  /** The bearer token of each request, read when it is sent (it changes when the worker registers). */
  token: () => string;
  /** Per request, unless the call gives its own. Default 10 s. */
  timeoutMs?: number;
}

export type ApiRequest = <Result, Variables>(
  document: DocumentTypeDecoration<Result, Variables>,
  variables: Variables,
  options?: { timeoutMs?: number },
) => Promise<Result>;

export interface ApiClient {
  request: ApiRequest;
}

interface GraphQLResponseBody {
  data?: unknown;
  errors?: { message?: string; extensions?: { code?: unknown } }[];
}

export function createApiClient(options: ApiClientOptions): ApiClient {
  const defaultTimeoutMs = options.timeoutMs ?? 10_000;
  return {
    async request(document, variables, call = {}) {
      const timeoutMs = call.timeoutMs ?? defaultTimeoutMs;
      let response: Response | undefined;
      let body: GraphQLResponseBody;
      try {
        response = await fetch(options.url, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${options.token()}` },
          body: JSON.stringify({ query: String(document), variables }),
          signal: AbortSignal.timeout(timeoutMs),
        });
        body = (await response.json()) as GraphQLResponseBody;
      } catch (error) {
        const timedOut = error instanceof Error && error.name === "TimeoutError";
        const reason = timedOut ? `no answer within ${timeoutMs} ms` : error instanceof Error ? error.message : String(error);
        const status = response ? ` (HTTP ${response.status})` : "";
        throw new ApiRequestError(`${options.url}: ${reason}${status}`, [], response?.status, { cause: error });
      }
      if (body.errors?.length) {
        const codes = body.errors.map((error) => (typeof error.extensions?.code === "string" ? error.extensions.code : "UNKNOWN"));
        const messages = body.errors.map((error) => error.message ?? "error").join("; ");
        throw new ApiRequestError(`${messages} (${codes.join(", ")})`, codes, response.status);
      }
      if (!response.ok || body.data == null) {
        throw new ApiRequestError(`${options.url} answered HTTP ${response.status} without data`, [], response.status);
      }
      return body.data as never;
    },
  };
}
