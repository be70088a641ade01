/**
 * The embedded database's owner. PGlite is one process's database: two
 * processes opening the same VEGA_DATA_DIR/pglite each run their own copy in
 * memory, and the writes of one vanish (docs/decisions.md). Nothing in PGlite prevents
 * the second open, so every open of the data directory first takes
 * VEGA_DATA_DIR/vega.lock, a JSON record of the owner: pid, host, start time,
 * what it runs, and, once a server listens, its URL (how `vega maintenance`
 * reaches the server that holds the directory).
 *
 * - Taking it is one atomic step: the complete record is written to a file of
 *   our own, then hard-linked to vega.lock, which fails if vega.lock exists; a
 *   reader never sees half a record.
 * - The owner is dead when, in the same process scope (boot id and pid
 *   namespace, read from /proc), its pid no longer runs, or runs a process
 *   started at another time (a reused pid). Then the lock is taken over.
 *   Across scopes (a container on the same volume, another machine) pids mean
 *   nothing: there the owner refreshes the file's mtime every REFRESH_MS and
 *   counts as dead once it is older than FOREIGN_STALE_MS.
 * - Two processes taking over the same dead owner's lock at once could each
 *   delete the other's fresh lock: the takeover (re-read, compare, delete)
 *   happens under vega.lock.takeover, a short-lived mutex file of its own.
 * - Released by close(), and on process exit by a synchronous handler;
 *   a SIGKILL leaves the file behind, and the next start takes it over.
 */
