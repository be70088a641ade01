/**
 * Runs each scan's runner as a child process of the worker (the one-machine
 * setup), with the same contract as the ECS launcher: launching the same scan
 * and attempt again returns the same task, stop() ends it (SIGTERM, then SIGKILL
 * after a grace period, like StopTask; SIGKILL at once with `force`, for a hung
 * runner), describe() reports it the way ECS would.
 *
 * Choices:
 * - The child inherits the worker's environment minus the worker's own secrets
 *   (worker token, JWT secret, database and Redis URLs): a runner authenticates
 *   with the token bound to its one scan and speaks GraphQL only.
 * - Its stdout and stderr are piped and each line is logged with the scan id
 *   (to the logger, or to the worker's own stdout/stderr prefixed `[scan <id>]`).
 * - close() stops the runners it started (stopOnClose, default true), unlike
 *   ECS tasks, which outlive their worker. A local runner's output goes through
 *   a pipe to its worker: orphaned, it would lose its log and die of EPIPE on its
 *   next write. Runners stay in the worker's process group, so Ctrl-C on
 *   `npm start` stops them too. Scans they leave behind are recovered as stale.
 * - A runner that outlived a worker crash is still reported RUNNING to the next
 *   worker (`local:<pid>` with that pid alive), provided the pid is still the
 *   runner: on Linux its /proc cmdline must be the runner command, so a reused
 *   pid is not mistaken for it, and the scan it runs (VEGA_SCAN_ID in its
 *   /proc environ) is reported, so that a pid reused by another scan's runner
 *   is not taken for this scan's (and killed as hung).
 * - A hung runner (SIGSTOPped, deadlocked) is ended with SIGKILL at once
 *   (`force`): SIGTERM does nothing to a stopped process until it is continued.
 * - A child that exited stays visible for `retainStoppedMs` (an hour, like ECS)
 *   and is then forgotten (MISSING).
 * - The launcher makes each runner's work directory (`vega-runner-<scan>-*`
 *   under TMPDIR, passed as VEGA_RUNNER_WORK_DIR) and removes it when it sees
 *   the child exit: a runner killed with SIGKILL cannot remove the user's
 *   source itself. A marker file in it names the worker and the runner, so that
 *   a worker starting after a crash (the whole process group killed) removes
 *   the directories of runners that no longer run (`removeLeftoverWorkDirs`),
 *   and never those of a live runner of another worker on the machine.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { settings } from "../../shared/config.ts";
import { relayChildLine } from "../../shared/logger.ts";
import type { LauncherLogger } from "./ecs.ts";
import { LaunchFailedError, type LaunchRequest, type LaunchResult, type Launcher, type TaskStatus } from "../../shared/launcher.ts";

export interface LocalLauncherOptions {
  /** The runner command, e.g. [process.execPath, "bin/vega.mjs", "runner"]. */
  command: string[];
  /** Variables added to (or replacing) the inherited environment. */
  env?: Record<string, string>;
  cwd?: string;
  logger?: LauncherLogger;
  /** Between SIGTERM and SIGKILL in stop(). Default 5000. */
  stopGraceMs?: number;
  /** Whether close() stops the runners still alive. Default true (see the module comment). */
  stopOnClose?: boolean;
  /** How long an exited runner is still described as STOPPED. Default one hour. */
  retainStoppedMs?: number;
  /** Inherited variables the runner must not see. Default: the worker's secrets. */
  withheldEnv?: string[];
  /** Where runners' work directories are made. Default: the system's temporary directory (TMPDIR). */
  workDirRoot?: string;
}

export interface LocalLauncher extends Launcher {
  readonly kind: "local";
  /** Resolves with the STOPPED status once a runner this launcher started has exited (and its work directory is gone). */
  waitForExit(taskId: string): Promise<TaskStatus>;
  /** Removes the work directories of runners that no longer run (left by a crash); answers the paths removed. */
  removeLeftoverWorkDirs(): Promise<string[]>;
}

export const defaultWithheldEnv = [
  settings.workerToken.env,
  settings.jwtSecret.env,
  settings.databaseUrl.env,
  settings.redisUrl.env,
];

