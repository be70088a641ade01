/**
 * The rules a source archive must pass, shared by the API's inspection of an
 * upload (api/hardening/archive-inspection.ts, on the central directory's
 * declarations) and the runner's extraction (worker/runner/extract.ts, on the
 * bytes it actually writes). Pure functions: no I/O, no yauzl, so that both
 * sides decide the same thing from the same facts.
 */

export type ArchiveLimits = {
  maxEntries: number;
  maxUncompressedBytes: number;
  maxCompressionRatio: number;
};

/** The limits in force, from the settings (the API's and the runner's alike). */
export const archiveLimitsOf = (config: {
  maxArchiveEntries: number;
  maxArchiveUncompressedBytes: number;
  maxCompressionRatio: number;
}): ArchiveLimits => ({
  maxEntries: config.maxArchiveEntries,
  maxUncompressedBytes: config.maxArchiveUncompressedBytes,
  maxCompressionRatio: config.maxCompressionRatio,
});

/** What the rules read from one central directory record (a yauzl `Entry` has all of it). */
export type EntryHeader = {
  versionMadeBy: number;
  generalPurposeBitFlag: number;
  compressionMethod: number;
  externalFileAttributes: number;
  compressedSize: number;
  uncompressedSize: number;
};

/** The two methods yauzl can decode; anything else could be neither scanned nor extracted. */
const STORED = 0;
const DEFLATED = 8;

/**
 * Entries smaller than this are exempt from the compression ratio bound: a
 * small file of repeated bytes (a blank image, a padded fixture) legitimately
 * compresses a thousandfold, and whatever it expands to is small and still
 * counted against maxUncompressedBytes.
 */
export const RATIO_EXEMPT_BYTES = 1024 * 1024;

/** Linux's PATH_MAX (the terminating NUL included) and NAME_MAX: longer paths and names can be listed but never written. */
export const PATH_MAX_BYTES = 4096;
const MAX_SEGMENT_BYTES = 255;

/**
 * An entry is written under the runner's extraction directory, whose own path
 * counts against PATH_MAX: names are held to PATH_MAX less this much room for
 * it, so that an accepted name is one the runner can write.
 */
const EXTRACTION_ROOT_ROOM_BYTES = 512;
const MAX_NAME_BYTES = PATH_MAX_BYTES - EXTRACTION_ROOT_ROOM_BYTES;

/**
 * Why `name` must not be written to disk, or undefined when it is safe.
 * Names are those of yauzl's strict decoding: backslashes are kept as they are,
 * so a Windows-style `..\x` is refused here rather than reinterpreted.
 */
export function checkEntryName(name: string): string | undefined {
  if (name.length === 0) return "empty name";
  if (name.includes("\0")) return "NUL byte in name";
  if (name.includes("\\")) return "backslash in name";
  if (name.startsWith("/")) return "absolute path";
  if (/^[a-zA-Z]:/.test(name)) return "drive letter in name";
  const segments = name.split("/");
  if (segments.includes("..")) return "parent directory (..) segment in name";
  // A UTF-16 code unit is at most 3 UTF-8 bytes: most names are too short to need counting.
  if (name.length * 3 > MAX_SEGMENT_BYTES) {
    if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `name longer than ${MAX_NAME_BYTES} bytes`;
    if (segments.some((segment) => Buffer.byteLength(segment) > MAX_SEGMENT_BYTES)) {
      return `path segment longer than ${MAX_SEGMENT_BYTES} bytes`;
    }
  }
  if (segments.every((segment) => segment === "" || segment === ".")) return "name denotes no file";
  return undefined;
}

/**
 * The relative path an entry is written to: `a//b/./c/` and `a/b/c` are the
 * same file on disk, so duplicates are detected on this form.
 */
export function entryPath(name: string): string {
  // Most names have no empty or `.` segment; splitting them all would dominate inspection time.
  if (!EMPTY_OR_DOT_SEGMENT.test(name)) return name;
  return name
    .split("/")
    .filter((segment) => segment !== "" && segment !== ".")
    .join("/");
}

