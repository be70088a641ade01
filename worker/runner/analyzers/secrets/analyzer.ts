/**
 * The secrets analyzer: finds credentials committed to the extracted source tree
 * with the rules of shared/secret-rules.ts. This module walks the tree and hands
 * batches of files to the scanners; one file's scan is file-scanner.ts (with
 * keywords.ts, credibility.ts and redaction.ts), the threads worker-pool.ts.
 *
 * What is scanned
 * - Regular files under the root. Symbolic links are not followed (a link can
 *   point outside the extracted archive) and count as skipped.
 * - Directories named in SKIPPED_DIRECTORY_NAMES are not entered: version-control
 *   internals (.git, .hg, .svn: compressed objects and copies of files that are
 *   scanned anyway) and node_modules (installed third-party packages: their test
 *   fixtures are full of fake keys, and they are not the user's code to fix).
 *   Files under them are not counted, the directories are (skipped.ts: every
 *   reason a directory or file is not read has its own count in the summary).
 * - Files larger than DEFAULT_MAX_FILE_BYTES (1 MiB, `maxFileBytes` to change it)
 *   are skipped, after reading at most one byte more than the limit: past that
 *   size a file is a bundle, a dump or data, and one such file would cost more
 *   than the rest of a typical tree.
 * - Binary files are skipped: a NUL byte in the first BINARY_SNIFF_BYTES (8 KiB),
 *   the test git and grep use.
 *
 * As it goes
 * - scanTreeProgressively yields each batch's new findings and the counts so far
 *   as soon as the batch is done, so the runner sends findings while the scan
 *   goes on (a crash keeps what was found before it) and reports its progress;
 *   scanTree is the same scan run to its summary.
 */
import { readdir } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { emptyResult, type CandidateFile, type FileBatchResult } from "./batch.ts";
import type { SecretFinding } from "./file-scanner.ts";
import { scanBatches } from "./worker-pool.ts";
import { addSkips, noSkips, skippedDirectoryReason, VENDORED_DIRECTORY_NAMES, VERSION_CONTROL_DIRECTORY_NAMES, type SkipCounts } from "../skipped.ts";

export type { SecretFinding } from "./file-scanner.ts";

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;
export const SKIPPED_DIRECTORY_NAMES: ReadonlySet<string> = new Set([...VERSION_CONTROL_DIRECTORY_NAMES, ...VENDORED_DIRECTORY_NAMES]);
/** How long the calling thread scans alone before deciding whether to start worker threads (see scanBatches). */
const START_WORKERS_AFTER_MS = 200;
/** Files per batch: enough to amortize a message to a worker, few enough to share the tail of a scan evenly. */
const BATCH_FILES = 32;

export interface SecretScanSummary {
  findings: SecretFinding[];
  filesScanned: number;
  /** Regular files not scanned: binary, over the size limit, unreadable; and symbolic links. */
  filesSkipped: number;
  /** What was not read, by reason (directories not entered included). */
  skipped: SkipCounts;
  bytesScanned: number;
}

export interface ScanTreeOptions {
  maxFileBytes?: number;
  /** Threads that scan, the calling one included (default: os.availableParallelism()); 1 scans in-process. */
  concurrency?: number;
  /** How long the calling thread scans alone before deciding on workers (default START_WORKERS_AFTER_MS; 0 starts them at once). */
  startWorkersAfterMs?: number;
  /**
   * Whether the calling thread scans too (default true). With false (and a
   * concurrency above 1), `concurrency` workers scan from the start and the
   * calling thread's event loop stays free.
   */
  scanOnCallingThread?: boolean;
}

/** One step of a tree scan: the findings of the batches of files done since the last step, and the counts so far. */
export interface TreeScanProgress {
  /** New findings only: each fingerprint is yielded once per tree. */
  findings: SecretFinding[];
  /** Regular files listed for scanning. */
  filesTotal: number;
  /** Of those, the files scanned or skipped so far. */
  filesDone: number;
  bytesScanned: number;
}

/**
 * Scans every regular file under `rootDir` (see the module comment for what is
 * skipped), yielding findings as batches of files are done, so that a caller
 * can report them while the scan goes on; returns the summary, its findings
 * sorted by path, line, column and rule. Leaving the iteration early stops the
 * scan (and its worker threads).
 */
