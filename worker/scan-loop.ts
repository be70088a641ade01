/**
 * The worker's scan loop: every VEGA_WORKER_POLL_INTERVAL_SECONDS (and at once
 * when a runner it started has exited), it reconciles the scans it holds
 * (stopping the tasks of cancelled ones), runs stale-scan recovery, then claims
 * queued scans up to its free capacity and launches a runner for each.
 */
import type { Logger } from "../shared/logger.ts";
import { ApiRequestError, type ApiClient } from "./api-client.ts";
import {
  AssignedScansDocument,
  ClaimScansDocument,
  ReportLaunchFailedDocument,
  ReportScanStartedDocument,
} from "./generated/graphql.ts";
import { LaunchFailedError, type Launcher } from "../shared/launcher.ts";
import type { ScanLoop } from "./worker.ts";
import { isFinished } from "../shared/scan-status.ts";

export interface ScanLoopSettings {
  capacity: number;
  pollIntervalSeconds: number;
  /** The API endpoint handed to runners (VEGA_API_URL as the runner must reach it). */
  runnerApiUrl: string;
}

/** Runs before each claim (stale-scan recovery); failures are logged and do not stop the claim. */
export type BeforeClaim = (api: ApiClient, workerId: string) => Promise<void>;

interface HeldScan {
  attempt: number;
  taskId?: string;
}

export class ScanExecutionLoop implements ScanLoop {
  private api: ApiClient | undefined;
  private readonly held = new Map<string, HeldScan>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private pollAgain = false;
  private stopped = false;

  constructor(
    private readonly settings: ScanLoopSettings,
    private readonly launcher: Launcher & { waitForExit?(taskId: string): Promise<unknown> },
    private readonly workerId: () => string | undefined,
    private readonly log: Logger,
    private readonly beforeClaim?: BeforeClaim,
  ) {}

  start(api: ApiClient) {
    this.api = api;
    this.stopped = false;
    this.wake();
  }

  activeScans(): number {
    return this.held.size;
  }

  /** Stops polling; runners already started go on (an ECS task, or a local child the launcher stops on close). */
  async stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.polling;
  }

  /** Polls now (or right after the poll in progress). */
  wake() {
    if (this.stopped) return;
    if (this.polling) {
      this.pollAgain = true;
      return;
    }
    clearTimeout(this.timer);
    this.polling = this.poll()
      .catch((error: unknown) => this.log.warn({ err: error }, "scan poll failed; trying again at the next interval"))
      .finally(() => {
        this.polling = undefined;
        if (this.stopped) return;
        if (this.pollAgain) {
          this.pollAgain = false;
          return this.wake();
        }
        // ±10% so that many workers do not poll in step.
        const delayMs = this.settings.pollIntervalSeconds * 1000 * (0.9 + Math.random() * 0.2);
        this.timer = setTimeout(() => this.wake(), delayMs);
      });
  }

  private async poll() {
    const api = this.api;
    const workerId = this.workerId();
    if (!api || !workerId) return;
    await this.reconcile(api, workerId);
    if (this.beforeClaim) {
      await this.beforeClaim(api, workerId).catch((error: unknown) => this.log.warn({ err: error }, "stale-scan recovery failed"));
    }
    const free = this.settings.capacity - this.held.size;
    if (free <= 0 || this.stopped) return;
    const { claimScans } = await api.request(ClaimScansDocument, { workerId, max: free });
    await Promise.all(claimScans.map((claim) => this.launch(api, claim.scan.id, claim.attempt, claim.runnerToken)));
  }

  private async launch(api: ApiClient, scanId: string, attempt: number, runnerToken: string) {
    const held: HeldScan = { attempt };
    this.held.set(scanId, held);
    let taskId: string;
    try {
      ({ taskId } = await this.launcher.launch({ scanId, attempt, apiUrl: this.settings.runnerApiUrl, runnerToken }));
    } catch (error) {
      this.held.delete(scanId);
      const reason = error instanceof LaunchFailedError ? error.reason : error instanceof Error ? error.message : String(error);
      const detail = error instanceof LaunchFailedError ? error.detail : undefined;
      this.log.error({ err: error, scanId, attempt }, "could not launch a runner; failing the scan");
      await api.request(ReportLaunchFailedDocument, { scanId, reason, detail }).catch((reportError: unknown) =>
        this.log.warn({ err: reportError, scanId }, "could not report the failed launch; recovery will requeue the scan"),
      );
      return;
    }
    held.taskId = taskId;
    this.launcher.waitForExit?.(taskId).then(() => this.wake(), () => {});
    try {
      await api.request(ReportScanStartedDocument, { scanId, taskId, attempt });
      this.log.info({ scanId, taskId, attempt }, "runner launched");
    } catch (error) {
      // CONFLICT: cancelled, or requeued as an orphaned claim while this launch was slow. FORBIDDEN: requeued
      // and claimed since by another worker (or this worker registered again under another id). Either
      // way the claim is no longer this launch's: a runner left going would run the scan a second time.
      if (error instanceof ApiRequestError && error.hasCode("CONFLICT", "FORBIDDEN")) {
        this.log.info({ scanId, taskId, codes: error.codes }, "the scan was cancelled or taken over while it started; stopping its runner");
        await this.launcher.stop(taskId, "scan cancelled or claimed again before it started");
        this.held.delete(scanId);
        return;
      }
      // Not fatal: the runner runs and reports on its own; the next reconcile sees where the scan is.
      this.log.warn({ err: error, scanId, taskId }, "could not report the launch");
    }
  }

  /**
   * Looks at the scans held: a cancelled one has its task stopped; a finished
   * one, or one whose task has stopped, frees its place.
   */
  private async reconcile(api: ApiClient, workerId: string) {
    if (this.held.size === 0) return;
    const ids = [...this.held.keys()];
    const { assignedScans } = await api.request(AssignedScansDocument, { workerId, ids });
    const current = new Map(assignedScans.map((scan) => [scan.id, scan]));
    const taskIds = ids.map((id) => this.held.get(id)?.taskId).filter((taskId): taskId is string => Boolean(taskId));
    const tasks = taskIds.length > 0 ? await this.launcher.describe(taskIds) : new Map();
    for (const scanId of ids) {
      const held = this.held.get(scanId)!;
      const scan = current.get(scanId);
      const task = held.taskId ? tasks.get(held.taskId) : undefined;
      // Only STOPPED means the runner is gone: ECS may answer MISSING for a while right after RunTask
      // (eventual consistency), and a task forgotten that way must still be stopped when its scan is cancelled.
      const taskAlive = held.taskId !== undefined && task?.state !== "STOPPED";
      if (scan?.status === "CANCELLED" && taskAlive) {
        this.log.info({ scanId, taskId: held.taskId }, "scan cancelled; stopping its runner");
        await this.launcher.stop(held.taskId!, "scan cancelled");
        this.held.delete(scanId);
      } else if (!scan || isFinished(scan.status) || (held.taskId && !taskAlive)) {
        // Finished, taken over by another worker (requeued), or its runner is gone (recovery reports that).
        this.held.delete(scanId);
      }
    }
  }
}
