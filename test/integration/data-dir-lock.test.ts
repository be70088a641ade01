/**
 * The data directory's lock on its own: one owner at a time, a dead owner's
 * lock taken over, a live one never, and exactly one winner when processes
 * race for a dead owner's lock.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { acquireDataDirLock, DataDirHeldError, LOCK_FILE, liveOwnerOf, type DataDirOwner } from "../../api/db/data-dir-lock.ts";
import { processExists, waitFor } from "../support/worker-process.ts";

const dirs: string[] = [];
async function dataDir() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-lock-"));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

const lockFile = (dir: string) => path.join(dir, LOCK_FILE);
const readOwner = async (dir: string) => JSON.parse(await readFile(lockFile(dir), "utf8")) as DataDirOwner;

/** Leaves in `dir` the lock record this process would write, changed by `changes` (another owner's). */
async function writeLockOf(dir: string, changes: Partial<DataDirOwner>) {
  const lock = await acquireDataDirLock(dir, { command: "vega start" });
  const record = await readOwner(dir);
  await lock.release();
  await writeFile(lockFile(dir), JSON.stringify({ ...record, ...changes }));
}

/** The pid of a process that has exited and been reaped. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  await waitFor("the child to be reaped", () => !processExists(child.pid!));
  return child.pid!;
}

describe("taking the data directory", () => {
  it("records pid, host, start time and command, refuses a second taker naming the owner, and releases", async () => {
    const dir = await dataDir();
    const lock = await acquireDataDirLock(dir, { command: "vega start" });
    const owner = await readOwner(dir);
    expect(owner).toMatchObject({ pid: process.pid, host: os.hostname(), command: "vega start", startedAt: expect.any(String) });

    const refused = await acquireDataDirLock(dir, { command: "vega serve" }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(DataDirHeldError);
    expect((refused as Error).message).toContain(dir);
    expect((refused as Error).message).toContain(`pid ${process.pid}`);

    await lock.announce("http://127.0.0.1:4321");
    expect(await liveOwnerOf(dir)).toMatchObject({ pid: process.pid, url: "http://127.0.0.1:4321" });

    await lock.release();
    await expect(stat(lockFile(dir))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await liveOwnerOf(dir)).toBeUndefined();
    await (await acquireDataDirLock(dir, { command: "vega start" })).release();
  });

  it("takes over the lock of an owner that no longer runs", async () => {
    const dir = await dataDir();
    await writeLockOf(dir, { pid: await deadPid() });

    expect(await liveOwnerOf(dir)).toBeUndefined();
    const lock = await acquireDataDirLock(dir, { command: "vega start" });
    expect((await readOwner(dir)).pid).toBe(process.pid);
    await lock.release();
  });

  it("takes over the lock of a pid that was reused by another process", async () => {
    const dir = await dataDir();
    // The parent lives, but it is not the process that wrote the lock: its start time differs.
    await writeLockOf(dir, { pid: process.ppid, processStart: "1" });

    const lock = await acquireDataDirLock(dir, { command: "vega start" });
    expect((await readOwner(dir)).pid).toBe(process.pid);
    await lock.release();
  });

  it("holds a lock from another host or container while it is refreshed, and takes it over once it is not", async () => {
    const dir = await dataDir();
    await writeLockOf(dir, { host: "elsewhere", scope: "another-boot/pid:[1]", pid: 1 });

    await expect(acquireDataDirLock(dir, { command: "vega start" })).rejects.toBeInstanceOf(DataDirHeldError);

    const longAgo = new Date(Date.now() - 10 * 60_000);
    await utimes(lockFile(dir), longAgo, longAgo);
    const lock = await acquireDataDirLock(dir, { command: "vega start" });
    expect((await readOwner(dir)).pid).toBe(process.pid);
    await lock.release();
  });

  it("lets exactly one of several processes racing for a dead owner's lock win", async () => {
    const dir = await dataDir();
    await writeLockOf(dir, { pid: await deadPid() });

    const script = `
      import { acquireDataDirLock } from ${JSON.stringify(path.resolve("api/db/data-dir-lock.ts"))};
      try {
        await acquireDataDirLock(process.argv[1], { command: "racer" });
        console.log("won");
      } catch (error) {
        console.log(error.name === "DataDirHeldError" ? "held" : "error " + error.message);
      }
      // The winner keeps the lock until the test ends it.
      setInterval(() => {}, 1000);
    `;
    const racers = Array.from({ length: 8 }, () => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, dir], { stdio: ["ignore", "pipe", "inherit"] });
      const answer = new Promise<string>((resolve) => {
        let output = "";
        child.stdout.on("data", (chunk) => {
          output += chunk;
          if (output.includes("\n")) resolve(output.trim());
        });
      });
      return { child, answer };
    });
    try {
      const answers = await Promise.all(racers.map((racer) => racer.answer));
      expect(answers.filter((answer) => answer === "won")).toHaveLength(1);
      expect(answers.filter((answer) => answer === "held")).toHaveLength(racers.length - 1);
      const winner = racers[answers.indexOf("won")].child.pid;
      expect((await readOwner(dir)).pid).toBe(winner);
    } finally {
      for (const racer of racers) racer.child.kill("SIGKILL");
    }
  }, 120_000);
});
