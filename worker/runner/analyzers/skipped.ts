/**
 * What an analyzer did not read, counted by reason, so that a scan of a
 * dependency tree says "1 vendored directory skipped" instead of "0 files
 * scanned, 0 skipped". The counts travel in worker-thread messages and in the
 * ANALYZED event's data: plain numbers, nothing else.
 */

/** Directories that are not entered: installed third-party code. */
export const VENDORED_DIRECTORY_NAMES: ReadonlySet<string> = new Set(["node_modules"]);
/** Directories that are not entered: version-control metadata (history, not the tree the archive holds). */
export const VERSION_CONTROL_DIRECTORY_NAMES: ReadonlySet<string> = new Set([".git", ".hg", ".svn"]);

export interface SkipCounts {
  /** Directories not entered because they hold installed dependencies (node_modules). */
  vendoredDirectories: number;
  /** Directories not entered because they are version-control metadata (.git, .hg, .svn). */
  versionControlDirectories: number;
  /** Files with a NUL byte in their first 8 KiB. */
  binaryFiles: number;
  /** Files over the analyzer's size limit (1 MiB). */
  oversizedFiles: number;
  /** Symbolic links (never followed: they may point outside the extracted archive). */
  symbolicLinks: number;
  /** Files that could not be opened or read (a FIFO, a permission the extraction could not give). */
  unreadableFiles: number;
}

export type SkipReason = keyof SkipCounts;

const DESCRIPTIONS: Record<SkipReason, [one: string, many: string]> = {
  vendoredDirectories: ["vendored directory", "vendored directories"],
  versionControlDirectories: ["version-control directory", "version-control directories"],
  binaryFiles: ["binary file", "binary files"],
  oversizedFiles: ["file over the size limit", "files over the size limit"],
  symbolicLinks: ["symbolic link", "symbolic links"],
  unreadableFiles: ["unreadable file", "unreadable files"],
};

export const noSkips = (): SkipCounts => ({
  vendoredDirectories: 0,
  versionControlDirectories: 0,
  binaryFiles: 0,
  oversizedFiles: 0,
  symbolicLinks: 0,
  unreadableFiles: 0,
});

/** The reason a directory is not entered, or undefined when it is scanned. */
export function skippedDirectoryReason(name: string): SkipReason | undefined {
  if (VENDORED_DIRECTORY_NAMES.has(name)) return "vendoredDirectories";
  if (VERSION_CONTROL_DIRECTORY_NAMES.has(name)) return "versionControlDirectories";
  return undefined;
}

export function addSkips(into: SkipCounts, from: SkipCounts): SkipCounts {
  for (const reason of Object.keys(into) as SkipReason[]) into[reason] += from[reason];
  return into;
}

/** Skipped files (not directories), the figure "N files skipped" has always meant. */
export const skippedFileCount = (counts: SkipCounts): number =>
  counts.binaryFiles + counts.oversizedFiles + counts.symbolicLinks + counts.unreadableFiles;

/** "1 vendored directory, 3 binary files" (reasons with a count only), or "nothing" when none. */
export function describeSkips(counts: SkipCounts): string {
  const parts = (Object.keys(DESCRIPTIONS) as SkipReason[])
    .filter((reason) => counts[reason] > 0)
    .map((reason) => `${counts[reason]} ${DESCRIPTIONS[reason][counts[reason] === 1 ? 0 : 1]}`);
  return parts.length ? parts.join(", ") : "nothing";
}