export async function* scanTreeProgressively(rootDir: string, options: ScanTreeOptions = {}): AsyncGenerator<TreeScanProgress, SecretScanSummary> {
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? availableParallelism()));

  const listing = await listCandidateFiles(rootDir);
  const batches = batchesOf(listing.files);
  const scanOnCallingThread = concurrency === 1 ? true : (options.scanOnCallingThread ?? true);
  const results: FileBatchResult[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  let failure: unknown;
  let abandoned = false;
  const scanning = scanBatches(
    batches,
    maxFileBytes,
    {
      scanOnCallingThread,
      workerCount: scanOnCallingThread ? concurrency - 1 : Math.min(concurrency, batches.length),
      startWorkersAfterMs: options.startWorkersAfterMs ?? START_WORKERS_AFTER_MS,
    },
    (result) => {
      results.push(result);
      wake?.();
    },
    () => abandoned,
  ).then(
    () => {
      finished = true;
      wake?.();
    },
    (error: unknown) => {
      failure = error;
      finished = true;
      wake?.();
    },
  );

  const total = emptyResult();
  const findings = new Map<string, SecretFinding>();
  try {
    for (;;) {
      while (results.length > 0) {
        const result = results.shift()!;
        const fresh = result.findings.filter((finding) => !findings.has(finding.fingerprint));
        for (const finding of fresh) findings.set(finding.fingerprint, finding);
        total.filesScanned += result.filesScanned;
        total.filesSkipped += result.filesSkipped;
        addSkips(total.skipped, result.skipped);
        total.bytesScanned += result.bytesScanned;
        yield {
          findings: fresh,
          filesTotal: listing.files.length,
          filesDone: total.filesScanned + total.filesSkipped,
          bytesScanned: total.bytesScanned,
        };
      }
      if (finished) break;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    if (failure !== undefined) throw failure;
  } finally {
    abandoned = true;
    await scanning;
  }
  return {
    findings: [...findings.values()].sort(compareFindings),
    filesScanned: total.filesScanned,
    filesSkipped: total.filesSkipped + listing.filesSkipped,
    skipped: addSkips(total.skipped, listing.skipped),
    bytesScanned: total.bytesScanned,
  };
}

/** The whole scan at once: scanTreeProgressively, run to its summary. */
export async function scanTree(rootDir: string, options: ScanTreeOptions = {}): Promise<SecretScanSummary> {
  const scan = scanTreeProgressively(rootDir, options);
  for (;;) {
    const step = await scan.next();
    if (step.done) return step.value;
  }
}

function compareFindings(a: SecretFinding, b: SecretFinding): number {
  if (a.path !== b.path) return a.path < b.path ? -1 : 1;
  return a.line - b.line || a.column - b.column || (a.ruleId < b.ruleId ? -1 : a.ruleId > b.ruleId ? 1 : 0);
}

/**
 * Lists the regular files to read. Sizes are not looked up here: the reader
 * enforces the size limit with no extra system call per file.
 */
async function listCandidateFiles(rootDir: string): Promise<{ files: CandidateFile[]; filesSkipped: number; skipped: SkipCounts }> {
  const files: CandidateFile[] = [];
  let filesSkipped = 0;
  const skipped = noSkips();
  const visit = async (directory: string, relativeDirectory: string): Promise<void> => {
    const subdirectories: Promise<void>[] = [];
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const absolutePath = `${directory}${path.sep}${entry.name}`;
      const relativePath = relativeDirectory ? `${relativeDirectory}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        const reason = skippedDirectoryReason(entry.name);
        if (reason) skipped[reason]++;
        else subdirectories.push(visit(absolutePath, relativePath));
      } else if (entry.isFile()) {
        files.push({ absolutePath, relativePath });
      } else if (entry.isSymbolicLink()) {
        filesSkipped++;
        skipped.symbolicLinks++;
      }
    }
    await Promise.all(subdirectories);
  };
  await visit(path.resolve(rootDir), "");
  return { files, filesSkipped, skipped };
}

function batchesOf(files: CandidateFile[]): CandidateFile[][] {
  const batches: CandidateFile[][] = [];
  for (let index = 0; index < files.length; index += BATCH_FILES) batches.push(files.slice(index, index + BATCH_FILES));
  return batches;
}