interface LocalRunner {
  taskId: string;
  key: string;
  scanId: string;
  child: ChildProcess;
  pid: number;
  exited: Promise<void>;
  exit?: { code: number | null; signal: NodeJS.Signals | null; at: Date };
  /** Set when stop() ended it. */
  stopReason?: string;
  stopping?: Promise<void>;
}

const TASK_PREFIX = "local:";
const POLL_MS = 25;
const WORK_DIR_PREFIX = "vega-runner-";
const WORK_DIR_MARKER = ".vega-launcher.json";

/** What the marker file in a work directory says. `runnerPid` is null until the child has spawned. */
interface WorkDirMarker {
  host: string;
  workerPid: number;
  runnerPid: number | null;
}

const pidOf = (taskId: string): number | undefined => {
  if (!taskId.startsWith(TASK_PREFIX)) return undefined;
  const pid = Number(taskId.slice(TASK_PREFIX.length));
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
};

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    // ESRCH: no such process. EPERM: another user's process, so not a runner of ours.
    return false;
  }
};

export function createLocalLauncher(options: LocalLauncherOptions): LocalLauncher {
  if (options.command.length === 0) throw new Error("the local launcher needs a runner command");
  const [executable, ...args] = options.command;
  const stopGraceMs = options.stopGraceMs ?? 5_000;
  const retainStoppedMs = options.retainStoppedMs ?? 3_600_000;
  const workDirRoot = options.workDirRoot ?? os.tmpdir();
  const withheld = new Set(options.withheldEnv ?? defaultWithheldEnv);
  const logger = options.logger;

  const byTaskId = new Map<string, LocalRunner>();
  const byKey = new Map<string, LocalRunner>();
  const launchesInFlight = new Map<string, Promise<LaunchResult>>();

  /** The VEGA_SCAN_ID a process was started with, where /proc tells (the same user's processes). */
  const scanIdOfProcess = (pid: number): string | undefined => {
    try {
      const variable = readFileSync(`/proc/${pid}/environ`, "utf8")
        .split("\0")
        .find((entry) => entry.startsWith("VEGA_SCAN_ID="));
      return variable?.slice("VEGA_SCAN_ID=".length);
    } catch {
      return undefined;
    }
  };

  /** Whether `pid` is alive and, where /proc tells, runs the runner command (not a reused pid). */
  const isRunnerProcess = (pid: number): boolean => {
    if (!isAlive(pid)) return false;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      return true; // No /proc (macOS): the liveness check is all there is.
    }
    // A zombie has an empty cmdline: it has exited.
    return cmdline === `${options.command.join("\0")}\0`;
  };

  const forgetOldRunners = () => {
    const cutoff = Date.now() - retainStoppedMs;
    for (const runner of byTaskId.values()) {
      if (runner.exit && runner.exit.at.getTime() < cutoff) {
        byTaskId.delete(runner.taskId);
        if (byKey.get(runner.key) === runner) byKey.delete(runner.key);
      }
    }
  };

  const childEnv = (request: LaunchRequest, workDir: string): NodeJS.ProcessEnv => {
    // Passing the worker's environment through to its child, not reading settings from it.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !withheld.has(name)));
    return {
      ...inherited,
      ...options.env,
      VEGA_SCAN_ID: request.scanId,
      VEGA_API_URL: request.apiUrl,
      VEGA_RUNNER_TOKEN: request.runnerToken,
      [settings.runnerWorkDir.env]: workDir,
      // JSON records, which the relay logs as records of the worker (a pipe is not a terminal anyway).
      [settings.logFormat.env]: "json",
    };
  };

  const writeMarker = (workDir: string, runnerPid: number | null) =>
    writeFile(path.join(workDir, WORK_DIR_MARKER), JSON.stringify({ host: os.hostname(), workerPid: process.pid, runnerPid } satisfies WorkDirMarker));

  const forwardOutput = (runner: LocalRunner, stream: NodeJS.ReadableStream | null, name: "stdout" | "stderr") => {
    if (!stream) return;
    createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => {
      if (logger) relayChildLine(logger, line, { scanId: runner.scanId, taskId: runner.taskId, stream: name });
      else (name === "stdout" ? process.stdout : process.stderr).write(`[scan ${runner.scanId}] ${line}\n`);
    });
  };

  async function start(request: LaunchRequest, key: string): Promise<LaunchResult> {
    const workDir = await mkdtemp(path.join(workDirRoot, `${WORK_DIR_PREFIX}${request.scanId.slice(0, 8)}-`));
    await writeMarker(workDir, null);
    const child = spawn(executable, args, { cwd: options.cwd, env: childEnv(request, workDir), stdio: ["ignore", "pipe", "pipe"] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
    } catch (error) {
      await rm(workDir, { recursive: true, force: true });
      const detail = error instanceof Error ? error.message : String(error);
      logger?.error({ scanId: request.scanId, command: options.command, error: detail }, "runner process did not start");
      throw new LaunchFailedError(`could not start the runner for scan ${request.scanId}: ${detail}`, "SpawnFailed", detail);
    }
    const pid = child.pid!;
    // Should the worker die before this lands, the marker still names it, and its death frees the directory.
    const markerWritten = writeMarker(workDir, pid).catch(() => {});
    const runner: LocalRunner = {
      taskId: `${TASK_PREFIX}${pid}`,
      key,
      scanId: request.scanId,
      child,
      pid,
      exited: new Promise<void>((resolve) => {
        child.once("exit", (code, signal) => {
          runner.exit = { code, signal, at: new Date() };
          // Logged once the directory is gone: "exited" means nothing of the scan's source is left.
          markerWritten
            .then(() => rm(workDir, { recursive: true, force: true }))
            .catch((error: unknown) => logger?.error({ scanId: request.scanId, workDir, error: String(error) }, "could not remove the runner's work directory"))
            .finally(() => {
              logger?.info({ scanId: request.scanId, taskId: runner.taskId, exitCode: code, signal }, "runner process exited");
              resolve();
            });
        });
      }),
    };
    child.on("error", (error) => logger?.warn({ scanId: request.scanId, taskId: runner.taskId, error: String(error) }, "runner process error"));
    forwardOutput(runner, child.stdout, "stdout");
    forwardOutput(runner, child.stderr, "stderr");
    byTaskId.set(runner.taskId, runner);
    byKey.set(key, runner);
    logger?.info({ scanId: request.scanId, attempt: request.attempt, taskId: runner.taskId }, "runner process started");
    return { taskId: runner.taskId };
  }

  const statusOf = (runner: LocalRunner): TaskStatus => {
    if (!runner.exit) return { taskId: runner.taskId, state: "RUNNING", scanId: runner.scanId };
    const { code, signal, at } = runner.exit;
    const ending = signal ? `killed by ${signal}` : `exited with code ${code}`;
    return {
      taskId: runner.taskId,
      state: "STOPPED",
      stopCode: runner.stopReason !== undefined ? "UserInitiated" : "EssentialContainerExited",
      stoppedReason: runner.stopReason !== undefined ? `${runner.stopReason} (${ending})` : ending,
      ...(code !== null ? { exitCode: code } : {}),
      ...(signal ? { signal } : {}),
      stoppedAt: at,
      scanId: runner.scanId,
    };
  };

  /** SIGKILL now; resolves when the process is gone. Also cuts short a graceful stop in progress. */
  async function kill(runner: LocalRunner, reason: string): Promise<void> {
    if (runner.exit) return;
    runner.stopReason ??= reason;
    runner.child.kill("SIGKILL");
    await runner.exited;
  }

  /** SIGTERM, then SIGKILL once the grace period is over; resolves when the process is gone. */
  async function terminate(runner: LocalRunner, reason: string): Promise<void> {
    if (runner.exit) return;
    runner.stopReason ??= reason;
    runner.child.kill("SIGTERM");
    const graceOver = sleep(stopGraceMs, "grace-over" as const, { ref: false });
    if ((await Promise.race([runner.exited.then(() => "exited" as const), graceOver])) === "grace-over") {
      logger?.warn({ scanId: runner.scanId, taskId: runner.taskId, stopGraceMs }, "runner ignored SIGTERM, sending SIGKILL");
      runner.child.kill("SIGKILL");
      await runner.exited;
    }
  }

  /** The same for a runner started by an earlier worker: not our child, so its exit is polled. */
  async function terminateOrphan(pid: number, force: boolean): Promise<void> {
    // Not our child: once dead it may linger as a zombie until its parent (or init) reaps it, and a
    // zombie's cmdline is empty, so "gone" is "no longer the runner command".
    const gone = async (untilMs: number) => {
      while (Date.now() < untilMs) {
        if (!isRunnerProcess(pid)) return true;
        await sleep(POLL_MS);
      }
      return !isRunnerProcess(pid);
    };
    if (!force) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        return;
      }
      if (await gone(Date.now() + stopGraceMs)) return;
    }
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      return;
    }
    await gone(Date.now() + 5_000);
  }

  return {
    kind: "local",

    launch(request) {
      forgetOldRunners();
      const key = `${request.scanId}\n${request.attempt}`;
      const existing = byKey.get(key);
      if (existing) return Promise.resolve({ taskId: existing.taskId });
      const inFlight = launchesInFlight.get(key);
      if (inFlight) return inFlight;
      const launch = start(request, key).finally(() => launchesInFlight.delete(key));
      launchesInFlight.set(key, launch);
      return launch;
    },

    async stop(taskId, reason, { force = false } = {}) {
      const runner = byTaskId.get(taskId);
      if (runner) {
        if (force) return kill(runner, reason);
        runner.stopping ??= terminate(runner, reason);
        await runner.stopping;
        return;
      }
      const pid = pidOf(taskId);
      if (pid !== undefined && isRunnerProcess(pid)) {
        logger?.info({ taskId, reason, force }, "stopping a runner started by an earlier worker");
        await terminateOrphan(pid, force);
      }
    },

    async describe(taskIds) {
      forgetOldRunners();
      const statuses = new Map<string, TaskStatus>();
      for (const taskId of taskIds) {
        const runner = byTaskId.get(taskId);
        if (runner) {
          statuses.set(taskId, statusOf(runner));
          continue;
        }
        const pid = pidOf(taskId);
        const alive = pid !== undefined && isRunnerProcess(pid);
        const scanId = alive ? scanIdOfProcess(pid) : undefined;
        statuses.set(taskId, { taskId, state: alive ? "RUNNING" : "MISSING", ...(scanId ? { scanId } : {}) });
      }
      return statuses;
    },

    async waitForExit(taskId) {
      const runner = byTaskId.get(taskId);
      if (!runner) throw new Error(`no runner ${taskId} was started by this launcher`);
      await runner.exited;
      return statusOf(runner);
    },

    async removeLeftoverWorkDirs() {
      const removed: string[] = [];
      const names = (await readdir(workDirRoot).catch(() => [] as string[])).filter((name) => name.startsWith(WORK_DIR_PREFIX));
      for (const name of names) {
        const workDir = path.join(workDirRoot, name);
        let marker: WorkDirMarker;
        try {
          marker = JSON.parse(await readFile(path.join(workDir, WORK_DIR_MARKER), "utf8")) as WorkDirMarker;
        } catch {
          // No marker: not a local launcher's (a runner started by hand, an ECS task's own temp directory).
          continue;
        }
        // Pids of another host (a shared temporary directory) say nothing here.
        if (marker.host !== os.hostname()) continue;
        const lives = marker.runnerPid !== null ? isRunnerProcess(marker.runnerPid) : isAlive(marker.workerPid);
        if (lives) continue;
        await rm(workDir, { recursive: true, force: true });
        removed.push(workDir);
      }
      if (removed.length > 0) logger?.warn({ workDirs: removed }, "removed the work directories of runners that no longer run");
      return removed;
    },

    async close() {
      const alive = [...byTaskId.values()].filter((runner) => !runner.exit);
      if (options.stopOnClose ?? true) {
        await Promise.all(alive.map((runner) => (runner.stopping ??= terminate(runner, "worker shutting down"))));
      } else {
        for (const runner of alive) {
          runner.child.unref();
          runner.child.stdout?.destroy();
          runner.child.stderr?.destroy();
        }
      }
      byTaskId.clear();
      byKey.clear();
    },
  };
}
