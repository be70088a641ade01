import { existsSync, readdirSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ArchiveLimits } from "../../shared/archive-rules.ts";
import { extractArchive } from "../../worker/runner/extract.ts";
import {
  buildCorruptCentralDirectoryZip,
  buildDeclaredEntryCountZip,
  buildDeclaredSizeZip,
  buildDuplicateZip,
  buildEncryptedZip,
  buildLyingSizeZip,
  buildNotAZip,
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

let workspace: string;
let runCount = 0;

beforeAll(async () => {
  workspace = await mkdtemp(path.join(os.tmpdir(), "vega-extraction-"));
});

afterAll(async () => {
  await rm(workspace, { recursive: true, force: true });
});

/** A scan's working directory: the downloaded archive, and the directory it is extracted into. */
async function scanRun(zip: Buffer) {
  runCount += 1;
  const runDir = path.join(workspace, `run-${runCount}`);
  await mkdir(runDir);
  const archive = path.join(runDir, "source.zip");
  await writeFile(archive, zip);
  const destDir = path.join(runDir, "source");
  return {
    runDir,
    destDir,
    extract: (overrides: Partial<ArchiveLimits> = {}) => extractArchive(archive, destDir, { ...limits, ...overrides }),
  };
}

/** Every path under dir, relative, directories with a trailing slash. */
async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .map((entry) => {
      const relative = path.relative(dir, path.join(entry.parentPath, entry.name)).split(path.sep).join("/");
      return entry.isDirectory() ? `${relative}/` : relative;
    })
    .sort();
}

function invalid(reason: RegExp, entry?: string) {
  return {
    extensions: {
      code: "ARCHIVE_INVALID",
      http: { status: 422 },
      reason: expect.stringMatching(reason),
      ...(entry === undefined ? {} : { entry }),
    },
  };
}

describe("extracts a well-formed archive with the right contents", () => {
  it("writes every file and directory, and counts the bytes", async () => {
    const big = "export const line = 1;\n".repeat(10_000);
    const zip = await buildZip([
      { name: "src/index.ts", data: "export {};\n" },
      { name: "src/lib/big.ts", data: big },
      { directory: "docs/" },
      { name: "empty.txt", data: "" },
      { name: "données/été.md", data: "# été\n" },
    ]);
    const run = await scanRun(zip);
    const extraction = await run.extract();

    expect(extraction).toEqual({ entryCount: 5, bytesWritten: 11 + big.length + Buffer.byteLength("# été\n") });
    expect(await listTree(run.destDir)).toEqual([
      "docs/",
      "données/",
      "données/été.md",
      "empty.txt",
      "src/",
      "src/index.ts",
      "src/lib/",
      "src/lib/big.ts",
    ]);
    expect(await readFile(path.join(run.destDir, "src/lib/big.ts"), "utf8")).toBe(big);
    expect(await readFile(path.join(run.destDir, "empty.txt"), "utf8")).toBe("");
  });

  it("writes files without the archive's modes: nothing executable", async () => {
    const run = await scanRun(await buildZip([{ name: "run.sh", data: "#!/bin/sh\n" }]));
    await run.extract();
    expect((await stat(path.join(run.destDir, "run.sh"))).mode & 0o777).toBe(0o644);
  });

  it("extracts a Zip64 archive", async () => {
    const zip = await buildZip([{ name: "a.ts", data: "a" }, { name: "b/c.ts", data: "bc" }], { forceZip64Format: true });
    const run = await scanRun(zip);
    await expect(run.extract()).resolves.toEqual({ entryCount: 2, bytesWritten: 3 });
    expect(await readFile(path.join(run.destDir, "b/c.ts"), "utf8")).toBe("bc");
  });

  it("refuses a destination that already holds files, rather than mixing with them", async () => {
    const run = await scanRun(await buildZip([{ name: "a.ts", data: "a" }]));
    await mkdir(run.destDir);
    await writeFile(path.join(run.destDir, "left-over"), "x");
    const failure = await run.extract().catch((error: Error) => error);
    expect(failure).toMatchObject({ message: expect.stringMatching(/is not empty/) });
    expect((failure as Error).message).not.toContain(run.runDir);
  });
});

