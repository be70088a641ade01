import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { LauncherLogger } from "../../worker/launchers/ecs.ts";
import { createLocalLauncher, type LocalLauncher, type LocalLauncherOptions } from "../../worker/launchers/local.ts";
import { LaunchFailedError, type LaunchRequest } from "../../shared/launcher.ts";

/**
 * A stand-in runner whose behaviour follows its scan id: `exit-<n>` exits with n,
 * `wait-*` runs until SIGUSR2 (then exits 7) or a signal, `stubborn-*` ignores
 * SIGTERM. It prints what it was given, then "ready" once its handlers are set.
 */
const RUNNER_SCRIPT = `
const id = process.env.VEGA_SCAN_ID ?? "";
console.log(JSON.stringify({
  scanId: id,
  apiUrl: process.env.VEGA_API_URL,
  runnerToken: process.env.VEGA_RUNNER_TOKEN,
  extra: process.env.RUNNER_EXTRA ?? null,
  workerToken: process.env.VEGA_WORKER_TOKEN ?? null,
  inheritedPath: Boolean(process.env.PATH),
}));
if (id.startsWith("exit-")) process.exit(Number(id.slice("exit-".length)));
if (id.startsWith("stubborn")) process.on("SIGTERM", () => console.log("ignoring SIGTERM"));
process.on("SIGUSR2", () => process.exit(7));
setInterval(() => {}, 1 << 30);
console.log("ready");
`;

