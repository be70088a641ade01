import { open, type FileHandle } from "node:fs/promises";
import { GraphQLError } from "graphql";
import yauzl from "yauzl";
import { archiveInvalid, archiveTooLarge, archiveTooManyEntries } from "../../shared/errors.ts";
import { checkContainsFiles, checkEntry, entryPath, isDirectoryEntry, minimumLocalExtent, type ArchiveLimits } from "../../shared/archive-rules.ts";

/** What an upload's central directory declares, once it has passed every rule. */
export type ArchiveInspection = {
  entryCount: number;
  uncompressedBytes: number;
  compressedBytes: number;
};

// Record layouts from PKWARE's APPNOTE.TXT, sections 4.3.7 to 4.3.16.
const END_RECORD_SIGNATURE = 0x06054b50;
const END_RECORD_BYTES = 22;
const MAX_COMMENT_BYTES = 0xffff;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_LOCATOR_BYTES = 20;
const ZIP64_END_RECORD_SIGNATURE = 0x06064b50;
const ZIP64_END_RECORD_BYTES = 56;
const CENTRAL_RECORD_FIXED_BYTES = 46;
const LOCAL_HEADER_SIGNATURE = 0x04034b50;

/**
 * How much of the file one read fetches. Large enough that a 50,000-entry
 * central directory (about 5 MB) takes two reads; small enough that memory
 * stays bounded whatever size the directory claims.
 */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;

type CentralDirectory = {
  entryCount: number;
  offset: number;
  size: number;
};

/** Where an entry's local header and data sit in the file, at the least. */
type LocalExtent = {
  name: string;
  start: number;
  minimumEnd: number;
};

/**
 * Decides whether an uploaded archive may be stored and scanned, from its
 * central directory alone: nothing is extracted and no entry data is read.
 * Refusals come in this order: an empty file, a missing or inconsistent end record, too many
 * entries (counted from the end record, before the directory is read), a
 * corrupt directory record, too many declared bytes (summed over every entry),
 * the first invalid entry, overlapping entries, no files at all.
 *
 * The runner enforces the same rules again on what it actually extracts; what
 * only the local headers could tell (a local extra field stretched over the
 * next entry) is left to it.
 */
export async function inspectArchive(filePath: string, limits: ArchiveLimits): Promise<ArchiveInspection> {
  const file = await open(filePath, "r");
  try {
    const fileSize = (await file.stat()).size;
    if (fileSize === 0) throw archiveInvalid("empty upload: the file has 0 bytes");
    const reader = new ChunkedReader(file, fileSize);
    const directory = await locateCentralDirectory(reader, fileSize);
    if (directory.entryCount > limits.maxEntries) {
      throw archiveTooManyEntries({ limit: limits.maxEntries, entries: directory.entryCount });
    }
    if (directory.entryCount * CENTRAL_RECORD_FIXED_BYTES > directory.size) {
      throw archiveInvalid(
        `corrupt central directory: ${directory.entryCount} entries cannot fit in ${directory.size} bytes`,
      );
    }
    return await inspectEntries(reader, fileSize, directory, limits);
  } finally {
    await file.close();
  }
}

/**
 * Reads the end of central directory record (and the Zip64 locator and record
 * when present) from one read of the file's tail, and checks that the central
 * directory ends exactly where those records begin: anything between them is
 * either corruption or data a zip reader would not see.
 */
