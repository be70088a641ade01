/**
 * Where an upload's file part goes: a Writable that gathers the parser's
 * chunks (views of the socket's reads, 64 KiB or less) into 1 MiB blocks,
 * writes each block once at its offset and, at the same time, hashes it on a
 * thread of its own. Profiled on a 1 GiB upload, SHA-256 on the main thread
 * cost as much as the parsing; the writes of small chunks were the rest.
 *
 * The blocks are a few slices of one SharedArrayBuffer per upload, reused:
 * the hashing thread reads the same memory the write reads, so nothing is
 * copied or transferred to it, and no block is allocated per MiB (fresh 1 MiB
 * buffers cost page faults and garbage collection on both threads). A block is
 * free again once it is written and hashed; when none is free, the stream
 * takes no more chunks, so memory stays flat whatever the size, even when the
 * hashing thread is slower than the disk. The thread hashes blocks in the
 * order they are handed over, the order of the file.
 */
import type { FileHandle } from "node:fs/promises";
import { Writable } from "node:stream";
import { Worker } from "node:worker_threads";

const BLOCK_BYTES = 1024 * 1024;
/** Blocks being filled, written or hashed, per upload: 5 MiB of shared memory. */
const BLOCKS_PER_UPLOAD = 5;

/** The hashing thread: one per process, started on the first upload, never keeping the process alive. */
const HASHER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const uploads = new Map();
parentPort.on("message", (message) => {
  if (message.type === "open") {
    uploads.set(message.id, { hash: createHash("sha256"), blocks: message.blocks });
  } else if (message.type === "update") {
    const upload = uploads.get(message.id);
    upload.hash.update(new Uint8Array(upload.blocks, message.offset, message.length));
    parentPort.postMessage({ id: message.id, type: "hashed" });
  } else if (message.type === "digest") {
    const upload = uploads.get(message.id);
    uploads.delete(message.id);
    parentPort.postMessage({ id: message.id, type: "digest", digest: upload.hash.digest("hex") });
  } else if (message.type === "drop") {
    uploads.delete(message.id);
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

  /** A hash over slices of `blocks`, which the thread shares. */
  open(blocks: SharedArrayBuffer) {
    const id = this.nextId++;
    const worker = this.thread();
    const unhashed: { resolve: () => void; reject: (error: Error) => void }[] = [];
    this.unhashed.set(id, unhashed);
    worker.postMessage({ type: "open", id, blocks });
    return {
      /** Resolves once the thread has hashed `length` bytes of the blocks at `offset`. */
      update: (offset: number, length: number) =>
        new Promise<void>((resolve, reject) => {
          unhashed.push({ resolve, reject });
          worker.postMessage({ type: "update", id, offset, length });
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
  const shared = new SharedArrayBuffer(BLOCK_BYTES * BLOCKS_PER_UPLOAD);
  const hash = hasher.open(shared);
  /** Offsets in `shared` of the blocks free to fill. */
  const free = Array.from({ length: BLOCKS_PER_UPLOAD }, (_, index) => index * BLOCK_BYTES);
  let blockOffset = free.pop()!;
  let block = Buffer.from(shared, blockOffset, BLOCK_BYTES);
  let filled = 0;
  let offset = 0;
  let freed: (() => void) | undefined;
  /** Writes and hashes, settled in file order; the first failure is kept. */
  let chain: Promise<void> = Promise.resolve();
  let failure: unknown;
  let complete = false;

  const flush = () => {
    if (filled === 0) return;
    const [full, at, length, position] = [block, blockOffset, filled, offset];
    offset += length;
    filled = 0;
    const done = Promise.all([writeFully(file, full, length, position), hash.update(at, length)]);
    // Its failure is taken up by the chain below, once the blocks before it are through.
    done.catch(() => {});
    chain = chain
      .then(() => done)
      .then(() => onBytes(length))
      .catch((error: unknown) => {
        failure ??= error;
      })
      .finally(() => {
        free.push(at);
        freed?.();
      });
  };

  /** The next block to fill, once one is written and hashed. */
  const takeBlock = async () => {
    while (free.length === 0) await new Promise<void>((resolve) => (freed = () => ((freed = undefined), resolve())));
    blockOffset = free.pop()!;
    block = Buffer.from(shared, blockOffset, BLOCK_BYTES);
  };

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
            await takeBlock();
          }
        }
      };
      // A chunk that leaves the block short of full calls back at once, not a microtask later.
      if (chunk.length < BLOCK_BYTES - filled && !failure) {
        filled += chunk.copy(block, filled);
        return callback();
      }
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
