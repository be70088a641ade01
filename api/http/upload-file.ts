/**
 * Where an upload's file part goes: a Writable that gathers the socket's small
 * chunks (busboy passes on what each read brought, 64 KiB or less) into 1 MiB
 * blocks, writes each block once at its offset, and hashes it on a thread of
 * its own, in parallel with the next block's parsing and writing. Profiled on a
 * 1 GiB upload, SHA-256 on the main thread cost as much as busboy's parsing;
 * the writes of small chunks were the rest.
 *
 * A block is handed to the hashing thread (transferred, not copied) once its
 * write is done, in the order of the file; so the digest is of the bytes as
 * written. A block counts as in flight until the thread says it hashed it, and
 * four blocks at most are in flight: memory stays flat whatever the size, even
 * when the hashing thread is slower than the disk (it was: without its
 * acknowledgements, a 1 GiB upload queued ~900 MiB of blocks for it).
 */
import type { FileHandle } from "node:fs/promises";
import { Writable } from "node:stream";
import { Worker } from "node:worker_threads";

const BLOCK_BYTES = 1024 * 1024;
/** Blocks written but not yet hashed, or being written, before the stream stops taking chunks. */
const MAX_BLOCKS_IN_FLIGHT = 4;

/** The hashing thread: one per process, started on the first upload, never keeping the process alive. */
const HASHER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const hashes = new Map();
parentPort.on("message", (message) => {
  if (message.type === "update") {
    let hash = hashes.get(message.id);
    if (!hash) hashes.set(message.id, (hash = createHash("sha256")));
    hash.update(new Uint8Array(message.buffer, 0, message.length));
    parentPort.postMessage({ id: message.id, type: "hashed" });
  } else if (message.type === "digest") {
    const hash = hashes.get(message.id) ?? createHash("sha256");
    hashes.delete(message.id);
    parentPort.postMessage({ id: message.id, type: "digest", digest: hash.digest("hex") });
  } else if (message.type === "drop") {
    hashes.delete(message.id);
  }
});
`;

class Hasher {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (digest: string) => void; reject: (error: Error) => void }>();
  /** Per upload, the blocks handed over and not yet hashed, oldest first (the thread hashes in order). */
  private readonly unhashed = new Map<number, { resolve: () => void; reject: (error: Error) => void }[]>();

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(HASHER_SOURCE, { eval: true });
    worker.unref();
    worker.on("message", (message: { id: number; type: "hashed" } | { id: number; type: "digest"; digest: string }) => {
      if (message.type === "hashed") {
        this.unhashed.get(message.id)?.shift()?.resolve();
        return;
      }
      this.pending.get(message.id)?.resolve(message.digest);
      this.pending.delete(message.id);
    });
    const failAll = (error: Error) => {
      if (this.worker === worker) this.worker = undefined;
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
      for (const blocks of this.unhashed.values()) for (const { reject } of blocks.splice(0)) reject(error);
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`the upload hashing thread exited with ${code}`)));
    this.worker = worker;
    return worker;
  }

  /** Ends the thread (the app closes); the next upload starts another. */
  async close() {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  open() {
    const id = this.nextId++;
    const worker = this.thread();
    const unhashed: { resolve: () => void; reject: (error: Error) => void }[] = [];
    this.unhashed.set(id, unhashed);
    return {
      /** Hands the block over (it is detached here afterwards); resolves once the thread has hashed it. */
      update: (block: Buffer, length: number) =>
        new Promise<void>((resolve, reject) => {
          unhashed.push({ resolve, reject });
          worker.postMessage({ type: "update", id, buffer: block.buffer, length }, [block.buffer as ArrayBuffer]);
        }),
      digest: () =>
        new Promise<string>((resolve, reject) => {
          this.unhashed.delete(id);
          this.pending.set(id, { resolve, reject });
          worker.postMessage({ type: "digest", id });
        }),
      drop: () => {
        this.unhashed.delete(id);
        worker.postMessage({ type: "drop", id });
      },
    };
  }
}

const hasher = new Hasher();

/** Ends the hashing thread, so that a closing process has nothing of it left running. */
export const closeUploadHasher = () => hasher.close();

/** A Writable into `file` (written from offset 0); `finished()` answers the size and SHA-256 once the stream has finished. */
export function uploadFileSink(file: FileHandle, onBytes: (bytes: number) => void) {
  const hash = hasher.open();
  let block = Buffer.allocUnsafe(BLOCK_BYTES);
  let filled = 0;
  let offset = 0;
  let inFlight = 0;
  let waiting: (() => void) | undefined;
  /** Writes then hand-overs, chained in file order; rejects on the first failed write. */
  let chain: Promise<void> = Promise.resolve();
  let failure: unknown;
  let complete = false;

  const flush = () => {
    if (filled === 0) return;
    const [full, length, position] = [block, filled, offset];
    offset += length;
    block = Buffer.allocUnsafe(BLOCK_BYTES);
    filled = 0;
    inFlight++;
    const written = writeFully(file, full, length, position);
    // Its failure is taken up by the chain below, once the blocks before it are through.
    written.catch(() => {});
    chain = chain
      .then(() => written)
      .then(() => {
        onBytes(length);
        return hash.update(full, length);
      })
      .catch((error: unknown) => {
        failure ??= error;
      })
      .finally(() => {
        inFlight--;
        waiting?.();
      });
  };

  const room = () =>
    inFlight < MAX_BLOCKS_IN_FLIGHT ? Promise.resolve() : new Promise<void>((resolve) => (waiting = () => ((waiting = undefined), resolve())));

  const sink = new Writable({
    highWaterMark: BLOCK_BYTES,
    write(chunk: Buffer, _encoding, callback) {
      let at = 0;
      const fill = async () => {
        while (at < chunk.length) {
          if (failure) throw failure;
          const taken = chunk.copy(block, filled, at);
          filled += taken;
          at += taken;
          if (filled === BLOCK_BYTES) {
            flush();
            await room();
          }
        }
      };
      fill().then(() => callback(failure as Error | undefined), callback);
    },
    final(callback) {
      flush();
      chain.then(() => {
        complete = failure === undefined;
        callback(failure as Error | undefined);
      });
    },
    destroy(error, callback) {
      chain.finally(() => {
        // A finished stream is destroyed too (autoDestroy): its hash waits for finished().
        if (!complete) hash.drop();
        callback(error);
      });
    },
  });
  return {
    sink,
    /** After the stream finished: the bytes written and their SHA-256 (hex). */
    async finished(): Promise<{ sizeBytes: number; sha256: string }> {
      return { sizeBytes: offset, sha256: await hash.digest() };
    },
  };
}

async function writeFully(file: FileHandle, buffer: Buffer, length: number, position: number) {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await file.write(buffer, done, length - done, position + done);
    done += bytesWritten;
  }
}
