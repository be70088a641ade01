/**
 * Zip archives for tests, built in memory. Well-formed ones come from yazl, as
 * a real client's would; hostile ones are written byte by byte with
 * buildRawZip, which lets every field lie.
 */
import { crc32, deflateRawSync } from "node:zlib";
import yazl from "yazl";

export type ZipEntry = { name: string; data?: string | Buffer } | { directory: string };

export type ZipOptions = {
  /** Zip64 records even where 32 bits would do. */
  forceZip64Format?: boolean;
  /** Deflate file data (the default); yazl deflates each file in its own zlib call, slow for thousands of files. */
  compress?: boolean;
};

/** A well-formed archive as yazl writes it: files (deflated unless told otherwise) and directories. */
export async function buildZip(entries: ZipEntry[], options: ZipOptions = {}): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  const mtime = new Date("2025-01-01T00:00:00Z");
  const { forceZip64Format = false, compress = true } = options;
  for (const entry of entries) {
    if ("directory" in entry) zip.addEmptyDirectory(entry.directory, { mtime });
    else zip.addBuffer(Buffer.from(entry.data ?? ""), entry.name, { mtime, forceZip64Format, compress });
  }
  zip.end({ forceZip64Format, comment: "" });
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** `count` small source files spread over 100 directories, as a large repository's archive lists them. */
export function manySourceFiles(count: number): Array<{ name: string; data: string }> {
  const files: Array<{ name: string; data: string }> = [];
  for (let i = 0; i < count; i += 1) {
    files.push({ name: `src/dir${i % 100}/file-${i}.ts`, data: `export const value${i} = ${i};\n` });
  }
  return files;
}

/**
 * manySourceFiles(count) as stored entries, written by buildRawZip (Zip64 end
 * records beyond 65,535 entries): yazl takes about 15 s for 70,000 entries,
 * this a fraction of a second.
 */
export function buildManyFilesZip(count: number): Buffer {
  return buildRawZip(manySourceFiles(count).map(({ name, data }) => ({ name, data: Buffer.from(data) })));
}

/** One record of a hand-written archive. Every declared field defaults to the truth about `data`. */
export type RawEntry = {
  name: string | Buffer;
  /** The bytes stored in the file, as they are (see `deflated` for compressed data). */
  data?: Buffer;
  method?: number;
  crc32?: number;
  /** Declared sizes; the compressed size defaults to data's length, the uncompressed one to it too. */
  uncompressedSize?: number;
  compressedSize?: number;
  flags?: number;
  versionMadeBy?: number;
  externalAttributes?: number;
  /** No local header or data of its own: the central record points at this earlier entry's. */
  sharesDataWith?: number;
  /** Write sizes and offset in a Zip64 extra field (forced when a value needs it). */
  zip64?: boolean;
};

export type RawZipOptions = {
  /** Write the Zip64 end records (forced above 65,535 entries). */
  zip64?: boolean;
  /** The entry count the end records declare, when it should lie. */
  declaredEntryCount?: number;
};

const UNIX_HOST = 3 << 8;
const VERSION_MADE_BY = UNIX_HOST | 30;
const REGULAR_FILE = 0o100644 << 16;
const UTF8_NAMES = 0x800;
const DOS_DATE_2025_01_01 = ((2025 - 1980) << 9) | (1 << 5) | 1;
const MAX_32 = 0xffffffff;
const CENTRAL_RECORD_SIGNATURE = Buffer.from("PK\x01\x02", "latin1");

/** The fields of a deflated entry: spread them into a RawEntry. */
export function deflated(content: string | Buffer): Pick<RawEntry, "data" | "method" | "crc32" | "uncompressedSize"> {
  const bytes = Buffer.from(content);
  return { data: deflateRawSync(bytes), method: 8, crc32: crc32(bytes), uncompressedSize: bytes.length };
}

