import { constants } from "node:fs";
import { lstat, mkdir, open, readdir, realpath, rm } from "node:fs/promises";
import path from "node:path";
import { crc32 } from "node:zlib";
import { GraphQLError } from "graphql";
import yauzl from "yauzl";
import { archiveInvalid, archiveTooLarge, archiveTooManyEntries } from "../../shared/errors.ts";
import {
  checkContainsFiles,
  checkEntry,
  entryPath,
  isDirectoryEntry,
  PATH_MAX_BYTES,
  type ArchiveLimits,
} from "../../shared/archive-rules.ts";

export type Extraction = { entryCount: number; bytesWritten: number };
/** Called as extraction goes (after each chunk and entry), for the runner's progress reports. */
export type ExtractionProgress = (done: { entriesWritten: number; bytesWritten: number }) => void;

type ListedEntry = { name: string; relativePath: string; entry: yauzl.Entry };

// Modes from the archive are ignored: nothing extracted is executable, setuid or world-writable.
const FILE_MODE = 0o644;
const DIRECTORY_MODE = 0o755;
// O_EXCL refuses any existing path, a symbolic link included, and O_NOFOLLOW says so twice.
const NEW_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
// File system refusals that mean two entries claim the same path (a file and a directory).
const PATH_CONFLICT_CODES = new Set(["EEXIST", "ENOTDIR", "EISDIR"]);
// Deflate; checkEntry admits only it and stored.
const DEFLATED = 8;

/**
 * Extracts a source archive into destDir (created if absent, and required to
 * be empty), enforcing the inspection's rules again on what is actually there:
 * the API inspected the same file, but the runner trusts nothing it did not
 * check itself. Entries are written in the order of their data in the file,
 * which also lets each one's real extent, read from its local header, be
 * checked against the next (the overlapping-entry zip bomb). The bytes written
 * are counted as they stream, and extraction stops as soon as the count passes
 * maxUncompressedBytes, whatever the headers declared; each entry's CRC-32 is
 * computed as it streams and must match the one its record declares.
 *
 * On failure everything written is removed and the archive is closed before
 * the error (from shared/errors.ts when the archive is at fault) is thrown. No
 * message names a path of this machine: the scan's error is shown to its user.
 */
export async function extractArchive(filePath: string, destDir: string, limits: ArchiveLimits, onProgress?: ExtractionProgress): Promise<Extraction> {
  await mkdir(destDir, { recursive: true });
  const root = await realpath(destDir);
  if ((await readdir(root)).length > 0) throw new Error("The extraction directory is not empty");

  let zipfile: yauzl.ZipFile;
  try {
    // Names stay undecoded so that checkEntry, not yauzl, refuses them with the entry's name.
    zipfile = await yauzl.openPromise(filePath, { autoClose: false, decodeStrings: false, validateEntrySizes: true });
  } catch (error) {
    throw archiveFault(error, "cannot open archive");
  }
  try {
    const entries = await listEntries(zipfile, limits);
    const bytesWritten = await writeEntries(zipfile, entries, root, limits, onProgress);
    return { entryCount: entries.length, bytesWritten };
  } catch (error) {
    await removeContents(root);
    throw error;
  } finally {
    await closeArchive(zipfile);
  }
}

async function listEntries(zipfile: yauzl.ZipFile, limits: ArchiveLimits): Promise<ListedEntry[]> {
  if (zipfile.entryCount > limits.maxEntries) {
    throw archiveTooManyEntries({ limit: limits.maxEntries, entries: zipfile.entryCount });
  }
  const entries: ListedEntry[] = [];
  const paths = new Set<string>();
  let declaredBytes = 0;
  let fileCount = 0;
  try {
    for await (const entry of zipfile.eachEntry()) {
      const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true);
      // The declared total first, as the inspection reports it first.
      declaredBytes += entry.uncompressedSize;
      if (declaredBytes > limits.maxUncompressedBytes) {
        throw archiveTooLarge({ limit: limits.maxUncompressedBytes, uncompressedBytes: declaredBytes });
      }
      const relativePath = entryPath(name);
      const reason = checkEntry(name, entry, limits) ?? (paths.has(relativePath) ? "duplicate entry name" : undefined);
      if (reason !== undefined) throw archiveInvalid(reason, name);
      paths.add(relativePath);
      if (!isDirectoryEntry(name)) fileCount += 1;
      entries.push({ name, relativePath, entry });
    }
  } catch (error) {
    throw archiveFault(error, "corrupt central directory");
  }
  const empty = checkContainsFiles(fileCount);
  if (empty !== undefined) throw archiveInvalid(empty);
  return entries;
}

async function writeEntries(
  zipfile: yauzl.ZipFile,
  entries: ListedEntry[],
  root: string,
  limits: ArchiveLimits,
  onProgress?: ExtractionProgress,
): Promise<number> {
  const budget = new ByteBudget(limits.maxUncompressedBytes);
  const directories = new Set<string>([root]);
  let previous: { name: string; dataEnd: number } | undefined;

  entries.sort((a, b) => a.entry.relativeOffsetOfLocalHeader - b.entry.relativeOffsetOfLocalHeader);
  for (const [entriesWritten, { name, relativePath, entry }] of entries.entries()) {
    onProgress?.({ entriesWritten, bytesWritten: budget.bytesWritten });
    try {
      const { fileDataStart } = await zipfile.readLocalFileHeaderPromise(entry, { minimal: true });
      if (previous !== undefined && entry.relativeOffsetOfLocalHeader < previous.dataEnd) {
        throw archiveInvalid(`entry data overlaps entry "${previous.name}"`, name);
      }
      previous = { name, dataEnd: fileDataStart + entry.compressedSize };

      const target = pathInside(root, relativePath, name);
      if (isDirectoryEntry(name)) {
        await makeDirectories(root, target, directories, name);
        continue;
      }
      await makeDirectories(root, path.dirname(target), directories, name);
      const file = await open(target, NEW_FILE_FLAGS, FILE_MODE);
      let checksum = 0;
      try {
        // Leaving the loop early (a refusal, a failed write) destroys the entry's stream.
        for await (const chunk of await openEntryData(zipfile, entry, fileDataStart)) {
          budget.spend(chunk.length);
          checksum = crc32(chunk, checksum);
          await file.write(chunk);
          onProgress?.({ entriesWritten, bytesWritten: budget.bytesWritten });
        }
      } finally {
        await file.close();
      }
      if (checksum !== entry.crc32) {
        throw archiveInvalid(`CRC-32 mismatch: the entry declares ${hex32(entry.crc32)}, its data has ${hex32(checksum)}`, name);
      }
    } catch (error) {
      throw archiveFault(error, "unreadable entry data", name);
    }
  }
  onProgress?.({ entriesWritten: entries.length, bytesWritten: budget.bytesWritten });
  return budget.bytesWritten;
}