async function locateCentralDirectory(reader: ChunkedReader, fileSize: number): Promise<CentralDirectory> {
  const tailLength = Math.min(fileSize, ZIP64_LOCATOR_BYTES + END_RECORD_BYTES + MAX_COMMENT_BYTES);
  const tailStart = fileSize - tailLength;
  const tail = await reader.bytesAt(tailStart, tailLength);

  // The same search as yauzl's: the last signature wins, so both read the same record.
  let endRecordAt = -1;
  for (let at = tail.length - END_RECORD_BYTES; at >= 0; at -= 1) {
    if (tail.readUInt32LE(at) === END_RECORD_SIGNATURE) {
      endRecordAt = at;
      break;
    }
  }
  if (endRecordAt < 0) {
    const head = await reader.bytesAt(0, 4);
    throw archiveInvalid(
      head.length === 4 && head.readUInt32LE(0) === LOCAL_HEADER_SIGNATURE
        ? "truncated file: no end of central directory record"
        : "not a zip file",
    );
  }
  if (tail.readUInt16LE(endRecordAt + 20) !== tail.length - endRecordAt - END_RECORD_BYTES) {
    throw archiveInvalid("corrupt end of central directory record: its comment length does not match the file's end");
  }

  let diskNumber = tail.readUInt16LE(endRecordAt + 4);
  let directoryDisk = tail.readUInt16LE(endRecordAt + 6);
  let entriesOnDisk = tail.readUInt16LE(endRecordAt + 8);
  let entryCount = tail.readUInt16LE(endRecordAt + 10);
  let size = tail.readUInt32LE(endRecordAt + 12);
  let offset = tail.readUInt32LE(endRecordAt + 16);
  let directoryEnd = tailStart + endRecordAt;

  const locatorAt = endRecordAt - ZIP64_LOCATOR_BYTES;
  if (locatorAt >= 0 && tail.readUInt32LE(locatorAt) === ZIP64_LOCATOR_SIGNATURE) {
    const locatorOffset = tailStart + locatorAt;
    const recordOffset = readUInt64LE(tail, locatorAt + 8);
    if (recordOffset + ZIP64_END_RECORD_BYTES > locatorOffset) {
      throw archiveInvalid(`corrupt Zip64 locator: it points at offset ${recordOffset}`);
    }
    const record = await reader.bytesAt(recordOffset, ZIP64_END_RECORD_BYTES);
    if (record.readUInt32LE(0) !== ZIP64_END_RECORD_SIGNATURE) {
      throw archiveInvalid(`corrupt Zip64 end of central directory record at offset ${recordOffset}`);
    }
    if (recordOffset + 12 + readUInt64LE(record, 4) !== locatorOffset) {
      throw archiveInvalid("corrupt Zip64 end of central directory record: its size does not reach the locator");
    }
    diskNumber = record.readUInt32LE(16);
    directoryDisk = record.readUInt32LE(20);
    entriesOnDisk = readUInt64LE(record, 24);
    entryCount = readUInt64LE(record, 32);
    size = readUInt64LE(record, 40);
    offset = readUInt64LE(record, 48);
    directoryEnd = recordOffset;
  }

  if (diskNumber !== 0 || directoryDisk !== 0 || entriesOnDisk !== entryCount) {
    throw archiveInvalid("multi-disk archives are not supported");
  }
  if (offset + size !== directoryEnd) {
    throw archiveInvalid(
      `truncated or corrupt central directory: declared at offset ${offset} for ${size} bytes, ` +
        `but the end records begin at ${directoryEnd}`,
    );
  }
  return { entryCount, offset, size };
}

async function inspectEntries(
  reader: ChunkedReader,
  fileSize: number,
  directory: CentralDirectory,
  limits: ArchiveLimits,
): Promise<ArchiveInspection> {
  let uncompressedBytes = 0;
  let compressedBytes = 0;
  let recordsRead = 0;
  let fileCount = 0;
  let firstInvalidEntry: GraphQLError | undefined;
  const paths = new Set<string>();
  const extents: LocalExtent[] = [];

  // Sizes are summed for every entry, so that an oversized archive is reported
  // as such even when it also holds an invalid entry; the rest stops at the
  // first invalid entry.
  const onEntry = (entry: yauzl.Entry) => {
    recordsRead += 1;
    uncompressedBytes += entry.uncompressedSize;
    compressedBytes += entry.compressedSize;
    if (firstInvalidEntry !== undefined) return;
    // The name yauzl would extract to, decoded strictly (backslashes kept) so that
    // the rules, not yauzl's own checks, refuse it with the name in the message.
    const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true);
    const relativePath = entryPath(name);
    const reason = checkEntry(name, entry, limits) ?? checkPlacement(relativePath, entry, directory.offset, paths);
    if (reason !== undefined) {
      firstInvalidEntry = archiveInvalid(reason, name);
      return;
    }
    paths.add(relativePath);
    if (!isDirectoryEntry(name)) fileCount += 1;
    const start = entry.relativeOffsetOfLocalHeader;
    extents.push({ name, start, minimumEnd: start + minimumLocalExtent(entry) });
  };

  let directoryEnd: number;
  try {
    directoryEnd = await readCentralDirectory(reader, fileSize, onEntry);
  } catch (error) {
    throw archiveInvalid(`corrupt central directory at record ${recordsRead + 1}: ${(error as Error).message}`);
  }
  if (directoryEnd !== directory.offset + directory.size) {
    throw archiveInvalid(
      `corrupt central directory: its records take ${directoryEnd - directory.offset} ` +
        `of its ${directory.size} declared bytes`,
    );
  }

  if (uncompressedBytes > limits.maxUncompressedBytes) {
    throw archiveTooLarge({ limit: limits.maxUncompressedBytes, uncompressedBytes });
  }
  if (firstInvalidEntry !== undefined) throw firstInvalidEntry;
  checkNoOverlap(extents);
  const empty = checkContainsFiles(fileCount);
  if (empty !== undefined) throw archiveInvalid(empty);
  return { entryCount: directory.entryCount, uncompressedBytes, compressedBytes };
}

