/**
 * Vega's GraphQL API as the page uses it: queries and mutations over HTTP,
 * subscriptions over one graphql-ws connection (the token in connection_init),
 * the multipart upload of a source archive, and the SARIF download.
 */
import { createClient, type Client } from "graphql-ws";

/** An error the API answered, with its code (QUOTA_EXCEEDED, ARCHIVE_INVALID, …). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly status: number,
  ) {
    super(message);
  }
}

/** graphql-ws close codes of a refused token (api/http/subscriptions.ts): reconnecting will not help. */
const REFUSED_TOKEN = new Set([4401, 4403]);

interface GraphQLBody<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

function resultOf<T>(status: number, body: GraphQLBody<T>): T {
  const [first] = body.errors ?? [];
  if (first) throw new ApiError(first.message, first.extensions?.code, status);
  if (!body.data) throw new ApiError(`The API answered ${status} without data`, undefined, status);
  return body.data;
}

export interface ApiEvents {
  /** The WebSocket is (re)connected: `again` after a drop, when missed events must be read anew. */
  onConnected(again: boolean): void;
  onDisconnected(): void;
  /** The token was refused (expired, revoked, malformed). */
  onRefused(reason: string): void;
}

export class Api {
  private readonly ws: Client;
  /** Milliseconds the server's clock is ahead of this browser's (from the Date of each answer). */
  serverClockOffset = 0;

  constructor(
    private readonly token: string,
    events: ApiEvents,
  ) {
    let connections = 0;
    this.ws = createClient({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
      connectionParams: { authorization: `Bearer ${token}` },
      lazy: false,
      keepAlive: 20_000,
      retryAttempts: Number.POSITIVE_INFINITY,
      shouldRetry: (event) => !(event instanceof CloseEvent && REFUSED_TOKEN.has(event.code)),
      on: {
        connected: () => events.onConnected(connections++ > 0),
        closed: (event) => {
          if (event instanceof CloseEvent && REFUSED_TOKEN.has(event.code)) events.onRefused(event.reason);
          else events.onDisconnected();
        },
      },
    });
  }

  private get authorization() {
    return { authorization: `Bearer ${this.token}` };
  }

  private noteClock(response: Response) {
    const date = response.headers.get("date");
    // Whole seconds only: offsets under two seconds are noise, not skew.
    const offset = date ? Date.parse(date) - Date.now() : 0;
    this.serverClockOffset = Math.abs(offset) > 2000 ? offset : 0;
  }

  /** Now, on the server's clock: ages are measured against it. */
  now(): number {
    return Date.now() + this.serverClockOffset;
  }

  async request<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
    const response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/graphql-response+json, application/json", ...this.authorization },
      body: JSON.stringify({ query, variables }),
    });
    this.noteClock(response);
    return resultOf<T>(response.status, await response.json());
  }

  /** Delivers each event to `onData` until the returned function is called. */
  subscribe<T>(query: string, variables: Record<string, unknown>, onData: (data: T) => void, onError: (error: ApiError) => void = () => {}) {
    return this.ws.subscribe<T>(
      { query, variables },
      {
        next: (result) => {
          if (result.errors?.length) {
            const [first] = result.errors;
            onError(new ApiError(first!.message, (first!.extensions as { code?: string } | undefined)?.code, 200));
          } else if (result.data) onData(result.data as T);
        },
        error: (error) => onError(new ApiError(error instanceof Error ? error.message : "subscription failed", undefined, 0)),
        complete: () => {},
      },
    );
  }

  /** submitScan as a GraphQL multipart request (the spec's operations, map and file parts). */
  async upload<T>(query: string, variables: Record<string, unknown>, filePath: string, file: File): Promise<T> {
    const form = new FormData();
    form.set("operations", JSON.stringify({ query, variables }));
    form.set("map", JSON.stringify({ 0: [`variables.${filePath}`] }));
    form.set("0", file, file.name);
    const response = await fetch("/graphql", {
      method: "POST",
      // The CSRF rule of uploads: a header that a cross-site form cannot send.
      headers: { "graphql-preflight": "1", ...this.authorization },
      body: form,
    });
    const text = await response.text();
    let body: GraphQLBody<T>;
    try {
      body = JSON.parse(text) as GraphQLBody<T>;
    } catch {
      throw new ApiError(`The upload failed (HTTP ${response.status})`, undefined, response.status);
    }
    return resultOf<T>(response.status, body);
  }

  /** GET /v1/scans/:id/sarif, with the token (a plain link could not carry it). */
  async sarif(scanId: string): Promise<Blob> {
    const response = await fetch(`/v1/scans/${encodeURIComponent(scanId)}/sarif`, { headers: this.authorization });
    if (!response.ok) {
      const body = (await response.json().catch(() => ({}))) as GraphQLBody<never>;
      const [first] = body.errors ?? [];
      throw new ApiError(first?.message ?? `HTTP ${response.status}`, first?.extensions?.code, response.status);
    }
    return response.blob();
  }

  close() {
    void this.ws.dispose();
  }
}