/**
 * The running count of bytes written across all entries. It is the last line
 * against a zip bomb: yauzl's validateEntrySizes already holds each entry to
 * its declared size, and the declared sizes to the limit, but this count does
 * not depend on either being right.
 */
class ByteBudget {
  bytesWritten = 0;

  constructor(private readonly maxBytes: number) {}

  /** Counts bytes about to be written, refusing them once the total passes the limit. */
  spend(bytes: number): void {
    this.bytesWritten += bytes;
    if (this.bytesWritten > this.maxBytes) {
      throw archiveTooLarge({ limit: this.maxBytes, uncompressedBytes: this.bytesWritten });
    }
  }
}

const hex32 = (value: number) => `0x${value.toString(16).padStart(8, "0")}`;

/**
 * The entry's path under root; checkEntryName already refused `..`, this makes
 * sure of it, and that the whole path fits PATH_MAX (the name rule leaves room
 * for the extraction directory, this holds whatever the directory is).
 */
function pathInside(root: string, relativePath: string, name: string): string {
  const target = path.join(root, ...relativePath.split("/"));
  const relative = path.relative(root, target);
  if (relative === "" || relative === ".." || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
    throw archiveInvalid("entry path escapes the extraction directory", name);
  }
  if (Buffer.byteLength(target) >= PATH_MAX_BYTES) throw archiveInvalid("entry path is too long to extract", name);
  return target;
}

/**
 * Creates each missing directory from root down to dir, and checks that every
 * one is a real directory (lstat: a symbolic link is not followed), so that no
 * later file can be written through a link. Known directories are skipped:
 * each costs a mkdir and an lstat once per archive.
 */
async function makeDirectories(root: string, dir: string, known: Set<string>, name: string): Promise<void> {
  let current = root;
  for (const segment of path.relative(root, dir).split(path.sep).filter(Boolean)) {
    current = path.join(current, segment);
    if (known.has(current)) continue;
    try {
      await mkdir(current, DIRECTORY_MODE);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    if (!(await lstat(current)).isDirectory()) {
      throw archiveInvalid("entry path conflicts with another entry", name);
    }
    known.add(current);
  }
}

/** The entry's uncompressed bytes; yauzl fails the stream when they exceed the declared size (validateEntrySizes). */
function openEntryData(
  zipfile: yauzl.ZipFile,
  entry: yauzl.Entry,
  fileDataStart: number,
): Promise<AsyncIterable<Buffer>> {
  return new Promise((resolve, reject) => {
    zipfile.openReadStreamLowLevel(
      fileDataStart,
      entry.compressedSize,
      0,
      entry.compressedSize,
      entry.compressionMethod === DEFLATED,
      entry.uncompressedSize,
      (error, stream) => (error ? reject(error) : resolve(stream)),
    );
  });
}

/**
 * Which errors are the archive's fault: ours (already client errors), yauzl's
 * and zlib's (plain errors: bad signatures, sizes that do not match, corrupt
 * deflate data), path conflicts between entries and names the file system
 * cannot hold. Other system errors (a full disk, an unreadable upload) are the
 * runner's: they keep their code, and lose the path their message names (the
 * original stays as the cause, for the runner's log).
 */
function archiveFault(error: unknown, what: string, name?: string): Error {
  if (error instanceof GraphQLError) return error;
  const systemError = error as NodeJS.ErrnoException;
  if (systemError instanceof Error && systemError.syscall !== undefined) {
    if (name !== undefined && PATH_CONFLICT_CODES.has(systemError.code ?? "")) {
      return archiveInvalid("entry path conflicts with another entry", name);
    }
    if (systemError.code === "ENAMETOOLONG") return archiveInvalid("entry path is too long to extract", name);
    const where = name === undefined ? "the archive" : `entry "${name}"`;
    return Object.assign(new Error(`${systemError.code ?? "system error"}: ${systemError.syscall} failed on ${where}`, { cause: error }), {
      code: systemError.code,
    });
  }
  return archiveInvalid(`${what}: ${error instanceof Error ? error.message : String(error)}`, name);
}

/** Resolves once the archive's file descriptor is closed, which waits for any entry stream still holding it. */
function closeArchive(zipfile: yauzl.ZipFile): Promise<void> {
  if (!zipfile.isOpen) return Promise.resolve();
  return new Promise((resolve, reject) => {
    zipfile.once("close", () => resolve());
    zipfile.once("error", reject);
    zipfile.close();
  });
}

/** Removes everything under root, which was empty before extraction began. */
async function removeContents(root: string): Promise<void> {
  for (const name of await readdir(root)) {
    await rm(path.join(root, name), { recursive: true, force: true });
  }
}