describe("checks each entry's CRC-32 against its data", () => {
  it.each([
    ["stored", { data: Buffer.from("export const key = 1;\n") }],
    ["deflated", deflated("export const key = 1;\n".repeat(100))],
  ])("refuses a %s entry whose data does not match its declared CRC-32, and removes it", async (_method, entry) => {
    const run = await scanRun(buildRawZip([{ name: "src/ok.ts", data: Buffer.from("ok\n") }, { name: "src/key.ts", ...entry, crc32: 0xdeadbeef }]));
    await expect(run.extract()).rejects.toMatchObject(invalid(/^CRC-32 mismatch: the entry declares 0xdeadbeef, its data has 0x[0-9a-f]{8}$/, "src/key.ts"));
    expect(await readdir(run.destDir)).toEqual([]);
  });
});

describe("refuses an archive with nothing to scan", () => {
  it("refuses an archive of directories alone", async () => {
    const run = await scanRun(await buildZip([{ directory: "src/" }]));
    await expect(run.extract()).rejects.toMatchObject(invalid(/^the archive contains no files$/));
  });
});

describe("refuses a path the file system cannot hold, naming no path of this machine", () => {
  it("refuses a name that fits the rule but not under a deep extraction directory", async () => {
    const name = `${"d/".repeat(1791)}ff`;
    const run = await scanRun(buildRawZip([{ name, data: Buffer.from("x") }]));
    const deepDest = path.join(run.destDir, ...Array.from({ length: 6 }, () => "x".repeat(100)));
    const failure = await extractArchive(path.join(run.runDir, "source.zip"), deepDest, limits).catch((error: Error) => error);
    expect(failure).toMatchObject(invalid(/^entry path is too long to extract$/, name));
    expect((failure as Error).message).not.toContain(run.runDir);
  });
});

describe("stops an entry that inflates past its declared size", () => {
  it("refuses the lying entry by its real byte count and removes what it wrote", async () => {
    const run = await scanRun(buildLyingSizeZip(4 * MiB, 100));
    await expect(run.extract()).rejects.toMatchObject(invalid(/too many bytes/, "liar.bin"));
    expect(await readdir(run.destDir)).toEqual([]);
  });
});

describe("refuses an archive with more entries than the limit", () => {
  it("refuses with the limit and the count", async () => {
    const run = await scanRun(await buildZip(manySourceFiles(5)));
    await expect(run.extract({ maxEntries: 3 })).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_MANY_ENTRIES", http: { status: 413 }, limit: 3, entries: 5 },
    });
    expect(await readdir(run.destDir)).toEqual([]);
  });

  it("refuses ten million declared entries before listing them", async () => {
    const run = await scanRun(buildDeclaredEntryCountZip(10_000_000));
    await expect(run.extract()).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_MANY_ENTRIES", entries: 10_000_000 },
    });
  });
});

describe("refuses an archive whose declared uncompressed size is over the limit", () => {
  it("refuses before writing anything", async () => {
    const run = await scanRun(buildDeclaredSizeZip(6 * GiB));
    await expect(run.extract()).rejects.toMatchObject({
      extensions: { code: "ARCHIVE_TOO_LARGE", http: { status: 413 }, limit: 5 * GiB, uncompressedBytes: 6 * GiB },
    });
    expect(await readdir(run.destDir)).toEqual([]);
  });
});

describe("refuses an archive whose entries overlap", () => {
  it("refuses many central records pointing at one local file, and removes the first copy", async () => {
    const run = await scanRun(buildOverlappingZip(10));
    await expect(run.extract()).rejects.toMatchObject(invalid(/^entry data overlaps entry "bomb-0\.txt"$/, "bomb-1.txt"));
    expect(await readdir(run.destDir)).toEqual([]);
  });
});

