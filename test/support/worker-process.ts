/**
 * Real `vega worker` processes for tests of scan execution, and what such tests
 * look at: the worker's JSON log, runner processes and their work directories,
 * and the scan's rows, awaited with a bounded poll where no event tells.
 */
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { PrismaClient } from "../../api/db/client.ts";
import { startVega, type StartOptions } from "./cli.ts";

export interface WorkerProcess {
  child: ChildProcess;
  /** The registry id the worker logged when it registered. */
  workerId: string;
  name: string;
  /** Every JSON line the worker printed so far (its runners' lines come wrapped in its own). */
  logLines(): Record<string, any>[];
  /** The first log line `match` accepts, as soon as the worker prints it. */
  waitForLog(match: (line: Record<string, any>) => boolean, options?: { timeoutMs?: number }): Promise<Record<string, any>>;
}

/** Starts `vega worker` (logging at info) and resolves once it has registered. */
export async function startWorkerProcess(name: string, env: Record<string, string>, options?: StartOptions): Promise<WorkerProcess> {
  const started = await startVega(["worker"], { VEGA_WORKER_NAME: name, ...env }, /"msg":"worker registered"/, options);
  const registered = parseLines(started.output()).find((line) => line.msg === "worker registered");
  if (!registered?.workerId) throw new Error(`worker ${name} logged no workerId:\n${started.output()}`);
  const logLines = () => parseLines(started.output());
  return {
    child: started.child,
    workerId: registered.workerId,
    name,
    logLines,
    waitForLog(match, { timeoutMs = 60_000 } = {}) {
      return new Promise((resolve, reject) => {
        const streams = [started.child.stdout!, started.child.stderr!];
        const done = () => {
          clearTimeout(timer);
          for (const stream of streams) stream.off("data", check);
          started.child.off("exit", onExit);
        };
        const check = () => {
          const found = logLines().find(match);
          if (found) {
            done();
            resolve(found);
          }
        };
        const onExit = () => {
          done();
          reject(new Error(`worker ${name} exited before the awaited log line:\n${started.output()}`));
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`worker ${name} did not log the awaited line within ${timeoutMs} ms:\n${started.output()}`));
        }, timeoutMs);
        // Listeners run after startVega's own, which appends the chunk to output().
        for (const stream of streams) stream.on("data", check);
        started.child.once("exit", onExit);
        check();
      });
    },
  };
}

function parseLines(output: string): Record<string, any>[] {
  const lines: Record<string, any>[] = [];
  for (const text of output.split("\n")) {
    if (!text.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(text));
    } catch {
      // A line still being written.
    }
  }
  return lines;
}

/**
 * Polls `check` until it answers something other than undefined or false, for
 * at most `timeoutMs`: for states no event announces (a row in the database, a
 * process gone).
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 60_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Settles with `promise`, or fails naming `what` (and `details()`, when given) after `timeoutMs`. */
export function within<T>(promise: Promise<T>, what: string, { timeoutMs = 60_000, details }: { timeoutMs?: number; details?: () => string } = {}): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${details ? `\n${details()}` : ""}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The scan once it has reached one of `statuses`. */
export function waitForScanStatus(prisma: PrismaClient, scanId: string, statuses: string[], options?: { timeoutMs?: number }) {
  return waitFor(`scan ${scanId} to be ${statuses.join(" or ")}`, async () => {
    const scan = await prisma.scan.findUniqueOrThrow({ where: { id: scanId } });
    return statuses.includes(scan.status) ? scan : undefined;
  }, options);
}

export const scanEvents = (prisma: PrismaClient, scanId: string) => prisma.scanEvent.findMany({ where: { scanId }, orderBy: { seq: "asc" } });

/** Whether a process with this pid exists (a zombie not yet reaped counts). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether a process has ended: gone, or a zombie waiting for a parent to reap
 * it (an orphan whose parent died is reaped by init, if init reaps at all).
 */
export function processEnded(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The state follows the command name in parentheses, which may itself hold spaces.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return !processExists(pid);
  }
}

/** The pid of a local launcher's task id (`local:<pid>`). */
export function pidOfLocalTask(taskId: string | null | undefined): number {
  const match = /^local:(\d+)$/.exec(taskId ?? "");
  if (!match) throw new Error(`not a local task id: ${taskId}`);
  return Number(match[1]);
}

/** The runner's work directories of a scan: `vega-runner-<first 8 characters of its id>-*` under the temporary directory. */
export function runnerWorkDirs(scanId: string): string[] {
  const prefix = `vega-runner-${scanId.slice(0, 8)}-`;
  return readdirSync(os.tmpdir())
    .filter((name) => name.startsWith(prefix))
    .map((name) => path.join(os.tmpdir(), name));
}

/** The claims of a JWT, unverified. */
export function jwtClaims(token: string): Record<string, any> {
  const [, payload] = token.split(".");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/**
 * `count` distinct AWS access key ids of the right shape (AKIA + 16 base32),
 * made at run time so that no key-shaped literal is in the source: each one is
 * a finding of the secrets analyzer's aws-access-key-id rule.
 */
export function fakeAwsAccessKeyIds(count: number, seed = 1): string[] {
  let state = seed >>> 0;
  const random = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
  return Array.from({ length: count }, (_, index) => {
    // The index in the first six characters keeps the keys distinct; the rest is noise.
    let head = "";
    for (let rest = index, i = 0; i < 6; i++, rest = Math.floor(rest / 32)) head += BASE32[rest % 32];
    const tail = Array.from({ length: 10 }, () => BASE32[Math.floor(random() * 32)]).join("");
    return `AKIA${head}${tail}`;
  });
}

/** A source file holding `count` fake AWS access key ids, one a line. */
export function awsKeysFile(count: number, name = "config/keys.env", seed = 1): { name: string; data: string } {
  const lines = fakeAwsAccessKeyIds(count, seed).map((key, index) => `AWS_ACCESS_KEY_ID_${index}=${key}`);
  return { name, data: `${lines.join("\n")}\n` };
}
