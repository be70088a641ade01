/**
 * Where an upload's file part goes: a Writable that gathers the parser's
 * chunks (views of the socket's reads, 64 KiB or less) into 1 MiB blocks and
 * hands each full block to the store thread, which writes it (in order) and
 * hashes it. The main thread parses every request's body; profiled on a 1 GiB
 * upload, it was busy all through, 0.4 s of it in the write calls and 0.3 s
 * in one message per block to the thread that hashed. Now it copies the bytes
 * into the blocks and flips a flag per block.
 *
 * The blocks are slices of one SharedArrayBuffer per upload, used in turn as a
 * ring; beside them, a small shared array says of each block whether it is
 * full (the store thread's to write and hash) or free (the stream's to fill),
 * and how many bytes it holds. Hand-over is a store and a notify on that
 * memory, in both directions: no message, copy or allocation per block. When
 * the block to fill next is not free yet, the stream takes no more chunks, so
 * memory stays flat whatever the size, even when the disk is slower than the
 * network. The store thread takes each upload's blocks in ring order, the order
 * of the file.
 *
 * Messages remain for what happens once per upload: open, end (answered with
 * the digest), drop, and a write's failure. The store thread writes through
 * the file's descriptor, which the caller closes once `released()` says the
 * thread has let go of it, so that a closed descriptor's number, reused by
 * another file, is never written.
 */
import type { FileHandle } from "node:fs/promises";
import { Writable } from "node:stream";
import { Worker } from "node:worker_threads";

const BLOCK_BYTES = 1024 * 1024;
/** Blocks being filled, written or hashed, per upload: 5 MiB of shared memory. */
const BLOCKS_PER_UPLOAD = 5;
/** A block's state in the control array: the stream's to fill, or the store thread's to write and hash. */
const FREE = 0;
const FULL = 1;

/**
 * The store thread: one per process, started on the first upload, never keeping the process alive.
 * It sleeps on the doorbell (a counter every hand-over and message adds to) while no block is full,
 * and reads its messages synchronously between blocks.
 */
const STORE_THREAD_SOURCE = `
const { parentPort, receiveMessageOnPort, workerData } = require("node:worker_threads");
const { writeSync } = require("node:fs");
const { createHash } = require("node:crypto");
const { BLOCK_BYTES, BLOCKS, FREE, FULL } = workerData.layout;
const doorbell = new Int32Array(workerData.doorbell);
const uploads = new Map();

function receive(message) {
  if (message.type === "open") {
    uploads.set(message.id, {
      fd: message.fd, blocks: message.blocks, control: new Int32Array(message.control),
      hash: createHash("sha256"), next: 0, endsAfter: undefined, failed: false,
    });
  } else if (message.type === "end") {
    const upload = uploads.get(message.id);
    if (upload) upload.endsAfter = message.blocks;
  } else if (message.type === "drop") {
    // Between blocks: nothing of this upload is being written now, and nothing will be.
    uploads.delete(message.id);
    parentPort.postMessage({ id: message.id, type: "dropped" });
  }
}

/** Writes and hashes the upload's next full block, if it has one; answers whether it did. */
function storeNext(id, upload) {
  const index = upload.next % BLOCKS;
  if (Atomics.load(upload.control, index) !== FULL) return false;
  const length = upload.control[BLOCKS + index];
  const block = new Uint8Array(upload.blocks, index * BLOCK_BYTES, length);
  if (!upload.failed) {
    try {
      // In order, at the descriptor's offset (a new file's, from 0): works for any descriptor, a pipe's too.
      for (let done = 0; done < length; ) done += writeSync(upload.fd, block, done, length - done);
      upload.hash.update(block);
    } catch (error) {
      // The stream learns of it at its next hand-over; the blocks are still released, so it never waits.
      upload.failed = true;
      parentPort.postMessage({ id, type: "failed", message: error.message, code: error.code });
    }
  }
  upload.next++;
  Atomics.store(upload.control, index, FREE);
  Atomics.notify(upload.control, index);
  return true;
}

for (;;) {
  const rung = Atomics.load(doorbell, 0);
  for (let message; (message = receiveMessageOnPort(parentPort)); ) receive(message.message);
  let stored = false;
  for (const [id, upload] of uploads) {
    if (storeNext(id, upload)) stored = true;
    if (upload.endsAfter === upload.next) {
      uploads.delete(id);
      parentPort.postMessage(upload.failed ? { id, type: "dropped" } : { id, type: "digest", digest: upload.hash.digest("hex") });
    }
  }
  if (!stored) Atomics.wait(doorbell, 0, rung);
}
`;

type StoreReply =
  | { id: number; type: "digest"; digest: string }
  | { id: number; type: "dropped" }
  | { id: number; type: "failed"; message: string; code?: string };

interface UploadWaiters {
  /** Settles once the thread has let go of the upload: its digest, or undefined when it was dropped. */
  released: (reply: { digest?: string; error?: Error }) => void;
  failed: (error: Error) => void;
}

