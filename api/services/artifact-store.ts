/**
 * The artifact store: files (source archives, reports) named by storage key,
 * behind one interface with two backends chosen by VEGA_ARTIFACT_STORE:
 *
 * - `local` (the embedded default): a directory (VEGA_ARTIFACT_DIR, default
 *   <VEGA_DATA_DIR>/artifacts). Accepted uploads are renamed into place.
 * - `s3://bucket/prefix` (several API replicas): objects under the prefix
 *   (s3-artifact-store.ts). Archives never depend on which replica took them.
 *
 * Both stream uploads to a temporary file under the local `tmp/` first (hashed,
 * cut at the size limit and inspected there) and move the file under a key
 * only once accepted (`commit`), so a refused or interrupted upload never
 * leaves a file, or an object, under a key.
 */
import { createReadStream } from "node:fs";
import type { Dirent } from "node:fs";
import { lstat, mkdir, opendir, rename, rm, stat } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Config } from "../../shared/config.ts";
import type { Logger } from "../../shared/logger.ts";

/** The directories (key prefixes) under which committed files live. */
export const STORED_KINDS = ["sources", "reports"] as const;
export type StoredKind = (typeof STORED_KINDS)[number];

/** One stored file, as a listing reports it. */
export interface StoredObject {
  storageKey: string;
  sizeBytes: number;
  modifiedAt: Date;
}

/** What a batch delete did: the keys it removed, and those it could not (a key already gone is in neither). */
export interface DeleteOutcome {
  deleted: string[];
  failures: { storageKey: string; error: unknown }[];
}

/** How a runner downloads an archive: a presigned URL (S3), or the API's own route with its token (local). */
export type DownloadLocation = { kind: "presigned"; url: string; expiresAt: Date } | { kind: "api" };

export interface ArtifactStore {
  readonly kind: "local" | "s3";
  /** Where the store keeps files, for logs (a directory or an s3:// URL). */
  readonly location: string;
  /** The local directory uploads stream into before they are accepted (both backends). */
  readonly tmpDir: string;
  /** A fresh path under tmp/ for an upload in progress. */
  tempPath(prefix: string): string;
  /** Moves a finished temporary file under a new storage key and returns the key; the temporary file is gone afterwards. */
  commit(tempPath: string, kind: StoredKind): Promise<string>;
  /** Reads a stored file; a missing one fails with code ENOENT. */
  openRead(storageKey: string): Promise<{ stream: Readable; sizeBytes: number }>;
  /** The bytes a stored file holds: 0 if it is gone. */
  sizeOf(storageKey: string): Promise<number>;
  /** Deletes a stored file; answers the bytes freed (0 if it was already gone). */
  delete(storageKey: string): Promise<number>;
  /** Deletes many stored files at once (S3: DeleteObjects, 1,000 keys a call). */
  deleteMany(storageKeys: readonly string[]): Promise<DeleteOutcome>;
  /** Every stored file under one kind, a page at a time (never the whole listing in memory). */
  list(kind: StoredKind): AsyncGenerator<StoredObject[]>;
  /** Where a runner fetches the file from. */
  downloadLocation(storageKey: string, ttlSeconds: number): Promise<DownloadLocation>;
}

