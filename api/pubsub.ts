/**
 * Subscription events. In-memory by default; with VEGA_REDIS_URL, events also
 * cross Redis, so a subscriber on one API replica receives what another
 * publishes. Payloads cross Redis as JSON: they carry ids, strings and ISO
 * dates, never Prisma rows.
 *
 * Redis is a dependency, not a single point of failure:
 * - an event is delivered to this replica's subscribers directly, and published
 *   to Redis for the others, each message tagged with its replica so that the
 *   copy coming back from Redis is not delivered twice; with Redis down, a
 *   replica's own subscribers miss nothing;
 * - the publishing connection has no offline queue and no retries: while Redis
 *   is down an event is not sent to other replicas (subscriptions are live
 *   notifications, not a durable log) instead of piling up in memory or
 *   failing the publisher (ioredis' MaxRetriesPerRequestError, unhandled, used
 *   to end the process);
 * - the subscribing connection queues its SUBSCRIBEs and ioredis subscribes
 *   again to every channel when it reconnects, so cross-replica delivery resumes
 *   by itself; ioredis retries the connection every 2 s at most, forever;
 * - the state is logged once per change (down, back), not per event or per
 *   reconnection attempt, and `redisStatus()` is what /readyz reports.
 */
import { randomUUID } from "node:crypto";
import { createPubSub } from "graphql-yoga";
import { Redis } from "ioredis";
import type { Config } from "../shared/config.ts";
import type { Logger } from "../shared/logger.ts";

export interface ScanStateChangePayload {
  scanId: string;
  workspaceId: string;
  from: string | null;
  to: string;
  at: string;
  eventId: string | null;
}

export type ScanPhase = "DOWNLOADING" | "EXTRACTING" | "ANALYZING" | "REPORTING";

/** A runner's progress report, as stored in Scan.progress and published on scanProgress. */
export interface ScanProgressSnapshot {
  phase: ScanPhase;
  filesDone: number | null;
  filesTotal: number | null;
  bytesDone: number | null;
  bytesTotal: number | null;
  findings: number;
  updatedAt: string;
}

export interface ScanProgressPayload {
  scanId: string;
  workspaceId: string;
  progress: ScanProgressSnapshot;
}

export interface WorkerSnapshot {
  id: string;
  name: string;
  host: string;
  pid: number;
  version: string;
  capacity: number;
  activeScans: number;
  draining: boolean;
  startedAt: string;
  lastHeartbeatAt: string;
  deregisteredAt: string | null;
}

export type WorkerEventKind = "REGISTERED" | "HEARTBEAT" | "DRAINING" | "DEREGISTERED" | "STALE";

export interface WorkerEventPayload {
  kind: WorkerEventKind;
  at: string;
  worker: WorkerSnapshot;
}

export interface CleanupRunPayload {
  cleanupRunId: string;
}

/** The claims pause as stored (services/claims.ts), published on every pause and resume. */
export interface ClaimsPausePayload {
  paused: boolean;
  reason: string | null;
  since: string | null;
  by: string | null;
}

export type VegaPubSub = ReturnType<typeof createVegaPubSub>["pubsub"];

type Listener = ((event: Event) => void) | { handleEvent(event: Event): void };

export interface RedisStatus {
  status: "ok" | "degraded";
  /** When it went down (absent while ok). */
  since?: string;
  /** The last connection error while degraded. */
  error?: string;
}

interface Envelope {
  origin: string;
  detail: unknown;
}

const isEnvelope = (value: unknown): value is Envelope =>
  typeof value === "object" && value !== null && "origin" in value && "detail" in value && typeof value.origin === "string";

