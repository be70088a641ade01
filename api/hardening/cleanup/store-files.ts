/**
 * Files in the artifact store that no live Artifact row names (orphans: left by
 * a crash between a row's marking and its file's deletion, or written by hand),
 * and upload temporaries in `tmp/` that were abandoned (a client went away, a
 * process died mid-upload).
 *
 * Orphans are found through the store's listing (a directory walk with
 * `opendir`, or S3's ListObjectsV2 a page of 1,000 keys at a time), looked up
 * by storage key CLEANUP_BATCH_SIZE at a time in one query each, and removed
 * with one batch delete per batch (S3: DeleteObjects). Upload temporaries are
 * always local files (both backends stream uploads through `tmp/`). A file
 * modified within the last hour is never touched: an accepted upload is put
 * under its key a moment before its row commits, and an upload in progress
 * keeps writing its temporary file (rename keeps the modification time of the
 * last write; an S3 object's is when its upload completed).
 */
import { lstat, unlink } from "node:fs/promises";
import { STORED_KINDS, walkFiles, type StoredObject } from "../../services/artifact-store.ts";
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

/** Groups an async stream of pages into arrays of up to `size`. */
async function* inBatches<T>(pages: AsyncIterable<T | T[]>, size: number): AsyncGenerator<T[]> {
  let batch: T[] = [];
  for await (const page of pages) {
    for (const item of Array.isArray(page) ? page : [page]) {
      batch.push(item);
      if (batch.length >= size) {
        yield batch;
        batch = [];
      }
    }
  }
  if (batch.length > 0) yield batch;
}

export async function removeOrphanFiles(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const failures = new FileFailures();
  const graceCutoff = ctx.now.getTime() - STORE_FILE_GRACE_MS;
  for (const kind of STORED_KINDS) {
    for await (const objects of inBatches<StoredObject>(ctx.artifacts.list(kind), CLEANUP_BATCH_SIZE)) {
      ctx.signal?.throwIfAborted();
      const old = objects.filter((object) => object.modifiedAt.getTime() <= graceCutoff);
      if (old.length === 0) continue;
      const live = await ctx.prisma.artifact.findMany({
        where: { storageKey: { in: old.map((object) => object.storageKey) }, deletedAt: null },
        select: { storageKey: true },
      });
      const liveKeys = new Set(live.map((artifact) => artifact.storageKey));
      const orphans = old.filter((object) => !liveKeys.has(object.storageKey));
      if (orphans.length === 0) continue;
      if (ctx.dryRun) {
        tally.count += orphans.length;
        for (const orphan of orphans) tally.bytes += orphan.sizeBytes;
        continue;
      }
      const outcome = await ctx.artifacts.deleteMany(orphans.map((orphan) => orphan.storageKey));
      const sizes = new Map(orphans.map((orphan) => [orphan.storageKey, orphan.sizeBytes]));
      tally.count += outcome.deleted.length;
      for (const storageKey of outcome.deleted) tally.bytes += sizes.get(storageKey) ?? 0;
      for (const { storageKey, error } of outcome.failures) failures.add(storageKey, error);
    }
  }
  failures.throwIfAny("orphaned files");
}

export async function removeAbandonedUploads(ctx: CleanupJobContext, tally: JobTally): Promise<void> {
  const failures = new FileFailures();
  for await (const files of inBatches<string>(walkFiles(ctx.artifacts.tmpDir), CLEANUP_BATCH_SIZE)) {
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