class StoreThread {
  private worker: Worker | undefined;
  private readonly doorbell = new Int32Array(new SharedArrayBuffer(4));
  private nextId = 0;
  private readonly uploads = new Map<number, UploadWaiters>();

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(STORE_THREAD_SOURCE, {
      eval: true,
      workerData: { doorbell: this.doorbell.buffer, layout: { BLOCK_BYTES, BLOCKS: BLOCKS_PER_UPLOAD, FREE, FULL } },
    });
    worker.unref();
    worker.on("message", (reply: StoreReply) => {
      const waiters = this.uploads.get(reply.id);
      if (!waiters) return;
      if (reply.type === "failed") return waiters.failed(Object.assign(new Error(reply.message), { code: reply.code }));
      this.uploads.delete(reply.id);
      waiters.released(reply.type === "digest" ? { digest: reply.digest } : {});
    });
    const failAll = (error: Error) => {
      if (this.worker === worker) this.worker = undefined;
      // A thread that is gone holds no descriptor: every upload is released, with the error.
      for (const waiters of this.uploads.values()) {
        waiters.failed(error);
        waiters.released({ error });
      }
      this.uploads.clear();
    };
    worker.on("error", failAll);
    worker.on("exit", (code) => failAll(new Error(`the upload store thread exited with ${code}`)));
    this.worker = worker;
    return worker;
  }

  private ring() {
    Atomics.add(this.doorbell, 0, 1);
    Atomics.notify(this.doorbell, 0);
  }

  /** Ends the thread (the app closes); the next upload starts another. */
  async close() {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  open(fd: number, blocks: SharedArrayBuffer, control: SharedArrayBuffer, waiters: UploadWaiters) {
    const id = this.nextId++;
    const worker = this.thread();
    this.uploads.set(id, waiters);
    worker.postMessage({ type: "open", id, fd, blocks, control });
    this.ring();
    return {
      /** A block was marked full. */
      handedOver: () => this.ring(),
      /** No more blocks after the first `blocks`: the digest follows the last one. */
      end: (blocks: number) => {
        worker.postMessage({ type: "end", id, blocks });
        this.ring();
      },
      /** Stop: the blocks not yet stored are not written. */
      drop: () => {
        worker.postMessage({ type: "drop", id });
        this.ring();
      },
    };
  }
}

const storeThread = new StoreThread();

/** Ends the store thread, so that a closing process has nothing of it left running. */
export const closeUploadStoreThread = () => storeThread.close();

/** A Writable into `file` (written in order from its offset: a new file's, 0); `finished()` answers the size and SHA-256 once the stream has finished. */
export function uploadFileSink(file: FileHandle, onBytes: (bytes: number) => void) {
  const blocks = new SharedArrayBuffer(BLOCK_BYTES * BLOCKS_PER_UPLOAD);
  /** Per block: its state (FREE or FULL), then, after all the states, its length. */
  const control = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * BLOCKS_PER_UPLOAD * 2));
  let failure: Error | undefined;
  let release!: (reply: { digest?: string; error?: Error }) => void;
  const released = new Promise<{ digest?: string; error?: Error }>((resolve) => (release = resolve));
  const upload = storeThread.open(file.fd, blocks, control.buffer as SharedArrayBuffer, {
    released: (reply) => release(reply),
    failed: (error) => (failure ??= error),
  });
  // Once the thread has let go of the upload (or is gone), every block is the stream's again: a
  // write waiting for one wakes, sees the upload over and stops.
  released.then(() => {
    for (let index = 0; index < BLOCKS_PER_UPLOAD; index++) {
      Atomics.store(control, index, FREE);
      Atomics.notify(control, index);
    }
  });
  /** Blocks handed over so far; the one being filled is the next in the ring. */
  let handed = 0;
  let block = Buffer.from(blocks, 0, BLOCK_BYTES);
  let filled = 0;
  let size = 0;
  let ended = false;

  /** Waits until the block to fill next is free again (the thread stored what it held). */
  const nextBlock = async () => {
    const index = handed % BLOCKS_PER_UPLOAD;
    while (Atomics.load(control, index) === FULL) {
      const wait = Atomics.waitAsync(control, index, FULL);
      if (wait.async) await wait.value;
    }
    block = Buffer.from(blocks, index * BLOCK_BYTES, BLOCK_BYTES);
  };

  const handOver = () => {
    const index = handed % BLOCKS_PER_UPLOAD;
    control[BLOCKS_PER_UPLOAD + index] = filled;
    Atomics.store(control, index, FULL);
    upload.handedOver();
    handed++;
    size += filled;
    onBytes(filled);
    filled = 0;
  };

  const sink = new Writable({
    highWaterMark: BLOCK_BYTES,
    write(chunk: Buffer, _encoding, callback) {
      if (failure) return callback(failure);
      // A chunk that leaves the block short of full calls back at once, not a microtask later.
      if (chunk.length < BLOCK_BYTES - filled) {
        filled += chunk.copy(block, filled);
        return callback();
      }
      (async () => {
        for (let at = 0; at < chunk.length; ) {
          const taken = chunk.copy(block, filled, at);
          filled += taken;
          at += taken;
          if (filled === BLOCK_BYTES) {
            handOver();
            await nextBlock();
            if (failure || sink.destroyed) return;
          }
        }
      })().then(() => callback(failure), callback);
    },
    final(callback) {
      if (filled > 0) handOver();
      ended = true;
      upload.end(handed);
      released.then(({ digest, error }) => callback(failure ?? error ?? (digest === undefined ? new Error("the upload was not stored") : undefined)));
    },
    destroy(error, callback) {
      // A finished stream is destroyed too (autoDestroy): then the thread has already let go of the file.
      if (!ended) upload.drop();
      released.then(() => callback(error));
    },
  });
  return {
    sink,
    /**
     * Resolves once the store thread will not touch the file's descriptor again, whichever way the
     * stream ended: close the file only then (a failed pipeline settles before its streams are
     * destroyed, and the thread may still be writing a block).
     */
    released: async () => void (await released),
    /** After the stream finished: the bytes written and their SHA-256 (hex). */
    async finished(): Promise<{ sizeBytes: number; sha256: string }> {
      const { digest, error } = await released;
      if (digest === undefined) throw failure ?? error ?? new Error("the upload was not stored");
      return { sizeBytes: size, sha256: digest };
    },
  };
}