/** A new storage key: kind/yyyy-mm/uuid (the month keeps listings and lifecycle rules readable). */
export function newStorageKey(kind: StoredKind, now = new Date()): string {
  const month = `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
  return `${kind}/${month}/${randomUUID()}`;
}

/** The store VEGA_ARTIFACT_STORE names. */
export async function openConfiguredArtifactStore(
  config: Pick<Config, "artifactStore" | "artifactStoreDir" | "s3EndpointUrl" | "s3ForcePathStyle">,
  log?: Pick<Logger, "info">,
): Promise<ArtifactStore> {
  if (config.artifactStore.kind === "local") return openArtifactStore(config.artifactStoreDir);
  // Loaded only when configured: a local deployment never loads the S3 SDK.
  const { openS3ArtifactStore } = await import("./s3-artifact-store.ts");
  const store = await openS3ArtifactStore({
    bucket: config.artifactStore.bucket,
    prefix: config.artifactStore.prefix,
    tmpDir: path.join(config.artifactStoreDir, "tmp"),
    endpoint: config.s3EndpointUrl,
    forcePathStyle: config.s3ForcePathStyle,
  });
  log?.info({ artifactStore: store.location }, "artifacts are kept in S3");
  return store;
}

const CONCURRENT_FILE_OPERATIONS = 32;

export const isMissingFile = (error: unknown) => (error as NodeJS.ErrnoException)?.code === "ENOENT";

/** Runs `work` over `items`, at most `limit` at a time. */
export async function eachConcurrently<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]);
  });
  await Promise.all(lanes);
}

/** Regular files under `dir`, depth first, read one directory entry batch at a time (never a whole tree in memory). */
export async function* walkFiles(dir: string): AsyncGenerator<string> {
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.pop()!;
    let entries: AsyncIterable<Dirent>;
    try {
      entries = await opendir(current);
    } catch (error) {
      if (isMissingFile(error)) continue;
      throw error;
    }
    for await (const entry of entries) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile()) yield full;
    }
  }
}

/** A local listing page: as many files as an S3 ListObjectsV2 page holds. */
const LIST_PAGE_SIZE = 1000;

/** The local backend, with what only a directory has: its root and a key's file. */
export interface LocalArtifactStore extends ArtifactStore {
  readonly root: string;
  pathOf(storageKey: string): string;
}

export async function openArtifactStore(root: string): Promise<LocalArtifactStore> {
  const tmpDir = path.join(root, "tmp");
  await mkdir(tmpDir, { recursive: true });
  const pathOf = (storageKey: string) => {
    const resolved = path.resolve(root, storageKey);
    // Storage keys are ours, but a key must never name a file outside the store.
    if (!resolved.startsWith(root + path.sep)) throw new Error(`Storage key ${storageKey} escapes the artifact store`);
    return resolved;
  };
  const sizeOf = async (storageKey: string) => {
    try {
      return (await stat(pathOf(storageKey))).size;
    } catch (error) {
      if (isMissingFile(error)) return 0;
      throw error;
    }
  };
  const storageKeyOf = (file: string) => path.relative(root, file).split(path.sep).join("/");
  return {
    kind: "local",
    location: root,
    root,
    tmpDir,
    tempPath: (prefix) => path.join(tmpDir, `${prefix}-${randomUUID()}`),
    async commit(tempPath, kind) {
      const storageKey = newStorageKey(kind);
      await mkdir(path.dirname(pathOf(storageKey)), { recursive: true });
      await rename(tempPath, pathOf(storageKey));
      return storageKey;
    },
    pathOf,
    async openRead(storageKey) {
      const file = pathOf(storageKey);
      const { size } = await stat(file);
      return { stream: createReadStream(file), sizeBytes: size };
    },
    sizeOf,
    async delete(storageKey) {
      const file = pathOf(storageKey);
      try {
        const { size } = await stat(file);
        await rm(file, { force: true });
        return size;
      } catch (error) {
        if (isMissingFile(error)) return 0;
        throw error;
      }
    },
    async deleteMany(storageKeys) {
      const outcome: DeleteOutcome = { deleted: [], failures: [] };
      await eachConcurrently(storageKeys, CONCURRENT_FILE_OPERATIONS, async (storageKey) => {
        try {
          // rm, not unlink: a directory under a key fails as "Path is a directory", as `delete` reports it.
          await rm(pathOf(storageKey));
          outcome.deleted.push(storageKey);
        } catch (error) {
          // Already gone (another run got there first): that run counted it.
          if (!isMissingFile(error)) outcome.failures.push({ storageKey, error });
        }
      });
      return outcome;
    },
    async *list(kind) {
      let page: string[] = [];
      const describe = async (files: string[]) => {
        const objects: StoredObject[] = [];
        await eachConcurrently(files, CONCURRENT_FILE_OPERATIONS, async (file) => {
          try {
            const info = await lstat(file);
            if (info.isFile()) objects.push({ storageKey: storageKeyOf(file), sizeBytes: info.size, modifiedAt: info.mtime });
          } catch (error) {
            if (!isMissingFile(error)) throw error;
          }
        });
        return objects;
      };
      for await (const file of walkFiles(path.join(root, kind))) {
        page.push(file);
        if (page.length >= LIST_PAGE_SIZE) {
          yield await describe(page);
          page = [];
        }
      }
      if (page.length > 0) yield await describe(page);
    },
    downloadLocation: async () => ({ kind: "api" }),
  };
}
