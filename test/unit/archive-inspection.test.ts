import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectArchive } from "../../api/hardening/archive-inspection.ts";
import { checkEntryName, type ArchiveLimits } from "../../shared/archive-rules.ts";
import {
  buildCorruptCentralDirectoryZip,
  buildDeclaredEntryCountZip,
  buildDeclaredSizeZip,
  buildDuplicateZip,
  buildEncryptedZip,
  buildJunkDataZip,
  buildManyFilesZip,
  buildNotAZip,
  buildOffsetBeyondDirectoryZip,
  buildOverlappingZip,
  buildRawZip,
  buildSymlinkZip,
  buildTruncatedZip,
  buildZip,
  buildZipWithEntryName,
  deflated,
  manySourceFiles,
} from "../support/zips.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const limits: ArchiveLimits = { maxEntries: 50_000, maxUncompressedBytes: 5 * GiB, maxCompressionRatio: 1000 };

let uploads: string;
let uploadCount = 0;

beforeAll(async () => {
  uploads = await mkdtemp(path.join(os.tmpdir(), "vega-inspection-"));
});

afterAll(async () => {
  await rm(uploads, { recursive: true, force: true });
});

/** Stores the archive as an upload would be stored, and inspects it. */
async function inspect(zip: Buffer, overrides: Partial<ArchiveLimits> = {}) {
  uploadCount += 1;
  const file = path.join(uploads, `upload-${uploadCount}.zip`);
  await writeFile(file, zip);
  return inspectArchive(file, { ...limits, ...overrides });
}

/** The ARCHIVE_INVALID refusal, with its reason and, when given, the entry named in extensions and message. */
function invalid(reason: RegExp, entry?: string) {
  return {
    message: entry === undefined ? expect.any(String) : expect.stringContaining(`"${entry}"`),
    extensions: {
      code: "ARCHIVE_INVALID",
      http: { status: 422 },
      reason: expect.stringMatching(reason),
      ...(entry === undefined ? {} : { entry }),
    },
  };
}

describe("accepts a well-formed archive and reports what it declares", () => {
  it("counts entries, directories included, and sums the declared sizes", async () => {
    const zip = await buildZip([
      { name: "src/index.ts", data: "export {};\n" },
      { name: "src/lib/util.ts", data: "export const answer = 42;\n".repeat(100) },
      { directory: "docs/" },
      { name: "empty.txt", data: "" },
    ]);
    const inspection = await inspect(zip);
    expect(inspection).toEqual({
      entryCount: 4,
      uncompressedBytes: 11 + 2600,
      compressedBytes: expect.any(Number),
    });
    expect(inspection.compressedBytes).toBeLessThan(inspection.uncompressedBytes);
  });


  it("reads the central directory only, never the entry data", async () => {
    await expect(inspect(buildJunkDataZip())).resolves.toMatchObject({ entryCount: 1 });
  });
});

describe("reads Zip64 archives", () => {
  it("reads an archive of more than 65,535 entries", async () => {
    const files = manySourceFiles(70_000);
    const inspection = await inspect(buildManyFilesZip(70_000), { maxEntries: 100_000 });
    expect(inspection.entryCount).toBe(70_000);
    expect(inspection.uncompressedBytes).toBe(files.reduce((sum, file) => sum + file.data.length, 0));
  });

  it("reads an archive whose every record yazl wrote in Zip64 form", async () => {
    const zip = await buildZip([{ name: "a.ts", data: "a" }, { name: "b.ts", data: "bb" }], { forceZip64Format: true });
    await expect(inspect(zip)).resolves.toMatchObject({ entryCount: 2, uncompressedBytes: 3 });
  });

  it("reads sizes beyond 4 GiB from the Zip64 extra field", async () => {
    const declared = 6 * GiB;
    await expect(inspect(buildDeclaredSizeZip(declared), { maxUncompressedBytes: 10 * GiB, maxCompressionRatio: 1e12 }))
      .resolves.toMatchObject({ uncompressedBytes: declared });
  });
});

