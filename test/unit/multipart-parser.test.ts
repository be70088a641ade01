import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import type { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { MultipartError, MultipartParser, type FilePartInfo, type MultipartLimits } from "../../api/http/multipart-parser.ts";

const BOUNDARY = "----vega-test-boundary";
const CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;
const LIMITS: MultipartLimits = { fileSize: 1024 * 1024, fieldSize: 1024, files: 1, fields: 2 };

interface Parsed {
  fields: [string, string][];
  files: { name: string; info: FilePartInfo; data: Buffer; overLimit: boolean }[];
  error?: Error;
}

/** Feeds `chunks` to a parser one write at a time; settles when it finishes or fails. */
async function parse(chunks: Buffer[], limits = LIMITS, contentType = CONTENT_TYPE): Promise<Parsed> {
  const parsed: Parsed = { fields: [], files: [] };
  const reads: Promise<void>[] = [];
  const parser = new MultipartParser(contentType, limits, {
    field: (name, value) => parsed.fields.push([name, value]),
    file: (name, stream, info) => {
      const file = { name, info, data: Buffer.alloc(0), overLimit: false };
      parsed.files.push(file);
      stream.on("limit", () => (file.overLimit = true));
      reads.push(
        (async () => {
          const pieces: Buffer[] = [];
          for await (const piece of stream) pieces.push(piece as Buffer);
          file.data = Buffer.concat(pieces);
        })().catch(() => {}),
      );
    },
  });
  const outcome = new Promise<void>((resolve) => {
    parser.on("finish", resolve);
    parser.on("error", (error) => {
      parsed.error = error;
      resolve();
    });
  });
  for (const chunk of chunks) {
    if (parser.destroyed) break;
    if (!parser.write(chunk)) await once(parser, "drain").catch(() => {});
  }
  if (!parser.destroyed) parser.end();
  await outcome;
  await Promise.all(reads);
  return parsed;
}

const part = (headers: string, body: string | Buffer) => Buffer.concat([Buffer.from(`--${BOUNDARY}\r\n${headers}\r\n\r\n`), Buffer.from(body), Buffer.from("\r\n")]);
const form = (...parts: Buffer[]) => Buffer.concat([...parts, Buffer.from(`--${BOUNDARY}--\r\n`)]);
const field = (name: string, value: string) => part(`Content-Disposition: form-data; name="${name}"`, value);
const file = (name: string, filename: string, data: Buffer, type = "application/zip") =>
  part(`Content-Disposition: form-data; name="${name}"; filename="${filename}"\r\nContent-Type: ${type}`, data);

/** Bytes that look like the start of a delimiter without being one, at every length. */
const nearDelimiters = Buffer.concat(
  Array.from({ length: BOUNDARY.length + 4 }, (_, length) => Buffer.concat([Buffer.from(`\r\n--${BOUNDARY}`.slice(0, length)), Buffer.from("x")])),
);

const expectRefused = (parsed: Parsed, message: RegExp) => {
  expect(parsed.error).toBeInstanceOf(MultipartError);
  expect(parsed.error?.message).toMatch(message);
};

describe("the multipart parser", () => {
  const body = form(field("operations", '{"query":"{ viewer { id } }"}'), field("map", '{"0":["variables.file"]}'), file("0", "source.zip", nearDelimiters));
  const expected: Parsed = {
    fields: [
      ["operations", '{"query":"{ viewer { id } }"}'],
      ["map", '{"0":["variables.file"]}'],
    ],
    files: [{ name: "0", info: { filename: "source.zip", mimeType: "application/zip" }, data: nearDelimiters, overLimit: false }],
  };

  it("reads the same fields and file whichever byte the body is split at", async () => {
    for (let split = 0; split <= body.length; split++) {
      expect(await parse([body.subarray(0, split), body.subarray(split)]), `split at ${split}`).toEqual(expected);
    }
  });

  it("reads a body sent one byte at a time", async () => {
    expect(await parse([...body].map((byte) => Buffer.from([byte])))).toEqual(expected);
  });

  it("passes a large file's bytes through unchanged, ignoring the preamble and the epilogue", async () => {
    const data = Buffer.concat([randomBytes(700 * 1024), nearDelimiters, randomBytes(300 * 1024)]);
    const whole = Buffer.concat([Buffer.from("a preamble\r\n"), form(file("0", "big.zip", data)), Buffer.from("an epilogue")]);
    const chunks = Array.from({ length: Math.ceil(whole.length / 65536) }, (_, index) => whole.subarray(index * 65536, (index + 1) * 65536));
    const parsed = await parse(chunks);
    expect(parsed.error).toBeUndefined();
    expect(createHash("sha256").update(parsed.files[0].data).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
  });

  it("holds the body back while the file's reader takes nothing, and goes on when it reads", async () => {
    let stream: Readable | undefined;
    const parser = new MultipartParser(CONTENT_TYPE, { ...LIMITS, fileSize: 64 * 1024 * 1024 }, { field: () => {}, file: (_name, fileStream) => (stream = fileStream) });
    const data = randomBytes(8 * 1024 * 1024);
    const whole = form(file("0", "big.zip", data));
    let taken = 0;
    const writes: Promise<void>[] = [];
    for (let at = 0; at < whole.length; at += 65536) {
      const chunk = whole.subarray(at, at + 65536);
      writes.push(new Promise<void>((resolve, reject) => parser.write(chunk, (error) => (error ? reject(error) : ((taken += chunk.length), resolve())))));
    }
    parser.end();
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The reader has not started: the parser took what fills the stream's buffer, and waits.
    expect(stream).toBeDefined();
    expect(taken).toBeLessThan(whole.length / 4);
    const pieces: Buffer[] = [];
    for await (const piece of stream!) pieces.push(piece as Buffer);
    await Promise.all(writes);
    expect(taken).toBe(whole.length);
    expect(Buffer.concat(pieces).equals(data)).toBe(true);
  });

  it("passes on no more of a file than its limit, and says so on the file's stream", async () => {
    const parsed = await parse([form(file("0", "big.zip", randomBytes(3000)))], { ...LIMITS, fileSize: 1000 });
    expect(parsed.error).toBeUndefined();
    expect(parsed.files[0].overLimit).toBe(true);
    expect(parsed.files[0].data.length).toBeLessThanOrEqual(1000);
  });

  it("reads file names without their directories, quoted escapes and RFC 5987's filename*", async () => {
    const parsed = await parse([
      form(
        part('Content-Disposition: form-data; name="0"; filename="C:\\\\Users\\\\me\\\\..\\\\src.zip"', "a"),
      ),
    ]);
    expect(parsed.files[0].info.filename).toBe("src.zip");
    const extended = await parse([form(part(`Content-Disposition: form-data; name="0"; filename="fallback.zip"; filename*=UTF-8''%C3%A9t%C3%A9.zip`, "a"))]);
    expect(extended.files[0].info).toEqual({ filename: "été.zip", mimeType: "application/octet-stream" });
    const quoted = await parse([form(part('content-disposition: FORM-DATA ; name = "a \\"b\\"" ; filename="../../etc/passwd"', "a"))]);
    expect(quoted.files[0]).toMatchObject({ name: 'a "b"', info: { filename: "passwd" } });
  });

  it("refuses a Content-Type without a usable boundary", () => {
    for (const contentType of ["multipart/form-data", "multipart/form-data; boundary=", `multipart/form-data; boundary=${"x".repeat(71)}`, undefined]) {
      expect(() => new MultipartParser(contentType, LIMITS, { field: () => {}, file: () => {} }), String(contentType)).toThrow(MultipartError);
    }
    expect(() => new MultipartParser('multipart/form-data; charset=utf-8; boundary="quoted boundary"', LIMITS, { field: () => {}, file: () => {} })).not.toThrow();
  });

  it("refuses parts without a form-data disposition or a name, and headers over 16 KiB", async () => {
    expectRefused(await parse([form(part("Content-Type: text/plain", "a"))]), /Content-Disposition: form-data/);
    expectRefused(await parse([form(part("Content-Disposition: attachment; name=\"a\"", "a"))]), /Content-Disposition: form-data/);
    expectRefused(await parse([form(part("Content-Disposition: form-data", "a"))]), /no `name`/);
    expectRefused(await parse([form(part("no colon here", "a"))]), /header line has no name/);
    expectRefused(await parse([form(part(`Content-Disposition: form-data; name="a"\r\nX-Padding: ${"p".repeat(17 * 1024)}`, "a"))]), /over 16 KiB/);
    // Headers that never end are refused once over the bound, not held in memory.
    const endless = [Buffer.from(`--${BOUNDARY}\r\n`), ...Array.from({ length: 64 }, () => Buffer.from("X-A: b\r\n".repeat(512)))];
    expectRefused(await parse(endless), /over 16 KiB/);
  });

  it("refuses more fields or files than its limits, and a field over its size", async () => {
    expectRefused(await parse([form(field("a", "1"), field("b", "2"), field("c", "3"))]), /2 fields at most/);
    expectRefused(await parse([form(file("0", "a.zip", Buffer.from("a")), file("1", "b.zip", Buffer.from("b")))]), /1 file part\(s\) at most/);
    expectRefused(await parse([form(field("operations", "x".repeat(1025)))]), /The multipart field `operations` is too large/);
  });

  it("refuses a body that ends before its closing boundary, or a boundary line with bytes after it", async () => {
    expectRefused(await parse([body.subarray(0, body.length - 10)]), /ends before its closing boundary/);
    expectRefused(await parse([Buffer.from("no boundary at all")]), /ends before its closing boundary/);
    expectRefused(await parse([Buffer.from(`--${BOUNDARY}xyz\r\n`)]), /bytes after the boundary/);
  });
});
