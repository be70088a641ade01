/**
 * The worker learns of a queued scan when it is queued: it holds
 * `subscription { scanQueued }` open over graphql-ws to the API and polls at
 * once on each signal. Polling every VEGA_WORKER_POLL_INTERVAL_SECONDS stays the
 * fallback: while the subscription is down (the API restarting, a proxy without
 * WebSocket), or refused, scans are still claimed at the next poll. Claims stay
 * claimScans' FOR UPDATE SKIP LOCKED, so several woken workers never claim one
 * scan twice; the signal carries nothing but the id.
 */
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import type { Logger } from "../shared/logger.ts";

const SCAN_QUEUED = "subscription { scanQueued }";

export interface QueueSignal {
  close(): Promise<void>;
}

export function watchQueuedScans(options: { apiUrl: string; token: () => string; onQueued: () => void; log: Logger }): QueueSignal {
  const { log } = options;
  let down = false;
  /** Set by close(): the socket it closes is not an outage to report. */
  let closing = false;
  const client: Client = createClient({
    url: options.apiUrl.replace(/^http/, "ws"),
    webSocketImpl: WebSocket,
    lazy: false,
    connectionParams: () => ({ authorization: `Bearer ${options.token()}` }),
    // Forever, with graphql-ws' randomized exponential backoff: polling covers the gap meanwhile.
    retryAttempts: Number.POSITIVE_INFINITY,
    shouldRetry: () => true,
    onNonLazyError: () => {},
    on: {
      connected: () => {
        if (down) log.info("queue signal subscription back: scans are claimed as they are queued");
        down = false;
      },
      closed: () => {
        if (!down && !closing) log.warn("queue signal subscription down: claiming at each poll until it is back");
        down = true;
      },
    },
  });
  client.subscribe<{ scanQueued: string }>(
    { query: SCAN_QUEUED },
    {
      next: () => options.onQueued(),
      error: (error) => log.warn({ err: error instanceof Error ? error.message : error }, "queue signal subscription refused; claiming at each poll"),
      complete: () => {},
    },
  );
  return {
    close: async () => {
      closing = true;
      await client.dispose();
    },
  };
}
