import { createHash, randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { pipeline } from "node:stream/promises";
import { afterAll, describe, expect, it } from "vitest";
import { closeUploadStoreThread, uploadFileSink } from "../../api/http/upload-file.ts";

const run = promisify(execFile);
const dirs: string[] = [];
afterAll(async () => {
  await closeUploadStoreThread();
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** Streams `data` in pieces of the given sizes (cycled) into a sink on a new file; answers what it reported and the file. */
async function upload(data: Buffer, pieceSizes: number[]) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-sink-"));
  dirs.push(dir);
  const file = path.join(dir, "upload");
  const handle = await open(file, "wx");
  let counted = 0;
  try {
    const { sink, finished, released } = uploadFileSink(handle, (bytes) => (counted += bytes));
    const pieces = (function* () {
      for (let at = 0, index = 0; at < data.length; index++) {
        const size = pieceSizes[index % pieceSizes.length];
        yield data.subarray(at, at + size);
        at += size;
      }
    })();
    await pipeline(Readable.from(pieces), sink);
    const result = { ...(await finished()), counted };
    await released();
    return { ...result, stored: await readFile(file) };
  } finally {
    await handle.close();
  }
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describe("the upload file sink", () => {
  it("stores and hashes a file of many blocks exactly, whatever the pieces it arrives in", async () => {
    // 13.3 MiB: more blocks than the sink holds at once, and a last block that is not full.
    const data = randomBytes(13 * 1024 * 1024 + 300_000);
    for (const pieceSizes of [[65536], [1], [1024 * 1024], [3 * 1024 * 1024 + 7], [7, 65536, 1_000_003, 13]]) {
      // One-byte pieces only over the first 200 KB: a million writes would time the test, not the sink.
      const sample = pieceSizes[0] === 1 ? data.subarray(0, 200_000) : data;
      const result = await upload(sample, pieceSizes);
      expect(result.sizeBytes, String(pieceSizes)).toBe(sample.length);
      expect(result.counted).toBe(sample.length);
      expect(result.sha256).toBe(sha256(sample));
      expect(result.stored.equals(sample)).toBe(true);
    }
  });

  it("hashes an empty file and keeps uploads running side by side apart", async () => {
    const [empty, first, second] = await Promise.all([
      upload(Buffer.alloc(0), [1]),
      upload(Buffer.alloc(3 * 1024 * 1024 + 5, 1), [65536]),
      upload(Buffer.alloc(5 * 1024 * 1024 + 9, 2), [50_000]),
    ]);
    expect(empty).toMatchObject({ sizeBytes: 0, sha256: sha256(Buffer.alloc(0)) });
    expect(first.sha256).toBe(sha256(Buffer.alloc(3 * 1024 * 1024 + 5, 1)));
    expect(second.sha256).toBe(sha256(Buffer.alloc(5 * 1024 * 1024 + 9, 2)));
  });

  it("fails the stream, without hanging, when the store thread cannot write", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "vega-sink-"));
    dirs.push(dir);
    await writeFile(path.join(dir, "read-only"), "");
    // A descriptor open for reading only: the thread's first write fails (EBADF).
    const handle = await open(path.join(dir, "read-only"), "r");
    try {
      const { sink } = uploadFileSink(handle, () => {});
      const pieces = (function* () {
        for (let index = 0; index < 40; index++) yield Buffer.alloc(256 * 1024, index);
      })();
      await expect(pipeline(Readable.from(pieces), sink)).rejects.toMatchObject({ code: "EBADF" });
    } finally {
      await handle.close();
    }
  });

  it("says when the store thread has let go of the descriptor of a failed stream, not before", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "vega-sink-"));
    dirs.push(dir);
    // A FIFO nobody reads yet: the store thread's first write blocks once the pipe's buffer is full.
    const fifo = path.join(dir, "fifo");
    await run("mkfifo", [fifo]);
    const reader = await open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = await open(fifo, "w");
    const { sink, released } = uploadFileSink(writer, () => {});
    const source = new Readable({ read() {} });
    for (let index = 0; index < 4; index++) source.push(Buffer.alloc(1024 * 1024, 1));
    const done = pipeline(source, sink);
    await new Promise((resolve) => setTimeout(resolve, 100));
    source.destroy(new Error("client gone"));
    await expect(done).rejects.toThrow("client gone");
    // The thread is still in its write: closing the descriptor now would let its number be reused under it.
    const pending = await Promise.race([released().then(() => "released"), new Promise((resolve) => setTimeout(resolve, 300, "pending"))]);
    expect(pending).toBe("pending");
    let read = 0;
    const drain = (async () => {
      const buffer = Buffer.alloc(1024 * 1024);
      for (;;) {
        const { bytesRead } = await reader.read(buffer, 0, buffer.length, null).catch((error) => {
          if (error.code === "EAGAIN") return { bytesRead: -1 };
          throw error;
        });
        if (bytesRead === 0) return;
        if (bytesRead > 0) read += bytesRead;
        else await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    await released();
    await writer.close();
    await drain;
    await reader.close();
    // The block being written when the client went away is finished; the full ones after it are dropped.
    expect(read).toBe(1024 * 1024);
  });

  it("fails an upload in progress when the store thread is ended (the server closes), and the next upload starts another", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "vega-sink-"));
    dirs.push(dir);
    const handle = await open(path.join(dir, "cut"), "wx");
    try {
      const { sink } = uploadFileSink(handle, () => {});
      const source = new Readable({ read() {} });
      const done = pipeline(source, sink);
      source.push(Buffer.alloc(3 * 1024 * 1024, 2));
      await closeUploadStoreThread();
      source.push(Buffer.alloc(3 * 1024 * 1024, 3));
      source.push(null);
      await expect(done).rejects.toThrow(/store thread exited/);
    } finally {
      await handle.close();
    }
    const after = await upload(Buffer.alloc(2 * 1024 * 1024 + 1, 4), [65536]);
    expect(after.sha256).toBe(sha256(Buffer.alloc(2 * 1024 * 1024 + 1, 4)));
  });
});