describe("refuses an entry whose name is unsafe to extract", () => {
  it.each([
    ["../evil.sh", /parent directory/],
    ["src/../../evil.sh", /parent directory/],
    ["/tmp/evil.sh", /absolute path/],
    ["C:/evil.sh", /drive letter/],
    ["..\\evil.sh", /backslash/],
    ["evil\0.sh", /NUL byte/],
  ])("refuses %j and writes nothing anywhere", async (name, reason) => {
    const run = await scanRun(buildZipWithEntryName(name));
    await expect(run.extract()).rejects.toMatchObject(invalid(new RegExp(`^unsafe entry name: ${reason.source}`), name));
    expect(await readdir(run.destDir)).toEqual([]);
    expect(await readdir(run.runDir)).toEqual(["source", "source.zip"]);
    expect(existsSync("/tmp/evil.sh")).toBe(false);
  });
});

describe("refuses a symbolic link entry", () => {
  it("refuses it and creates no link", async () => {
    const run = await scanRun(buildSymlinkZip("/etc/passwd"));
    await expect(run.extract()).rejects.toMatchObject(invalid(/^symbolic link entry$/, "link"));
    await expect(lstat(path.join(run.destDir, "link"))).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("refuses an encrypted entry", () => {
  it("refuses it", async () => {
    const run = await scanRun(buildEncryptedZip());
    await expect(run.extract()).rejects.toMatchObject(invalid(/^encrypted entry$/, "secret.txt"));
  });
});

describe("refuses entries that claim the same path", () => {
  it("refuses duplicate names", async () => {
    const run = await scanRun(buildDuplicateZip(["src/a.ts", "src//a.ts"]));
    await expect(run.extract()).rejects.toMatchObject(invalid(/^duplicate entry name$/, "src//a.ts"));
  });

  it("refuses a directory entry below a file entry", async () => {
    const zip = buildRawZip([
      { name: "src", data: Buffer.from("a file") },
      { name: "src/a.ts", data: Buffer.from("below it") },
    ]);
    const run = await scanRun(zip);
    await expect(run.extract()).rejects.toMatchObject(invalid(/^entry path conflicts with another entry$/, "src/a.ts"));
    expect(await readdir(run.destDir)).toEqual([]);
  });

  it("refuses a file entry where a directory was made", async () => {
    const zip = buildRawZip([
      { name: "src/a.ts", data: Buffer.from("a file") },
      { name: "src", data: Buffer.from("over the directory") },
    ]);
    const run = await scanRun(zip);
    await expect(run.extract()).rejects.toMatchObject(invalid(/^entry path conflicts with another entry$/, "src"));
    expect(await readdir(run.destDir)).toEqual([]);
  });
});

describe("refuses an entry whose declared compression ratio is extreme", () => {
  it("refuses 200 MiB declared over a few bytes", async () => {
    const run = await scanRun(buildDeclaredSizeZip(200 * MiB));
    await expect(run.extract()).rejects.toMatchObject(invalid(/^compression ratio \d+:1 is over the limit/, "huge.bin"));
  });
});

describe("refuses a file that is not a whole, readable zip", () => {
  it.each([
    ["not a zip", buildNotAZip(), /^cannot open archive/],
    ["truncated", buildTruncatedZip(), /^cannot open archive/],
    ["corrupt central directory", buildCorruptCentralDirectoryZip(), /^corrupt central directory/],
  ])("refuses a %s file", async (_shape, zip, reason) => {
    const run = await scanRun(zip);
    await expect(run.extract()).rejects.toMatchObject(invalid(reason));
  });
});

describe.runIf(process.platform === "linux")("leaves no file open, whether extraction succeeds or fails", () => {
  const openFiles = () => readdirSync("/proc/self/fd").length;

  it("closes the archive and every extracted file", async () => {
    const runs = [
      await scanRun(buildLyingSizeZip()),
      await scanRun(buildOverlappingZip()),
      await scanRun(buildRawZip([{ name: "a", data: Buffer.from("1") }, { name: "a/b", data: Buffer.from("2") }])),
      await scanRun(await buildZip(manySourceFiles(50))),
    ];
    const before = openFiles();
    for (const run of runs) await run.extract().catch(() => undefined);
    expect(openFiles()).toBe(before);
  });
});
