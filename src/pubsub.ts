/**
 * Subscription events. In-memory by default; with VEGA_REDIS_URL, yoga's Redis
 * event target, so a subscriber on one API replica receives what another
 * publishes. Payloads cross Redis as JSON: they carry ids, strings and ISO
 * dates, never Prisma rows.
 */
import { createPubSub } from "graphql-yoga";
import { createRedisEventTarget } from "@graphql-yoga/redis-event-target";
import { Redis } from "ioredis";
import type { Config } from "./config.ts";

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

export type VegaPubSub = ReturnType<typeof createVegaPubSub>["pubsub"];

export function createVegaPubSub(config: Pick<Config, "redisUrl">) {
  let close = async () => {};
  let eventTarget;
  if (config.redisUrl) {
    const publishClient = new Redis(config.redisUrl, { maxRetriesPerRequest: 3 });
    const subscribeClient = new Redis(config.redisUrl, { maxRetriesPerRequest: 3 });
    eventTarget = createRedisEventTarget({ publishClient, subscribeClient });
    close = async () => {
      publishClient.disconnect();
      subscribeClient.disconnect();
    };
  }
  const pubsub = createPubSub<{
    scanStateChanged: [ScanStateChangePayload];
    scanProgress: [ScanProgressPayload];
    workerEvent: [WorkerEventPayload];
    cleanupRunUpdated: [CleanupRunPayload];
  }>(eventTarget ? { eventTarget } : undefined);
  return { pubsub, close };
}
