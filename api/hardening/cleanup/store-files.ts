/**
 * Files in the artifact store that no live Artifact row names (orphans: left by
 * a crash between a row's marking and its file's deletion, or written by hand),
 * and upload temporaries in `tmp/` that were abandoned (a client went away, a
 * process died mid-upload).
 *
 * Both walk the store as a stream (`opendir`, one directory handle at a time)
 * and work CLEANUP_BATCH_SIZE files at a time: orphan candidates are looked up
 * by storage key in one query per batch. A file modified within the last hour
 * is never touched: an accepted upload is renamed into `sources/` a moment
 * before its row commits, and an upload in progress keeps writing its
 * temporary file (rename keeps the modification time of the last write).
 */
import type { Dirent } from "node:fs";
import { lstat, opendir, unlink } from "node:fs/promises";
import path from "node:path";
import {
  CLEANUP_BATCH_SIZE,
  FILE_CONCURRENCY,
  FileFailures,
  forEachConcurrently,
  isMissing,
  type CleanupJobContext,
  type JobTally,
} from "./job.ts";

/** How long a store file is left alone after its last write. */
export const STORE_FILE_GRACE_MS = 60 * 60 * 1000;

/** The directories under which committed files live (artifact-store.ts `commit`). */
const STORED_KINDS = ["sources", "reports"] as const;

/** Regular files under `dir`, depth first, read one directory entry batch at a time (never a whole tree in memory). */
export async function* walkFiles(dir: string): AsyncGenerator<string> {
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.pop()!;
    let entries: AsyncIterable<Dirent>;
    try {
      entries = await opendir(current);
    } catch (error) {
      if (isMissing(error)) continue;
      throw error;
    }
    for await (const entry of entries) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile()) yield full;
    }
  }
}

/** Groups an async stream into arrays of up to `size`. */
async function* inBatches<T>(items: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let batch: T[] = [];
  for await (const item of items) {
    batch.push(item);
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

const storageKeyOf = (root: string, file: string) => path.relative(root, file).split(path.sep).join("/");

export async function removeOrphanFiles(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const root = ctx.artifacts.root;
  const failures = new FileFailures();
  for (const kind of STORED_KINDS) {
    for await (const files of inBatches(walkFiles(path.join(root, kind)), CLEANUP_BATCH_SIZE)) {
      ctx.signal?.throwIfAborted();
      const keys = files.map((file) => storageKeyOf(root, file));
      const live = await ctx.prisma.artifact.findMany({
        where: { storageKey: { in: keys }, deletedAt: null },
        select: { storageKey: true },
      });
      const liveKeys = new Set(live.map((artifact) => artifact.storageKey));
      const orphans = files.filter((_file, index) => !liveKeys.has(keys[index]));
      await forEachConcurrently(orphans, FILE_CONCURRENCY, (file) => removeIfOld(ctx, tally, failures, file));
    }
  }
  failures.throwIfAny("orphaned files");
}

export async function removeAbandonedUploads(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const failures = new FileFailures();
  for await (const files of inBatches(walkFiles(ctx.artifacts.tmpDir), CLEANUP_BATCH_SIZE)) {
    ctx.signal?.throwIfAborted();
    await forEachConcurrently(files, FILE_CONCURRENCY, (file) => removeIfOld(ctx, tally, failures, file));
  }
  failures.throwIfAny("upload temporary files");
}

async function removeIfOld(ctx: CleanupJobContext, tally: JobTally, failures: FileFailures, file: string) {
  let info;
  try {
    info = await lstat(file);
  } catch (error) {
    if (isMissing(error)) return;
    failures.add(file, error);
    return;
  }
  if (!info.isFile() || info.mtimeMs > ctx.now.getTime() - STORE_FILE_GRACE_MS) return;
  if (!ctx.dryRun) {
    try {
      await unlink(file);
    } catch (error) {
      // Another run got there first: it counted the file.
      if (isMissing(error)) return;
      failures.add(file, error);
      return;
    }
  }
  tally.count += 1;
  tally.bytes += info.size;
}
