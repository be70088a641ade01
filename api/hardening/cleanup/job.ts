/**
 * What every cleanup job receives and reports. A job is idempotent and safe to
 * run twice at once: it claims what it removes with a conditional write (rows)
 * or treats "already gone" as done (files), so a second run finds nothing left.
 * Jobs work in batches and check `signal` between them, so a run stops promptly
 * when its process does.
 */
import type { Config } from "../../../shared/config.ts";
import type { PrismaClient } from "../../db/client.ts";
import type { Logger } from "../../../shared/logger.ts";
import type { ArtifactStore } from "../../services/artifact-store.ts";

export type CleanupSettings = Pick<
  Config,
  "artifactRetentionSeconds" | "sessionRetentionSeconds" | "workerPruneSeconds" | "workerHeartbeatTtlSeconds"
>;

export interface CleanupJobContext {
  prisma: PrismaClient;
  artifacts: ArtifactStore;
  config: CleanupSettings;
  log: Pick<Logger, "info" | "warn" | "error">;
  /** Count and measure what would be removed; remove nothing. */
  dryRun: boolean;
  /** The run's clock: every cutoff is computed from it once. */
  now: Date;
  signal?: AbortSignal;
}

/** What a job removed (or, in a dry run, would remove), updated as it goes so a failed job still reports its progress. */
export interface JobTally {
  count: number;
  bytes: number;
}

/** Rows (or store keys) handled per query: large enough to be quick, small enough that 100,000 never load at once. */
export const CLEANUP_BATCH_SIZE = 500;

/** Files deleted (or measured) at once: enough to keep libuv's thread pool busy. */
export const FILE_CONCURRENCY = 32;

/** A job that did part of its work but hit errors it could not get past (some files could not be deleted). */
export class CleanupJobError extends Error {
  override name = "CleanupJobError";
}

/** Runs `work` over `items`, at most `limit` at a time. */
export async function forEachConcurrently<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++];
      await work(item);
    }
  });
  await Promise.all(lanes);
}

/** Collects per-file failures so one unreadable file does not stop a job, and the run still reports them. */
export class FileFailures {
  private readonly failures: string[] = [];
  count = 0;

  add(file: string, error: unknown) {
    this.count += 1;
    if (this.failures.length < 3) this.failures.push(`${file}: ${error instanceof Error ? error.message : String(error)}`);
  }

  throwIfAny(what: string) {
    if (this.count > 0) throw new CleanupJobError(`could not delete ${this.count} of the ${what} (${this.failures.join("; ")})`);
  }
}

export const isMissing = (error: unknown) => (error as NodeJS.ErrnoException)?.code === "ENOENT";
