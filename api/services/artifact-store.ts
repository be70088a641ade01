/**
 * The artifact store: a directory of files (source archives, reports) named by
 * storage key. Uploads are written to `tmp/` first and moved into place with a
 * rename once accepted, so a refused or interrupted upload never leaves a file
 * under a key. Mount a shared volume (EFS) at VEGA_ARTIFACT_DIR when several
 * API replicas run.
 */
import { createReadStream, type ReadStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import path from "node:path";

export interface ArtifactStore {
  readonly root: string;
  readonly tmpDir: string;
  /** A fresh path under tmp/ for an upload in progress. */
  tempPath(prefix: string): string;
  /** Moves a finished temporary file under a new storage key and returns the key. */
  commit(tempPath: string, kind: "sources" | "reports"): Promise<string>;
  pathOf(storageKey: string): string;
  openRead(storageKey: string): Promise<{ stream: ReadStream; sizeBytes: number }>;
  /** Deletes a stored file; answers the bytes freed (0 if it was already gone). */
  delete(storageKey: string): Promise<number>;
}

export async function openArtifactStore(root: string): Promise<ArtifactStore> {
  const tmpDir = path.join(root, "tmp");
  await mkdir(tmpDir, { recursive: true });
  const pathOf = (storageKey: string) => {
    const resolved = path.resolve(root, storageKey);
    // Storage keys are ours, but a key must never name a file outside the store.
    if (!resolved.startsWith(root + path.sep)) throw new Error(`Storage key ${storageKey} escapes the artifact store`);
    return resolved;
  };
  return {
    root,
    tmpDir,
    tempPath: (prefix) => path.join(tmpDir, `${prefix}-${randomUUID()}`),
    async commit(tempPath, kind) {
      const now = new Date();
      const month = `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
      const storageKey = `${kind}/${month}/${randomUUID()}`;
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
    async delete(storageKey) {
      const file = pathOf(storageKey);
      try {
        const { size } = await stat(file);
        await rm(file, { force: true });
        return size;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
        throw error;
      }
    },
  };
}