const EMPTY_OR_DOT_SEGMENT = /(^|\/)\.?(\/|$)/;

/** An archive of directories alone, or of nothing, has no source to scan: refused rather than "scanned" clean. */
export function checkContainsFiles(fileCount: number): string | undefined {
  return fileCount === 0 ? "the archive contains no files" : undefined;
}

export function isDirectoryEntry(name: string): boolean {
  return name.endsWith("/");
}

/**
 * A symbolic link keeps its unix mode in the high 16 bits of the external
 * attributes. The mode is read whatever host the record claims: Info-ZIP
 * honours it for a dozen unix-like hosts, and a link is refused, not
 * extracted, so reading it too eagerly costs nothing.
 */
export function isSymlinkEntry(entry: Pick<EntryHeader, "externalFileAttributes">): boolean {
  return ((entry.externalFileAttributes >>> 16) & 0o170000) === 0o120000;
}

/** General purpose bit 0: traditional PKWARE or strong encryption. */
export function isEncrypted(entry: Pick<EntryHeader, "generalPurposeBitFlag">): boolean {
  return (entry.generalPurposeBitFlag & 0x1) !== 0;
}

/**
 * The compression ratio bound: an entry of at least RATIO_EXEMPT_BYTES whose
 * declared uncompressed/compressed ratio is above maxCompressionRatio is
 * refused. Deflate cannot do better than about 1032:1, so a higher declared
 * ratio is a lie, and source code rarely gets past 20:1; an entry beyond the
 * bound is a zip bomb or a forgery even when the archive's total is in limits.
 */
export function checkCompressionRatio(
  entry: Pick<EntryHeader, "compressedSize" | "uncompressedSize">,
  maxCompressionRatio: number,
): string | undefined {
  if (entry.uncompressedSize < RATIO_EXEMPT_BYTES) return undefined;
  const ratio = entry.uncompressedSize / entry.compressedSize;
  if (ratio <= maxCompressionRatio) return undefined;
  const shown = Number.isFinite(ratio) ? `${Math.round(ratio)}:1` : "unbounded";
  return `compression ratio ${shown} is over the limit of ${maxCompressionRatio}:1`;
}

/**
 * Every rule that one record must pass on its own, in the order they are
 * reported: why the entry is refused, or undefined. Rules across entries
 * (duplicates, overlapping data, totals) belong to the callers, which see the
 * whole directory.
 */
export function checkEntry(name: string, entry: EntryHeader, limits: ArchiveLimits): string | undefined {
  const unsafeName = checkEntryName(name);
  if (unsafeName !== undefined) return `unsafe entry name: ${unsafeName}`;
  if (isEncrypted(entry)) return "encrypted entry";
  if (isSymlinkEntry(entry)) return "symbolic link entry";
  if (entry.compressionMethod !== STORED && entry.compressionMethod !== DEFLATED) {
    return `unsupported compression method ${entry.compressionMethod}`;
  }
  // A stored entry's data is its content: sizes that differ mean one of them lies.
  if (entry.compressionMethod === STORED && entry.compressedSize !== entry.uncompressedSize) {
    return `stored entry declares ${entry.compressedSize} compressed and ${entry.uncompressedSize} uncompressed bytes`;
  }
  return checkCompressionRatio(entry, limits.maxCompressionRatio);
}

/**
 * The fewest bytes an entry's local header and data occupy from its local
 * header offset: the 30-byte fixed header, the name, the data. The local extra
 * field is left out because only the local header knows its length; this makes
 * the bound one an honest archive always meets.
 */
export function minimumLocalExtent(entry: { fileNameLength: number; compressedSize: number }): number {
  return LOCAL_HEADER_FIXED_BYTES + entry.fileNameLength + entry.compressedSize;
}

export const LOCAL_HEADER_FIXED_BYTES = 30;
