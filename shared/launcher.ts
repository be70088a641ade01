/**
 * What a worker needs from a way of running scans: start a runner for one scan,
 * stop it, and tell whether its tasks are still alive. `ecs.ts` runs ECS tasks,
 * `local.ts` child processes; the worker loop sees only this interface.
 */

import type { Logger } from "./logger.ts";

export interface LaunchRequest {
  scanId: string;
  /** The scan's claim count; with the scan id it makes the launch idempotent (ECS clientToken). */
  attempt: number;
  /** The API's GraphQL endpoint the runner reports to. */
  apiUrl: string;
  /** A token with vega_scope=runner bound to this one scan. */
  runnerToken: string;
}

export interface LaunchResult {
  /** ECS task ARN, or `local:<pid>` for a child process. */
  taskId: string;
}

export type TaskState = "PENDING" | "RUNNING" | "STOPPED" | "MISSING";

export interface TaskStatus {
  taskId: string;
  state: TaskState;
  /** ECS stopCode (e.g. SpotInterruption, EssentialContainerExited, UserInitiated). */
  stopCode?: string;
  stoppedReason?: string;
  /** The runner container's (or process's) exit code, when known. */
  exitCode?: number;
  /** The signal that ended a local process, when one did. */
  signal?: string;
  stoppedAt?: Date;
  /**
   * The scan the task runs, when the launcher can tell (a local process's
   * VEGA_SCAN_ID). A `local:<pid>` whose pid now runs another scan's runner is
   * not the task of the scan that recorded it.
   */
  scanId?: string;
}

/** A launch refused by the platform after retries (ECS `failures`, throttling). */
export class LaunchFailedError extends Error {
  override name = "LaunchFailedError";
  constructor(
    message: string,
    readonly reason: string,
    readonly detail?: string,
  ) {
    super(message);
  }
}

export interface StopOptions {
  /**
   * The runner is hung: end it at once (SIGKILL for a local process; a SIGSTOPped
   * one does nothing with SIGTERM until continued). ECS has only StopTask.
   */
  force?: boolean;
}

/**
 * How a process that does not own the launchers gets one: the CLI entry point passes the configured launcher's
 * constructor to the API, so the API asks ECS (or the local machine) about tasks without importing the ECS SDK.
 */
export type OpenLauncher = (log: Logger) => Launcher;

export interface Launcher {
  readonly kind: "local" | "ecs";
  /**
   * Starts the runner of one claim. Launching the same scan and attempt again
   * returns the same task; a task of an earlier attempt still alive is stopped
   * first where the platform can find it (ECS), so one scan never has two.
   */
  launch(request: LaunchRequest): Promise<LaunchResult>;
  /** Stops a task; a task already gone is not an error. */
  stop(taskId: string, reason: string, options?: StopOptions): Promise<void>;
  /** The status of every given task (missing ones as MISSING), in as few platform calls as it can. */
  describe(taskIds: string[]): Promise<Map<string, TaskStatus>>;
  /** Releases what the launcher holds (child process handles, SDK clients). */
  close(): Promise<void>;
}