import { randomBytes } from "node:crypto";
import { readFileSync, readlinkSync, unlinkSync } from "node:fs";
import { link, mkdir, readFile, rename, stat, unlink, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export const LOCK_FILE = "vega.lock";
const REFRESH_MS = 10_000;
const FOREIGN_STALE_MS = 60_000;
/** A takeover mutex older than this was left by a process that died inside the few milliseconds it is held. */
const TAKEOVER_STALE_MS = 10_000;
const ATTEMPTS = 20;

export interface DataDirOwner {
  pid: number;
  host: string;
  /** What the owner runs: "vega start", "vega maintenance cleanup"… */
  command: string;
  startedAt: string;
  /** The server's base URL once it listens; absent for other owners and for a server still starting. */
  url?: string;
  /** Boot id and pid namespace: where `pid` means this process. */
  scope: string;
  /** The kernel's start time of `pid` (/proc/<pid>/stat), to tell a reused pid. */
  processStart?: string;
}

/** Someone else holds the data directory. */
export class DataDirHeldError extends Error {
  override name = "DataDirHeldError";
  constructor(
    readonly directory: string,
    readonly owner: DataDirOwner,
  ) {
    super(
      `the data directory ${directory} is held by another Vega process: \`${owner.command}\`, pid ${owner.pid} on ${owner.host}, ` +
        `since ${owner.startedAt}${owner.url ? `, serving ${owner.url}` : ""} (lock file ${path.join(directory, LOCK_FILE)})`,
    );
  }
}

export interface DataDirLock {
  readonly directory: string;
  readonly owner: DataDirOwner;
  /** Records the URL the server listens on, for `vega maintenance` to reach it. */
  announce(url: string): Promise<void>;
  release(): Promise<void>;
}

export interface LockOptions {
  command: string;
  /** Called when the lock file no longer names this process (deleted, or taken over after a long stall). */
  onLost?: (reason: string) => void;
}

function procText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** Where pids are comparable: the boot and the pid namespace on Linux, the host name elsewhere. */
function processScope(): string {
  const bootId = procText("/proc/sys/kernel/random/boot_id");
  let namespace: string | undefined;
  try {
    namespace = readlinkSync("/proc/self/ns/pid");
  } catch {
    namespace = undefined;
  }
  return bootId && namespace ? `${bootId}/${namespace}` : `host:${os.hostname()}`;
}

/** Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces). */
function processStartOf(pid: number): string | undefined {
  const stat = procText(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: a live process of another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

interface LockFileState {
  owner: DataDirOwner | undefined;
  raw: string;
  modifiedMs: number;
}

async function readLockFile(file: string): Promise<LockFileState | undefined> {
  try {
    const [raw, info] = await Promise.all([readFile(file, "utf8"), stat(file)]);
    let owner: DataDirOwner | undefined;
    try {
      const parsed = JSON.parse(raw) as DataDirOwner;
      if (Number.isSafeInteger(parsed.pid) && typeof parsed.scope === "string") owner = parsed;
    } catch {
      owner = undefined;
    }
    return { owner, raw, modifiedMs: info.mtimeMs };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

function ownerIsGone(state: LockFileState, now = Date.now()): boolean {
  const owner = state.owner;
  // Not a record Vega writes: nothing to protect.
  if (!owner) return true;
  if (owner.scope !== processScope()) return now - state.modifiedMs > FOREIGN_STALE_MS;
  if (!isAlive(owner.pid)) return true;
  const start = processStartOf(owner.pid);
  return owner.processStart !== undefined && start !== undefined && start !== owner.processStart;
}

const sameOwner = (a: DataDirOwner | undefined, b: DataDirOwner) =>
  a !== undefined && a.pid === b.pid && a.scope === b.scope && a.startedAt === b.startedAt;

/**
 * The owner of `directory` when a live process holds it; undefined when it is
 * free or its owner is dead.
 */
export async function liveOwnerOf(directory: string): Promise<DataDirOwner | undefined> {
  const state = await readLockFile(path.join(directory, LOCK_FILE));
  return state && !ownerIsGone(state) ? state.owner : undefined;
}

/** Deletes the dead owner's lock file, unless it changed since it was read (someone else took it over first). */
async function takeOver(file: string, dead: LockFileState) {
  const mutex = `${file}.takeover`;
  for (;;) {
    try {
      await writeFile(mutex, String(process.pid), { flag: "wx" });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const held = await stat(mutex).catch(() => undefined);
      if (held && Date.now() - held.mtimeMs > TAKEOVER_STALE_MS) await unlink(mutex).catch(() => {});
      else await sleep(20);
    }
  }
  try {
    const current = await readLockFile(file);
    if (current && current.raw === dead.raw) await unlink(file).catch(() => {});
  } finally {
    await unlink(mutex).catch(() => {});
  }
}

/** Takes the data directory, taking over a dead owner's lock; throws DataDirHeldError when a live one holds it. */
export async function acquireDataDirLock(directory: string, options: LockOptions): Promise<DataDirLock> {
  await mkdir(directory, { recursive: true });
  const file = path.join(directory, LOCK_FILE);
  let owner: DataDirOwner = {
    pid: process.pid,
    host: os.hostname(),
    command: options.command,
    startedAt: new Date().toISOString(),
    scope: processScope(),
    processStart: processStartOf(process.pid),
  };
  const record = () => `${JSON.stringify(owner, null, 2)}\n`;
  const privateFile = () => `${file}.${process.pid}.${randomBytes(6).toString("hex")}`;

  for (let attempt = 1; ; attempt++) {
    const mine = privateFile();
    await writeFile(mine, record());
    try {
      await link(mine, file);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    } finally {
      await unlink(mine).catch(() => {});
    }
    const held = await readLockFile(file);
    if (held && !ownerIsGone(held)) throw new DataDirHeldError(directory, held.owner!);
    if (attempt === ATTEMPTS) throw new Error(`could not take ${file}: other processes kept taking it over`);
    if (held) await takeOver(file, held);
  }

  const releaseOnExit = () => {
    try {
      const current = JSON.parse(readFileSync(file, "utf8")) as DataDirOwner;
      if (sameOwner(current, owner)) unlinkSync(file);
    } catch {
      // Gone already, or not ours.
    }
  };
  process.once("exit", releaseOnExit);

  const onLost =
    options.onLost ??
    ((reason: string) => {
      console.error(`vega: ${reason}; stopping so that two processes never write one embedded database`);
      process.exit(1);
    });
  let released = false;
  const refresher = setInterval(() => {
    void (async () => {
      const current = await readLockFile(file).catch(() => undefined);
      if (released) return;
      if (!sameOwner(current?.owner, owner)) {
        released = true;
        clearInterval(refresher);
        process.off("exit", releaseOnExit);
        onLost(`lost the lock on the data directory ${directory} (${current?.owner ? `now held by pid ${current.owner.pid}` : "the lock file was removed"})`);
        return;
      }
      const now = new Date();
      await utimes(file, now, now).catch(() => {});
    })();
  }, REFRESH_MS);
  refresher.unref();

  return {
    directory,
    get owner() {
      return owner;
    },
    async announce(url) {
      owner = { ...owner, url };
      const mine = privateFile();
      await writeFile(mine, record());
      // rename() replaces the file in one step: readers see the old record or the new one.
      await rename(mine, file);
    },
    async release() {
      if (released) return;
      released = true;
      clearInterval(refresher);
      process.off("exit", releaseOnExit);
      const current = await readLockFile(file);
      if (sameOwner(current?.owner, owner)) await unlink(file).catch(() => {});
    },
  };
}
