import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterAll, describe, expect, it } from "vitest";
import { closeUploadHasher, uploadFileSink } from "../../api/http/upload-file.ts";

const dirs: string[] = [];
afterAll(async () => {
  await closeUploadHasher();
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
    const { sink, finished } = uploadFileSink(handle, (bytes) => (counted += bytes));
    const pieces = (function* () {
      for (let at = 0, index = 0; at < data.length; index++) {
        const size = pieceSizes[index % pieceSizes.length];
        yield data.subarray(at, at + size);
        at += size;
      }
    })();
    await pipeline(Readable.from(pieces), sink);
    return { ...(await finished()), counted, stored: await readFile(file) };
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
});
