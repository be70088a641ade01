/**
 * A real graphql-ws client (over the `ws` package) for tests: open a connection
 * with a token, subscribe, and await events one by one with `next()`.
 */
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import type { VegaPubSub } from "../../api/pubsub.ts";

export interface CloseInfo {
  code: number;
  reason: string;
}

/** A subscription's failure: GraphQL errors (with their codes) or the socket closing. */
export class SubscriptionError extends Error {
  constructor(
    message: string,
    readonly codes: string[],
    readonly close?: CloseInfo,
  ) {
    super(message);
  }
}

export interface EventStream<T> {
  /** The next event; rejects with a SubscriptionError if the subscription fails, or after `timeoutMs` (default 60 s). */
  next(options?: { timeoutMs?: number }): Promise<T>;
  /** Skips events until one matches. */
  nextMatching(predicate: (event: T) => boolean, options?: { timeoutMs?: number }): Promise<T>;
  /** Every event received so far (kept even after next() consumed them). */
  readonly received: T[];
  unsubscribe(): void;
}

export interface WsConnection {
  client: Client;
  /** Settles with the close code when the socket closes (e.g. 4401 for a refused token). */
  closed: Promise<CloseInfo>;
  subscribe<T = any>(query: string, variables?: Record<string, unknown>): EventStream<T>;
  dispose(): Promise<void>;
}

/** Opens a graphql-ws connection at once (not lazily), authenticating with `token` in connection_init when given. */
export function connectWs(url: string, token?: string): WsConnection {
  let onClosed!: (info: CloseInfo) => void;
  const closed = new Promise<CloseInfo>((resolve) => (onClosed = resolve));
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: 0,
    connectionParams: token ? { authorization: `Bearer ${token}` } : undefined,
    onNonLazyError: () => {},
    on: { closed: (event) => onClosed({ code: (event as CloseInfo).code, reason: String((event as CloseInfo).reason) }) },
  });
  return {
    client,
    closed,
    subscribe: (query, variables) => subscribe(client, query, variables),
    dispose: () => Promise.resolve(client.dispose()),
  };
}

function subscribe<T>(client: Client, query: string, variables?: Record<string, unknown>): EventStream<T> {
  const queue: T[] = [];
  const received: T[] = [];
  let failure: SubscriptionError | undefined;
  let wake: (() => void) | undefined;
  const unsubscribe = client.subscribe<T>(
    { query, variables },
    {
      next(result) {
        if (result.errors?.length) {
          failure ??= graphQLFailure(result.errors);
        } else {
          queue.push(result.data as T);
          received.push(result.data as T);
        }
        wake?.();
      },
      error(error) {
        failure ??= Array.isArray(error)
          ? graphQLFailure(error)
          : isCloseEvent(error)
            ? new SubscriptionError(`socket closed ${error.code} ${error.reason}`, [], { code: error.code, reason: String(error.reason) })
            : new SubscriptionError(String(error), []);
        wake?.();
      },
      complete() {
        failure ??= new SubscriptionError("subscription completed", []);
        wake?.();
      },
    },
  );

  async function next({ timeoutMs = 60_000 } = {}): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (queue.length > 0) return queue.shift()!;
      if (failure) throw failure;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new SubscriptionError(`no event within ${timeoutMs} ms`, ["TIMEOUT"]);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        wake = () => {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        };
      });
    }
  }

  return {
    next,
    async nextMatching(predicate, options = {}) {
      const deadline = Date.now() + (options.timeoutMs ?? 60_000);
      for (;;) {
        const event = await next({ timeoutMs: Math.max(1, deadline - Date.now()) });
        if (predicate(event)) return event;
      }
    },
    received,
    unsubscribe,
  };
}

const graphQLFailure = (errors: readonly { message: string; extensions?: Record<string, unknown> }[]) =>
  new SubscriptionError(
    errors.map((error) => error.message).join("; "),
    errors.map((error) => String(error.extensions?.code ?? "UNKNOWN")),
  );

const isCloseEvent = (value: unknown): value is CloseInfo =>
  typeof value === "object" && value !== null && "code" in value && typeof (value as CloseInfo).code === "number";

/**
 * Counts the streams an in-process server opens on a pubsub topic, so a test
 * can publish once it knows its subscriber listens (graphql-ws has no
 * "subscribed" acknowledgement). A stream counts once it is first read, which
 * is when the pubsub attaches its listener.
 */
export function watchSubscriptions(pubsub: VegaPubSub) {
  const listening = new Map<string, number>();
  const waiters: { topic: string; count: number; resolve: () => void }[] = [];
  const original = pubsub.subscribe;
  const notify = (topic: string) => {
    listening.set(topic, (listening.get(topic) ?? 0) + 1);
    for (const waiter of waiters.filter((waiter) => waiter.topic === topic && listening.get(topic)! >= waiter.count)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  pubsub.subscribe = ((topic: string, ...rest: unknown[]) => {
    const source = (original as unknown as (...args: unknown[]) => AsyncIterable<unknown>)(topic, ...rest);
    return {
      [Symbol.asyncIterator]() {
        const iterator = source[Symbol.asyncIterator]();
        let first = true;
        return {
          next() {
            const result = iterator.next();
            if (first) {
              first = false;
              notify(topic);
            }
            return result;
          },
          return: (value?: unknown) => iterator.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined }),
          throw: (error?: unknown) => iterator.throw?.(error) ?? Promise.reject(error),
        };
      },
    };
  }) as unknown as typeof pubsub.subscribe;
  return {
    /** Resolves once `count` streams in all have started listening on `topic` since the watch began. */
    until(topic: string, count = 1): Promise<void> {
      if ((listening.get(topic) ?? 0) >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ topic, count, resolve }));
    },
    /** How many streams have started listening on `topic` since the watch began. */
    started(topic: string): number {
      return listening.get(topic) ?? 0;
    },
    restore() {
      pubsub.subscribe = original;
    },
  };
}