/** The event target of createPubSub: local delivery first, Redis for the other replicas. */
function createReplicaEventTarget(redisUrl: string, channelPrefix: string, log: Logger | undefined) {
  const origin = randomUUID();
  const channelOf = (type: string) => `${channelPrefix}${type}`;
  const listeners = new Map<string, Set<Listener>>();
  const publishClient = new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
  const subscribeClient = new Redis(redisUrl, { maxRetriesPerRequest: null });

  let up = false;
  let downSince: Date | undefined;
  let lastError: string | undefined;
  const observe = () => {
    const ready = publishClient.status === "ready" && subscribeClient.status === "ready";
    if (ready && !up) {
      up = true;
      if (downSince) log?.info({ downSince: downSince.toISOString() }, "Redis is reachable again: cross-replica subscriptions resumed");
      downSince = undefined;
      lastError = undefined;
    } else if (!ready && (up || (!downSince && lastError))) {
      // Down after having been up, or never up and failing: said once, until it comes back.
      up = false;
      downSince ??= new Date();
      log?.warn({ redisUrl: redacted(redisUrl), error: lastError }, "Redis is unreachable: subscriptions reach this replica's subscribers only, until it returns");
    }
  };
  for (const client of [publishClient, subscribeClient]) {
    client.on("error", (error: Error) => {
      lastError = (error as NodeJS.ErrnoException).code ?? error.message;
      observe();
    });
    client.on("ready", observe);
    client.on("close", observe);
  }

  const deliver = (event: Event) => {
    for (const listener of listeners.get(event.type) ?? []) {
      if (typeof listener === "function") listener(event);
      else listener.handleEvent(event);
    }
  };

  subscribeClient.on("message", (channel: string, message: string) => {
    if (!channel.startsWith(channelPrefix)) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      log?.warn({ channel }, "ignored a Redis message that is not JSON");
      return;
    }
    // A message without an envelope comes from a replica of an earlier version.
    if (isEnvelope(parsed) && parsed.origin === origin) return;
    deliver(new CustomEvent(channel.slice(channelPrefix.length), { detail: isEnvelope(parsed) ? parsed.detail : parsed }));
  });

  // Rejections here mean Redis is down; observe() has said so already.
  const quietly = (command: Promise<unknown>) => void command.catch(() => {});

  const eventTarget = {
    addEventListener(type: string, listener: Listener | null) {
      if (!listener) return;
      let set = listeners.get(type);
      if (!set) {
        set = new Set();
        listeners.set(type, set);
        quietly(subscribeClient.subscribe(channelOf(type)));
      }
      set.add(listener);
    },
    removeEventListener(type: string, listener: Listener | null) {
      const set = listeners.get(type);
      if (!set || !listener) return;
      set.delete(listener);
      if (set.size > 0) return;
      listeners.delete(type);
      quietly(subscribeClient.unsubscribe(channelOf(type)));
    },
    dispatchEvent(event: Event) {
      deliver(event);
      if (publishClient.status === "ready") {
        const detail = (event as CustomEvent).detail;
        quietly(publishClient.publish(channelOf(event.type), JSON.stringify({ origin, detail: detail ?? null } satisfies Envelope)));
      }
      return true;
    },
  };

  return {
    eventTarget,
    status(): RedisStatus {
      if (up) return { status: "ok" };
      return { status: "degraded", ...(downSince ? { since: downSince.toISOString() } : {}), ...(lastError ? { error: lastError } : {}) };
    },
    close() {
      publishClient.disconnect();
      subscribeClient.disconnect();
    },
  };
}

/** The URL without its password, for logs. */
function redacted(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = "***";
  return parsed.toString();
}

export function createVegaPubSub(config: Pick<Config, "redisUrl" | "redisChannelPrefix">, log?: Logger) {
  const replicas = config.redisUrl ? createReplicaEventTarget(config.redisUrl, config.redisChannelPrefix, log) : undefined;
  const pubsub = createPubSub<{
    scanStateChanged: [ScanStateChangePayload];
    scanProgress: [ScanProgressPayload];
    workerEvent: [WorkerEventPayload];
    cleanupRunUpdated: [CleanupRunPayload];
    claimsPausedChanged: [ClaimsPausePayload];
  }>(replicas ? { eventTarget: replicas.eventTarget as never } : undefined);
  return {
    pubsub,
    /** Redis' state, when VEGA_REDIS_URL is set. */
    redisStatus: (): RedisStatus | undefined => replicas?.status(),
    close: async () => replicas?.close(),
  };
}
