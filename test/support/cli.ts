/** Runs the real `vega` command as a child process, as an operator would. */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

export const vegaBin = fileURLToPath(new URL("../../bin/vega.mjs", import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment a child gets: the test's own, without VEGA_* settings leaking in, plus `env`. */
export function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("VEGA_")));
  return { ...base, VEGA_LOG_LEVEL: "warn", ...env };
}

export function runVega(args: string[], env: Record<string, string> = {}, options: { timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vegaBin, ...args], { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface StartOptions {
  timeoutMs?: number;
  /** Its own process group (whose id is its pid), for tests that kill the whole group. */
  detached?: boolean;
}

/** Starts a long-running `vega` process; resolves once `ready` matches its output. */
export function startVega(
  args: string[],
  env: Record<string, string>,
  ready: RegExp,
  options: StartOptions = {},
): Promise<{ child: ChildProcess; output: () => string }> {
  return startCommand(process.execPath, [vegaBin, ...args], env, ready, options);
}

/** Starts any long-running command (npm, redis-server) with childEnv(env); resolves once `ready` matches its output. */
export function startCommand(
  command: string,
  args: string[],
  env: Record<string, string>,
  ready: RegExp,
  options: StartOptions & { cwd?: string } = {},
): Promise<{ child: ChildProcess; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: childEnv({ VEGA_LOG_LEVEL: "info", ...env }),
      stdio: ["ignore", "pipe", "pipe"],
      detached: options.detached,
    });
    let output = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")} did not become ready:\n${output}`));
    }, options.timeoutMs ?? 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk;
      if (ready.test(output)) {
        clearTimeout(timer);
        resolve({ child, output: () => output });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} ${args.join(" ")} exited with ${code} before it was ready:\n${output}`));
    });
  });
}

export function stopProcess(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.kill(signal);
  });
}

/** The one line of JSON a `vega maintenance` job prints on stdout. */
export function summaryOf(result: CliResult): Record<string, any> {
  const lines = result.stdout.trim().split("\n");
  expect(lines, result.stderr).toHaveLength(1);
  return JSON.parse(lines[0]);
}

/** A process that refuses to start says why in one message: no stack trace on its stderr. */
export const expectNoStackTrace = (stderr: string) => expect(stderr).not.toMatch(/\n\s+at /);