describe("refuses an archive with more entries than the limit", () => {
  it("refuses with the limit and the count", async () => {
    const zip = await buildZip(manySourceFiles(5));
    await expect(inspect(zip, { maxEntries: 3 })).rejects.toMatchObject({
      message: "Archive has 5 entries, over the limit of 3",
      extensions: { code: "ARCHIVE_TOO_MANY_ENTRIES", http: { status: 413 }, limit: 3, entries: 5 },
    });
  });

  it("refuses a Zip64 archive of 70,000 entries at the default limit", async () => {
    await expect(inspect(buildManyFilesZip(70_000))).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_MANY_ENTRIES", limit: 50_000, entries: 70_000 },
    });
  });

  it("refuses ten million declared entries from the end record, before reading the directory", async () => {
    // One real record: had the directory been read, it would have been found corrupt instead.
    await expect(inspect(buildDeclaredEntryCountZip(10_000_000))).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_MANY_ENTRIES", http: { status: 413 }, entries: 10_000_000 },
    });
  });
});

describe("refuses an archive whose declared uncompressed size is over the limit", () => {
  it("refuses one entry declaring 6 GiB", async () => {
    await expect(inspect(buildDeclaredSizeZip(6 * GiB))).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_LARGE", http: { status: 413 }, limit: 5 * GiB, uncompressedBytes: 6 * GiB },
    });
  });

  it("refuses entries that are small alone but too large together", async () => {
    const zip = await buildZip([
      { name: "a.txt", data: "a".repeat(400) },
      { name: "b.txt", data: "b".repeat(400) },
      { name: "c.txt", data: "c".repeat(400) },
    ]);
    await expect(inspect(zip, { maxUncompressedBytes: 1000 })).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_LARGE", limit: 1000, uncompressedBytes: 1200 },
    });
  });

  it("reports the size before an invalid entry listed earlier", async () => {
    const zip = buildRawZip([
      { name: "../evil.sh", data: Buffer.from("#!/bin/sh\n") },
      { name: "huge.bin", ...deflated("tiny"), uncompressedSize: 6 * GiB },
    ]);
    await expect(inspect(zip)).rejects.toMatchObject({ extensions: { code: "ARCHIVE_TOO_LARGE" } });
  });
});

describe("refuses an archive whose entries overlap", () => {
  it("refuses many central records pointing at one local file", async () => {
    await expect(inspect(buildOverlappingZip(10))).rejects.toMatchObject(
      invalid(/^entry data overlaps entry "bomb-0\.txt"$/, "bomb-1.txt"),
    );
  });

  it("refuses an entry whose local header is beyond the central directory", async () => {
    await expect(inspect(buildOffsetBeyondDirectoryZip())).rejects.toMatchObject(
      invalid(/^local header offset \d+ is beyond the central directory at \d+$/, "a.txt"),
    );
  });
});

describe("refuses an entry whose name is unsafe to extract", () => {
  it.each([
    ["../evil.sh", /parent directory \(\.\.\) segment/],
    ["src/../../evil.sh", /parent directory \(\.\.\) segment/],
    ["/etc/cron.d/evil", /absolute path/],
    ["C:/Windows/evil.dll", /drive letter/],
    ["src\\..\\..\\evil.sh", /backslash/],
    ["src/a\0.ts", /NUL byte/],
  ])("refuses %j", async (name, reason) => {
    await expect(inspect(buildZipWithEntryName(name))).rejects.toMatchObject(
      invalid(new RegExp(`^unsafe entry name: ${reason.source}`), name),
    );
  });
});

describe("judges entry names by the shared rules", () => {
  it.each(["src/index.ts", "a/./b.ts", "..hidden", ".env", "dir/", "données/été.txt"])("accepts %j", (name) => {
    expect(checkEntryName(name)).toBeUndefined();
  });

  it.each([
    ["", /empty/],
    ["./", /denotes no file/],
    ["a/..", /\.\./],
    [`${"x".repeat(256)}.ts`, /segment longer than 255 bytes/],
    [`${"d/".repeat(2100)}f`, /name longer than 3584 bytes/],
    // Short of PATH_MAX itself, but with no room left for the directory the runner extracts into.
    [`${"d/".repeat(2000)}f`, /name longer than 3584 bytes/],
  ])("refuses %j", (name, reason) => {
    expect(checkEntryName(name)).toMatch(reason);
  });

  it("accepts a name at the bound", () => {
    expect(checkEntryName(`${"d/".repeat(1791)}ff`)).toBeUndefined();
  });
});

describe("refuses an archive with nothing to scan", () => {
  it("refuses an archive without entries", async () => {
    await expect(inspect(await buildZip([]))).rejects.toMatchObject(invalid(/^the archive contains no files$/));
  });

  it("refuses an archive of directories alone", async () => {
    await expect(inspect(await buildZip([{ directory: "src/" }, { directory: "src/lib/" }]))).rejects.toMatchObject(
      invalid(/^the archive contains no files$/),
    );
  });
});