let dir: string;
let command: string[];
const launchers: LocalLauncher[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "vega-local-launcher-"));
  const script = path.join(dir, "runner.mjs");
  await writeFile(script, RUNNER_SCRIPT);
  command = [process.execPath, script];
});
afterEach(async () => {
  await Promise.all(launchers.splice(0).map((launcher) => launcher.close()));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A logger that keeps the runners' output lines and lets a test await one. */
function outputLog() {
  const lines: Array<{ taskId: string; scanId: string; stream: string; line: string }> = [];
  const waiters: Array<() => void> = [];
  const record = (details: object, message: string) => {
    const { taskId, scanId, stream } = details as { taskId?: string; scanId?: string; stream?: string };
    if (!taskId || !scanId || !stream) return;
    lines.push({ taskId, scanId, stream, line: message });
    for (const wake of waiters.splice(0)) wake();
  };
  const logger: LauncherLogger = { info: record, warn: record, error: record };
  return {
    logger,
    lines,
    /** Resolves with the first line of runner `taskId` that `match` accepts, already printed or yet to come. */
    async line(taskId: string, match: (line: string) => boolean): Promise<string> {
      for (;;) {
        const found = lines.find((l) => l.taskId === taskId && match(l.line));
        if (found) return found.line;
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
  };
}

function localLauncher(overrides: Partial<LocalLauncherOptions> = {}) {
  const output = outputLog();
  const launcher = createLocalLauncher({ command, logger: output.logger, stopGraceMs: 5_000, ...overrides });
  launchers.push(launcher);
  return { launcher, output, ready: (taskId: string) => output.line(taskId, (line) => line === "ready") };
}

const scan = (scanId: string, attempt = 1): LaunchRequest => ({
  scanId,
  attempt,
  apiUrl: "http://127.0.0.1:4000/graphql",
  runnerToken: `runner-token-for-${scanId}`,
});

const pidOf = (taskId: string) => Number(taskId.slice("local:".length));

describe("launching a runner process", () => {
  it("passes the scan's environment and withholds the worker's secrets", async () => {
    const saved = process.env.VEGA_WORKER_TOKEN;
    process.env.VEGA_WORKER_TOKEN = "worker-secret";
    try {
      const { launcher, output } = localLauncher({ env: { RUNNER_EXTRA: "from-options" } });
      const { taskId } = await launcher.launch(scan("exit-0"));

      expect(taskId).toMatch(/^local:\d+$/);
      const report = JSON.parse(await output.line(taskId, (line) => line.startsWith("{")));
      expect(report).toEqual({
        scanId: "exit-0",
        apiUrl: "http://127.0.0.1:4000/graphql",
        runnerToken: "runner-token-for-exit-0",
        extra: "from-options",
        workerToken: null,
        inheritedPath: true,
      });
      expect(await launcher.waitForExit(taskId)).toMatchObject({ state: "STOPPED", exitCode: 0 });
    } finally {
      if (saved === undefined) delete process.env.VEGA_WORKER_TOKEN;
      else process.env.VEGA_WORKER_TOKEN = saved;
    }
  });

  it("returns the same runner when the same scan attempt is launched again", async () => {
    const { launcher, output, ready } = localLauncher();
    const [a, b] = await Promise.all([launcher.launch(scan("wait-same")), launcher.launch(scan("wait-same"))]);
    const c = await launcher.launch(scan("wait-same"));
    const next = await launcher.launch(scan("wait-same", 2));
    await Promise.all([ready(a.taskId), ready(next.taskId)]);

    expect(new Set([a.taskId, b.taskId, c.taskId]).size).toBe(1);
    expect(next.taskId).not.toBe(a.taskId);
    // One process per attempt: each runner printed its report once.
    const reports = output.lines.filter((l) => l.line.startsWith("{"));
    expect(reports.map((l) => l.taskId).sort()).toEqual([a.taskId, next.taskId].sort());
  });

  it("fails the launch with LaunchFailedError when the command cannot start", async () => {
    const { launcher } = localLauncher({ command: [path.join(dir, "no-such-runner")] });
    const error = await launcher.launch(scan("exit-0")).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(LaunchFailedError);
    expect(error).toMatchObject({ reason: "SpawnFailed" });
    expect((error as LaunchFailedError).detail).toContain("ENOENT");
  });
});

describe("describing runner processes", () => {
  it("shows a live runner as RUNNING, then STOPPED with its exit code", async () => {
    const { launcher, ready } = localLauncher();
    const { taskId } = await launcher.launch(scan("wait-exit"));
    await ready(taskId);

    expect((await launcher.describe([taskId])).get(taskId)).toEqual({ taskId, state: "RUNNING", scanId: "wait-exit" });

    process.kill(pidOf(taskId), "SIGUSR2");
    await launcher.waitForExit(taskId);
    expect((await launcher.describe([taskId])).get(taskId)).toEqual({
      taskId,
      state: "STOPPED",
      stopCode: "EssentialContainerExited",
      stoppedReason: "exited with code 7",
      exitCode: 7,
      stoppedAt: expect.any(Date),
      scanId: "wait-exit",
    });
  });

  it("reports the signal that killed a runner", async () => {
    const { launcher, ready } = localLauncher();
    const { taskId } = await launcher.launch(scan("wait-killed"));
    await ready(taskId);

    process.kill(pidOf(taskId), "SIGKILL");
    await launcher.waitForExit(taskId);
    const status = (await launcher.describe([taskId])).get(taskId);
    expect(status).toEqual({
      taskId,
      state: "STOPPED",
      stopCode: "EssentialContainerExited",
      stoppedReason: "killed by SIGKILL",
      signal: "SIGKILL",
      stoppedAt: expect.any(Date),
      scanId: "wait-killed",
    });
  });

  it("shows unknown tasks as MISSING", async () => {
    const { launcher } = localLauncher();
    const ids = ["local:99999999", "local:not-a-pid", "arn:aws:ecs:us-east-1:123456789012:task/vega/0123"];
    const statuses = await launcher.describe(ids);

    expect(ids.map((id) => statuses.get(id)?.state)).toEqual(["MISSING", "MISSING", "MISSING"]);
  });

  it("still shows RUNNING a runner that outlived the worker that started it, and can stop it", async () => {
    const { launcher: before, ready } = localLauncher();
    const { taskId } = await before.launch(scan("wait-orphan"));
    await ready(taskId);
    const exited = before.waitForExit(taskId);

    const { launcher: after } = localLauncher({ stopGraceMs: 2_000 });
    // Where /proc tells, with the scan it runs: a pid reused by another scan's runner is not taken for this one.
    const scanId = process.platform === "linux" ? { scanId: "wait-orphan" } : {};
    expect((await after.describe([taskId])).get(taskId)).toEqual({ taskId, state: "RUNNING", ...scanId });

    await after.stop(taskId, "cancelled");
    expect(await exited).toMatchObject({ state: "STOPPED", signal: "SIGTERM" });
    expect((await after.describe([taskId])).get(taskId)?.state).toBe("MISSING");
  });

  it.skipIf(process.platform !== "linux")("does not mistake a live process that is not the runner (a reused pid) for it", async () => {
    const { launcher } = localLauncher();
    const notTheRunner = `local:${process.pid}`;

    expect((await launcher.describe([notTheRunner])).get(notTheRunner)?.state).toBe("MISSING");
  });
});

describe("stopping runner processes", () => {
  it("ends a runner with SIGTERM and resolves once it has exited", async () => {
    const { launcher, ready } = localLauncher();
    const { taskId } = await launcher.launch(scan("wait-stop"));
    await ready(taskId);

    await launcher.stop(taskId, "cancelled by user");

    expect((await launcher.describe([taskId])).get(taskId)).toEqual({
      taskId,
      state: "STOPPED",
      stopCode: "UserInitiated",
      stoppedReason: "cancelled by user (killed by SIGTERM)",
      signal: "SIGTERM",
      stoppedAt: expect.any(Date),
      scanId: "wait-stop",
    });
  });

  // A grace period no test would wait out: only SIGKILL at once can end these in time.
  it("kills a hung (SIGSTOPped) runner at once when forced: SIGTERM would wait for it to be continued", async () => {
    const { launcher, ready } = localLauncher({ stopGraceMs: 3_600_000 });
    const { taskId } = await launcher.launch(scan("wait-hung"));
    await ready(taskId);
    process.kill(pidOf(taskId), "SIGSTOP");

    await launcher.stop(taskId, "RUNNER_HUNG: no progress report", { force: true });

    expect((await launcher.describe([taskId])).get(taskId)).toMatchObject({
      state: "STOPPED",
      signal: "SIGKILL",
      stopCode: "UserInitiated",
      stoppedReason: "RUNNER_HUNG: no progress report (killed by SIGKILL)",
    });
  });

  it("kills a hung runner that an earlier worker started, when forced", async () => {
    const { launcher: before, ready } = localLauncher();
    const { taskId } = await before.launch(scan("wait-hung-orphan"));
    await ready(taskId);
    const exited = before.waitForExit(taskId);
    process.kill(pidOf(taskId), "SIGSTOP");

    const { launcher: after } = localLauncher({ stopGraceMs: 3_600_000 });
    await after.stop(taskId, "RUNNER_HUNG", { force: true });

    expect(await exited).toMatchObject({ state: "STOPPED", signal: "SIGKILL" });
    expect((await after.describe([taskId])).get(taskId)?.state).toBe("MISSING");
  });

  it("sends SIGKILL to a runner that ignores SIGTERM once the grace period is over", async () => {
    const { launcher, output, ready } = localLauncher({ stopGraceMs: 100 });
    const { taskId } = await launcher.launch(scan("stubborn"));
    await ready(taskId);

    await launcher.stop(taskId, "cancelled by user");

    await output.line(taskId, (line) => line === "ignoring SIGTERM");
    expect((await launcher.describe([taskId])).get(taskId)).toMatchObject({ state: "STOPPED", signal: "SIGKILL", stopCode: "UserInitiated" });
  });

  it("treats stopping an exited or unknown runner as done", async () => {
    const { launcher } = localLauncher();
    const { taskId } = await launcher.launch(scan("exit-3"));
    await launcher.waitForExit(taskId);

    await expect(launcher.stop(taskId, "late")).resolves.toBeUndefined();
    await expect(launcher.stop("local:99999999", "unknown")).resolves.toBeUndefined();
    expect((await launcher.describe([taskId])).get(taskId)).toMatchObject({ exitCode: 3, stopCode: "EssentialContainerExited" });
  });

  it("stops the runners still alive when the launcher closes", async () => {
    const { launcher, ready } = localLauncher();
    const { taskId } = await launcher.launch(scan("wait-close"));
    await ready(taskId);
    const exited = launcher.waitForExit(taskId);

    await launcher.close();

    expect(await exited).toMatchObject({ state: "STOPPED", signal: "SIGTERM" });
  });
});