/** The rules that need more than the record itself: a unique path, and data before the central directory. */
function checkPlacement(
  relativePath: string,
  entry: yauzl.Entry,
  directoryOffset: number,
  paths: Set<string>,
): string | undefined {
  if (paths.has(relativePath)) return "duplicate entry name";
  const start = entry.relativeOffsetOfLocalHeader;
  if (start >= directoryOffset) {
    return `local header offset ${start} is beyond the central directory at ${directoryOffset}`;
  }
  if (start + minimumLocalExtent(entry) > directoryOffset) {
    return `entry data from offset ${start} runs into the central directory at ${directoryOffset}`;
  }
  return undefined;
}

/**
 * The overlapping-entry zip bomb points many central records at the same
 * compressed bytes, so that a small file expands to many large entries. Sorted
 * by local header offset, each entry must start after the least its predecessor
 * occupies (see minimumLocalExtent).
 */
function checkNoOverlap(extents: LocalExtent[]): void {
  extents.sort((a, b) => a.start - b.start);
  for (let i = 1; i < extents.length; i += 1) {
    const previous = extents[i - 1];
    const current = extents[i];
    if (current.start < previous.minimumEnd) {
      throw archiveInvalid(`entry data overlaps entry "${previous.name}"`, current.name);
    }
  }
}

/**
 * Lets yauzl parse every central directory record, served from the reader's
 * large chunks. Names are left undecoded (decodeStrings: false) so that the
 * rules judge them, and stored sizes are checked by the rules too, with the
 * entry's name. Resolves with the offset after the last record.
 */
function readCentralDirectory(
  reader: ChunkedReader,
  fileSize: number,
  onEntry: (entry: yauzl.Entry) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    yauzl.fromRandomAccessReader(
      reader,
      fileSize,
      { lazyEntries: false, decodeStrings: false, validateEntrySizes: false },
      (error, zipfile) => {
        if (error) return reject(error);
        zipfile.on("entry", onEntry);
        zipfile.on("error", reject);
        // @types/yauzl calls readEntryCursor a boolean; it is the offset of the next record.
        zipfile.on("end", () => resolve(zipfile.readEntryCursor as unknown as number));
      },
    );
  });
}

/**
 * A yauzl reader that fetches the file in large chunks and serves yauzl's many
 * small reads (two per central record) from the current chunk. yauzl.open()
 * issues each of those as its own file read, which makes a 50,000-entry
 * directory take seconds; this reader makes it a couple of reads, and holds at
 * most one chunk (or one record, if larger) in memory.
 */
class ChunkedReader extends yauzl.RandomAccessReader {
  private chunk = Buffer.alloc(0);
  private chunkStart = 0;

  constructor(
    private readonly file: FileHandle,
    private readonly fileSize: number,
  ) {
    super();
  }

  private holds(position: number, length: number): boolean {
    return position >= this.chunkStart && position + length <= this.chunkStart + this.chunk.length;
  }

  /** The file's bytes from position, fewer than length at the end of the file. */
  async bytesAt(position: number, length: number): Promise<Buffer> {
    if (!this.holds(position, length)) {
      const end = Math.max(position, Math.min(this.fileSize, position + Math.max(length, READ_CHUNK_BYTES)));
      const chunk = Buffer.allocUnsafe(end - position);
      const { bytesRead } = await this.file.read(chunk, 0, chunk.length, position);
      this.chunk = chunk.subarray(0, bytesRead);
      this.chunkStart = position;
    }
    const from = position - this.chunkStart;
    return this.chunk.subarray(from, from + length);
  }

  /**
   * yauzl learns of a short read from the callback's second argument. A read
   * the current chunk holds is answered on the microtask queue: synchronously,
   * yauzl would recurse once per record, and through setImmediate (as its own
   * buffer reader does) each record would wait for a turn of the event loop.
   * The parse thus yields to other requests only between chunks: about 0.2 s
   * of CPU for a 50,000-entry directory.
   */
  override read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
    callback: (error: Error | null, bytesRead?: number) => void,
  ): void {
    if (this.holds(position, length)) {
      const from = position - this.chunkStart;
      const bytesRead = this.chunk.copy(buffer, offset, from, from + length);
      queueMicrotask(() => callback(null, bytesRead));
      return;
    }
    this.bytesAt(position, length).then(
      (bytes) => callback(null, bytes.copy(buffer, offset)),
      (error: Error) => callback(error),
    );
  }
}

/** Zip64 fields are 64-bit; offsets and sizes beyond 2^53 lose precision and then fail the layout checks. */
function readUInt64LE(buffer: Buffer, at: number): number {
  return buffer.readUInt32LE(at + 4) * 0x100000000 + buffer.readUInt32LE(at);
}