describe("refuses a symbolic link entry", () => {
  it("refuses an entry whose unix mode is a link", async () => {
    await expect(inspect(buildSymlinkZip("/etc/passwd"))).rejects.toMatchObject(
      invalid(/^symbolic link entry$/, "link"),
    );
  });
});

describe("refuses an encrypted entry", () => {
  it("refuses an entry with general purpose bit 0 set", async () => {
    await expect(inspect(buildEncryptedZip())).rejects.toMatchObject(invalid(/^encrypted entry$/, "secret.txt"));
  });
});

describe("refuses duplicate entry names", () => {
  it("refuses the same name twice", async () => {
    await expect(inspect(buildDuplicateZip(["src/a.ts", "src/a.ts"]))).rejects.toMatchObject(
      invalid(/^duplicate entry name$/, "src/a.ts"),
    );
  });

  it("refuses names that differ only by empty or . segments", async () => {
    await expect(inspect(buildDuplicateZip(["src/a.ts", "src//./a.ts"]))).rejects.toMatchObject(
      invalid(/^duplicate entry name$/, "src//./a.ts"),
    );
  });
});

describe("refuses an entry whose declared compression ratio is extreme", () => {
  it("refuses 200 MiB declared over a few bytes", async () => {
    await expect(inspect(buildDeclaredSizeZip(200 * MiB))).rejects.toMatchObject(
      invalid(/^compression ratio \d+:1 is over the limit of 1000:1$/, "huge.bin"),
    );
  });

  it("exempts entries under 1 MiB, however well they compress", async () => {
    const zip = await buildZip([{ name: "blank.bmp", data: Buffer.alloc(MiB - 1) }]);
    await expect(inspect(zip, { maxCompressionRatio: 10 })).resolves.toMatchObject({ entryCount: 1 });
  });
});

describe("refuses a file that is not a whole zip", () => {
  it("refuses a file that is not a zip", async () => {
    await expect(inspect(buildNotAZip())).rejects.toMatchObject(invalid(/^not a zip file$/));
  });

  it("refuses an empty file as an empty upload", async () => {
    await expect(inspect(Buffer.alloc(0))).rejects.toMatchObject(invalid(/^empty upload/));
  });

  it("refuses a truncated file", async () => {
    await expect(inspect(buildTruncatedZip())).rejects.toMatchObject(invalid(/^truncated file/));
  });
});

describe("refuses a corrupt central directory", () => {
  it("refuses a record with a bad signature, naming the record", async () => {
    await expect(inspect(buildCorruptCentralDirectoryZip())).rejects.toMatchObject(
      invalid(/^corrupt central directory at record 2: invalid central directory file header signature/),
    );
  });

  it("refuses bytes appended after the end record", async () => {
    const zip = await buildZip([{ name: "a.txt", data: "a" }]);
    await expect(inspect(Buffer.concat([zip, Buffer.from("trailing")]))).rejects.toMatchObject(
      invalid(/comment length/),
    );
  });

  it("refuses an end record whose directory offset points elsewhere", async () => {
    const zip = await buildZip([{ name: "a.txt", data: "a" }]);
    zip.writeUInt32LE(zip.readUInt32LE(zip.length - 6) - 1, zip.length - 6);
    await expect(inspect(zip)).rejects.toMatchObject(invalid(/^truncated or corrupt central directory/));
  });

  it("refuses a central directory with bytes its records do not account for", async () => {
    const zip = await buildZip([{ name: "a.txt", data: "a" }]);
    const end = zip.subarray(zip.length - 22);
    const padded = Buffer.concat([zip.subarray(0, zip.length - 22), Buffer.alloc(64), end]);
    padded.writeUInt32LE(end.readUInt32LE(12) + 64, padded.length - 22 + 12);
    await expect(inspect(padded)).rejects.toMatchObject(
      invalid(/^corrupt central directory: its records take \d+ of its \d+ declared bytes$/),
    );
  });

  it("refuses an end record declaring more entries than its directory can hold", async () => {
    const zip = await buildZip([{ name: "a.txt", data: "a" }]);
    zip.writeUInt16LE(500, zip.length - 12);
    zip.writeUInt16LE(500, zip.length - 14);
    await expect(inspect(zip)).rejects.toMatchObject(invalid(/^corrupt central directory: 500 entries cannot fit/));
  });
});