/** Writes local headers and data, then the central directory and end records, exactly as told. */
export function buildRawZip(entries: RawEntry[], options: RawZipOptions = {}): Buffer {
  const parts: Buffer[] = [];
  let position = 0;
  const push = (part: Buffer) => {
    parts.push(part);
    position += part.length;
  };

  const records = entries.map((entry) => {
    const name = Buffer.from(entry.name);
    const data = entry.data ?? Buffer.alloc(0);
    const fields = {
      name,
      method: entry.method ?? 0,
      flags: entry.flags ?? UTF8_NAMES,
      crc32: entry.crc32 ?? crc32(data),
      compressedSize: entry.compressedSize ?? data.length,
      uncompressedSize: entry.uncompressedSize ?? data.length,
      offset: 0,
    };
    return { entry, data, fields };
  });

  for (const record of records) {
    if (record.entry.sharesDataWith !== undefined) continue;
    record.fields.offset = position;
    const zip64 = needsZip64(record.entry, record.fields);
    const extra = zip64 ? zip64Extra([record.fields.uncompressedSize, record.fields.compressedSize]) : Buffer.alloc(0);
    const header = Buffer.alloc(30);
    header.writeUInt32LE(0x04034b50, 0);
    header.writeUInt16LE(zip64 ? 45 : 20, 4);
    header.writeUInt16LE(record.fields.flags, 6);
    header.writeUInt16LE(record.fields.method, 8);
    header.writeUInt16LE(0, 10);
    header.writeUInt16LE(DOS_DATE_2025_01_01, 12);
    header.writeUInt32LE(record.fields.crc32, 14);
    header.writeUInt32LE(zip64 ? MAX_32 : record.fields.compressedSize, 18);
    header.writeUInt32LE(zip64 ? MAX_32 : record.fields.uncompressedSize, 22);
    header.writeUInt16LE(record.fields.name.length, 26);
    header.writeUInt16LE(extra.length, 28);
    push(Buffer.concat([header, record.fields.name, extra, record.data]));
  }
  for (const record of records) {
    const source = record.entry.sharesDataWith;
    if (source === undefined) continue;
    const { offset, crc32: sourceCrc, compressedSize, uncompressedSize, method } = records[source].fields;
    Object.assign(record.fields, { offset, crc32: sourceCrc, compressedSize, uncompressedSize, method });
  }

  const directoryOffset = position;
  for (const { entry, fields } of records) {
    const zip64 = needsZip64(entry, fields);
    const extra = zip64 ? zip64Extra([fields.uncompressedSize, fields.compressedSize, fields.offset]) : Buffer.alloc(0);
    const header = Buffer.alloc(46);
    header.writeUInt32LE(0x02014b50, 0);
    header.writeUInt16LE(entry.versionMadeBy ?? VERSION_MADE_BY, 4);
    header.writeUInt16LE(zip64 ? 45 : 20, 6);
    header.writeUInt16LE(fields.flags, 8);
    header.writeUInt16LE(fields.method, 10);
    header.writeUInt16LE(0, 12);
    header.writeUInt16LE(DOS_DATE_2025_01_01, 14);
    header.writeUInt32LE(fields.crc32, 16);
    header.writeUInt32LE(zip64 ? MAX_32 : fields.compressedSize, 20);
    header.writeUInt32LE(zip64 ? MAX_32 : fields.uncompressedSize, 24);
    header.writeUInt16LE(fields.name.length, 28);
    header.writeUInt16LE(extra.length, 30);
    header.writeUInt16LE(0, 32);
    header.writeUInt16LE(0, 34);
    header.writeUInt16LE(0, 36);
    header.writeUInt32LE((entry.externalAttributes ?? REGULAR_FILE) >>> 0, 38);
    header.writeUInt32LE(zip64 ? MAX_32 : fields.offset, 42);
    push(Buffer.concat([header, fields.name, extra]));
  }
  const directorySize = position - directoryOffset;

  const entryCount = options.declaredEntryCount ?? records.length;
  const zip64End = options.zip64 === true || entryCount > 0xffff;
  if (zip64End) {
    const recordOffset = position;
    const record = Buffer.alloc(56);
    record.writeUInt32LE(0x06064b50, 0);
    writeUInt64LE(record, 44, 4);
    record.writeUInt16LE(VERSION_MADE_BY, 12);
    record.writeUInt16LE(45, 14);
    writeUInt64LE(record, entryCount, 24);
    writeUInt64LE(record, entryCount, 32);
    writeUInt64LE(record, directorySize, 40);
    writeUInt64LE(record, directoryOffset, 48);
    push(record);
    const locator = Buffer.alloc(20);
    locator.writeUInt32LE(0x07064b50, 0);
    writeUInt64LE(locator, recordOffset, 8);
    locator.writeUInt32LE(1, 16);
    push(locator);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(zip64End ? 0xffff : entryCount, 8);
  end.writeUInt16LE(zip64End ? 0xffff : entryCount, 10);
  end.writeUInt32LE(zip64End ? MAX_32 : directorySize, 12);
  end.writeUInt32LE(zip64End ? MAX_32 : directoryOffset, 16);
  push(end);
  return Buffer.concat(parts);
}

function needsZip64(entry: RawEntry, fields: { compressedSize: number; uncompressedSize: number; offset: number }) {
  return (
    entry.zip64 === true ||
    fields.compressedSize >= MAX_32 ||
    fields.uncompressedSize >= MAX_32 ||
    fields.offset >= MAX_32
  );
}

function zip64Extra(values: number[]): Buffer {
  const extra = Buffer.alloc(4 + 8 * values.length);
  extra.writeUInt16LE(0x0001, 0);
  extra.writeUInt16LE(8 * values.length, 2);
  values.forEach((value, i) => writeUInt64LE(extra, value, 4 + 8 * i));
  return extra;
}

function writeUInt64LE(buffer: Buffer, value: number, at: number): void {
  buffer.writeUInt32LE(value % 0x100000000, at);
  buffer.writeUInt32LE(Math.floor(value / 0x100000000), at + 4);
}

// The hostile shapes, one builder each, named for what they are.

/**
 * The overlapping-entry zip bomb: one deflated local file, and `count` central
 * records that all point at it, so that a small file lists `count` large entries.
 */
export function buildOverlappingZip(count = 10): Buffer {
  const kernel: RawEntry = { name: "bomb-0.txt", ...deflated(Buffer.alloc(512 * 1024)) };
  const copies: RawEntry[] = [];
  for (let i = 1; i < count; i += 1) copies.push({ name: `bomb-${i}.txt`, sharesDataWith: 0 });
  return buildRawZip([kernel, ...copies]);
}

/** A single stored file with this name: `../evil`, `/etc/passwd`, `a\\b`, `a\0b`, `C:/x`... */
export function buildZipWithEntryName(name: string | Buffer): Buffer {
  return buildRawZip([{ name: "README.md", data: Buffer.from("fine\n") }, { name, data: Buffer.from("owned\n") }]);
}

/** A unix symbolic link entry (mode 0o120777) whose data is the link's target. */
export function buildSymlinkZip(target = "/etc/passwd"): Buffer {
  return buildRawZip([{ name: "link", data: Buffer.from(target), externalAttributes: 0o120777 << 16 }]);
}

/**
 * An entry with general purpose bit 0 set, stored as traditional PKWARE
 * encryption stores it: a 12-byte encryption header before the data.
 */
export function buildEncryptedZip(): Buffer {
  const data = Buffer.concat([Buffer.alloc(12, 0xa5), Buffer.from("ciphertext")]);
  return buildRawZip([{ name: "secret.txt", data, flags: UTF8_NAMES | 0x1, uncompressedSize: data.length - 12 }]);
}

/** Two entries that extract to the same path. */
export function buildDuplicateZip(names: [string, string] = ["src/a.ts", "src/a.ts"]): Buffer {
  return buildRawZip(names.map((name, i) => ({ name, data: Buffer.from(`copy ${i}\n`) })));
}

/** A well-formed archive cut in half: no end of central directory record. */
export function buildTruncatedZip(): Buffer {
  const zip = buildRawZip([
    { name: "a.txt", ...deflated("a".repeat(1000)) },
    { name: "b.txt", ...deflated("b".repeat(1000)) },
  ]);
  return zip.subarray(0, Math.floor(zip.length / 2));
}

export function buildNotAZip(): Buffer {
  return Buffer.from("This is a source tarball, not a zip.\n".repeat(100));
}

/** A central directory whose second record's signature is overwritten. */
export function buildCorruptCentralDirectoryZip(): Buffer {
  const zip = buildRawZip([
    { name: "a.txt", data: Buffer.from("a\n") },
    { name: "b.txt", data: Buffer.from("b\n") },
  ]);
  const first = zip.indexOf(CENTRAL_RECORD_SIGNATURE);
  const second = zip.indexOf(CENTRAL_RECORD_SIGNATURE, first + 4);
  zip.writeUInt32LE(0xdeadbeef, second);
  return zip;
}

/** One real entry; the Zip64 end records declare `declared` entries (ten million by default). */
export function buildDeclaredEntryCountZip(declared = 10_000_000): Buffer {
  return buildRawZip([{ name: "a.txt", data: Buffer.from("a\n") }], { declaredEntryCount: declared, zip64: true });
}

/** An entry that declares `declaredBytes` uncompressed (Zip64 sizes beyond 4 GiB) over a few real bytes. */
export function buildDeclaredSizeZip(declaredBytes: number): Buffer {
  return buildRawZip([{ name: "huge.bin", ...deflated("tiny"), uncompressedSize: declaredBytes }]);
}

/** A deflated entry whose data inflates to `actualBytes` but whose headers declare `declaredBytes`. */
export function buildLyingSizeZip(actualBytes = 4 * 1024 * 1024, declaredBytes = 100): Buffer {
  return buildRawZip([
    { name: "honest.txt", data: Buffer.from("honest\n") },
    { name: "liar.bin", ...deflated(Buffer.alloc(actualBytes)), uncompressedSize: declaredBytes },
  ]);
}

/** A well-formed single-entry archive whose central record points past the central directory. */
export function buildOffsetBeyondDirectoryZip(): Buffer {
  const zip = buildRawZip([{ name: "a.txt", data: Buffer.from("a\n") }]);
  const record = zip.indexOf(CENTRAL_RECORD_SIGNATURE);
  zip.writeUInt32LE(record + 100, record + 42);
  return zip;
}

/** A well-formed archive whose entry data is overwritten with junk, its headers intact. */
export function buildJunkDataZip(): Buffer {
  const data = Buffer.from("the real content\n");
  const zip = buildRawZip([{ name: "a.txt", data }]);
  zip.fill("#", zip.indexOf(data), zip.indexOf(data) + data.length);
  return zip;
}
