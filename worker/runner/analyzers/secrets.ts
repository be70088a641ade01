/**
 * The secrets analyzer: finds credentials committed to the extracted source tree
 * with the rules of secret-rules.ts.
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
 * How a file is scanned
 * - The bytes are searched once for all rule keywords at a time (a table of each
 *   keyword's rarest pair of bytes); a rule's regex then runs only over the line
 *   of a hit, decoded (a window around the hit on very long lines, the bytes
 *   after the keyword for rules that span lines). A file without keywords is
 *   never decoded.
 * - Generic rules then check the secret's Shannon entropy; placeholders listed in
 *   a rule's allowlist and stopwords are dropped; when two rules match
 *   overlapping text, the earlier rule of the catalog wins.
 * - Lines are 1-based; columns are 1-based UTF-16 code units (SARIF's default
 *   column kind) of the first character of the secret itself.
 *
 * Fingerprint and deduplication
 * - fingerprint = sha256hex(`${ruleId}:${path}:${sha256hex(secret)}`). It does
 *   not contain the line, so it survives edits that move the secret, and it is
 *   the same on every run and machine for the same secret in the same file.
 * - One finding per fingerprint per scan: the same secret repeated in one file is
 *   reported once, at its first occurrence. The same secret in two files is two
 *   findings (two places to clean up).
 *
 * Redaction
 * - A finding never carries the secret. Its snippet is the line with every
 *   occurrence of the secret replaced by its first characters (at most 4, and at
 *   most a quarter of the secret) followed by `****`; long lines are cut to a
 *   window around the secret.
 *
 * As it goes
 * - scanTreeProgressively yields each batch's new findings and the counts so far
 *   as soon as the batch is done, so the runner sends findings while the scan
 *   goes on (a crash keeps what was found before it) and reports its progress;
 *   scanTree is the same scan run to its summary.
 *
 * Parallelism
 * - scanTree scans on up to `concurrency` threads (default
 *   os.availableParallelism()), all taking batches of files from one queue: the
 *   calling thread, which starts at once, and `concurrency - 1` worker threads
 *   when, START_WORKERS_AFTER_MS into the scan, the rest of it looks long enough
 *   to repay their start-up (about half a CPU-second each) and the machine has a
 *   core to spare; see scanBatches. `scanOnCallingThread: false` leaves the calling thread
 *   out and starts `concurrency` workers at once. The worker entry point is this
 *   module itself, loaded through tsx's loader when it is a .ts file, as
 *   bin/vega.mjs does for the main thread.
 */
import { createHash } from "node:crypto";
import { closeSync, constants as fsConstants, openSync, readSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { addSkips, noSkips, skippedDirectoryReason, VENDORED_DIRECTORY_NAMES, VERSION_CONTROL_DIRECTORY_NAMES, type SkipCounts } from "./skipped.ts";
import { SECRET_RULES, type SecretRule, type SecretSeverity } from "../../../shared/secret-rules.ts";

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;
export const BINARY_SNIFF_BYTES = 8 * 1024;
export const SKIPPED_DIRECTORY_NAMES: ReadonlySet<string> = new Set([...VERSION_CONTROL_DIRECTORY_NAMES, ...VENDORED_DIRECTORY_NAMES]);
/** How long the calling thread scans alone before deciding whether to start worker threads (see scanBatches). */
export const START_WORKERS_AFTER_MS = 200;
/** About what a worker takes to start (tsx and esbuild load in it); measured here, 0.5 to 0.9 s. */
const WORKER_START_UP_MS = 500;
/** The share of a core the calling thread must have had meanwhile for workers to start. */
const MIN_CPU_SHARE_FOR_WORKERS = 0.8;

/** Lines longer than this (minified code, data) are searched in a window around each keyword hit. */
const LONG_LINE_BYTES = 16 * 1024;
const LONG_LINE_CONTEXT_BYTES = 4 * 1024;
/** How far from its keyword a rule that spans lines may match (a PEM key is a few KiB). */
const SPAN_WINDOW_BYTES = 20 * 1024;
const SNIPPET_MAX_CHARS = 200;
const SNIPPET_CONTEXT_BEFORE = 60;
/** Files per batch: enough to amortize a message to a worker, few enough to share the tail of a scan evenly. */
const BATCH_FILES = 32;
const NEWLINE = 0x0a;

export interface SecretFinding {
  ruleId: string;
  severity: SecretSeverity;
  /** Relative to the scanned root, with forward slashes. */
  path: string;
  line: number;
  column: number;
  /** Where the secret ends: its last line, and the column after its last character (SARIF's exclusive endColumn). */
  endLine: number;
  endColumn: number;
  message: string;
  /** The line with the secret redacted. */
  snippet: string;
  fingerprint: string;
}

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

// ---------------------------------------------------------------------------
// Rules and keywords, compiled once per thread

interface CompiledRule {
  rule: SecretRule;
  priority: number;
  /**
   * The rule's pattern with `d` (group offsets) and `g` to iterate over a line;
   * a rule that spans lines gets `y` instead, as its match starts at its keyword.
   */
  regex: RegExp;
}

interface Keyword {
  bytes: Buffer;
  ignoreCase: boolean;
  /** Offset in the keyword of the byte pair the index finds it by. */
  anchor: number;
  rules: CompiledRule[];
}

const compiledRules: CompiledRule[] = SECRET_RULES.map((rule, priority) => ({
  rule,
  priority,
  regex: new RegExp(rule.pattern.source, uniqueFlags(rule.pattern.flags + (rule.spansLines ? "dy" : "dg"))),
}));

/** ASCII upper case to lower case; every other byte to itself. */
const FOLD_CASE = Uint8Array.from({ length: 256 }, (_, byte) => (byte >= 0x41 && byte <= 0x5a ? byte + 0x20 : byte));

/**
 * English letter frequencies (percent), to guess which byte pair of a keyword
 * is rarest in text; bytes that are not letters count as 1 (space as 15), upper
 * case letters of case-sensitive keywords as a quarter of their lower case.
 */
const LETTER_FREQUENCY: Record<string, number> = {
  e: 12.7, t: 9.1, a: 8.2, o: 7.5, i: 7, n: 6.7, s: 6.3, h: 6.1, r: 6, d: 4.3, l: 4, c: 2.8, u: 2.8,
  m: 2.4, w: 2.4, f: 2.2, g: 2, y: 2, p: 1.9, b: 1.5, v: 1, k: 0.8, j: 0.15, x: 0.15, q: 0.1, z: 0.07,
};

function byteFrequency(byte: number, ignoreCase: boolean): number {
  const character = String.fromCharCode(byte);
  const frequency = LETTER_FREQUENCY[character.toLowerCase()];
  if (frequency === undefined) return character === " " ? 15 : 1;
  return ignoreCase || character === character.toLowerCase() ? frequency : frequency / 4;
}

/**
 * The keyword index. Each keyword is anchored on its rarest-looking pair of
 * adjacent bytes ("tg" of postgres, "sw" of password; every case variant of the
 * pair for case-insensitive keywords), and the pair maps to a bucket of the
 * keywords anchored on it. Scanning is one table lookup per byte, and only the
 * positions whose pair is in the table (under 1% of the bytes of source code)
 * are compared with keywords. Measured here: irregexp searching an alternation
 * of the ~45 keywords ran at a fifth of this speed, and anchoring on each
 * keyword's first two bytes (common pairs such as "re", "se", "to") at half.
 */
const keywordBuckets: Keyword[][] = [[]];
const bucketOfPair = new Uint8Array(65536);
{
  const keywords = new Map<string, Keyword>();
  for (const compiled of compiledRules) {
    const ignoreCase = compiled.rule.pattern.flags.includes("i");
    for (const literal of compiled.rule.keywords) {
      const text = ignoreCase ? literal.toLowerCase() : literal;
      const key = `${ignoreCase ? "i" : "s"}:${text}`;
      let keyword = keywords.get(key);
      if (!keyword) {
        const bytes = Buffer.from(text, "latin1");
        if (bytes.length < 2) throw new Error(`secret rule ${compiled.rule.id}: keyword "${text}" is shorter than two bytes`);
        let anchor = 0;
        let rarest = Infinity;
        for (let offset = 0; offset + 1 < bytes.length; offset++) {
          const score = byteFrequency(bytes[offset], ignoreCase) * byteFrequency(bytes[offset + 1], ignoreCase);
          if (score < rarest) {
            rarest = score;
            anchor = offset;
          }
        }
        keyword = { bytes, ignoreCase, anchor, rules: [] };
        keywords.set(key, keyword);
      }
      keyword.rules.push(compiled);
    }
  }
  const caseVariants = (byte: number, ignoreCase: boolean) =>
    ignoreCase && byte >= 0x61 && byte <= 0x7a ? [byte, byte - 0x20] : [byte];
  for (const keyword of keywords.values()) {
    for (const first of caseVariants(keyword.bytes[keyword.anchor], keyword.ignoreCase)) {
      for (const second of caseVariants(keyword.bytes[keyword.anchor + 1], keyword.ignoreCase)) {
        const pair = (first << 8) | second;
        if (bucketOfPair[pair] === 0) {
          bucketOfPair[pair] = keywordBuckets.length;
          keywordBuckets.push([]);
        }
        keywordBuckets[bucketOfPair[pair]].push(keyword);
      }
    }
  }
}

function keywordAt(content: Buffer, start: number, keyword: Keyword): boolean {
  const { bytes } = keyword;
  if (start < 0 || start + bytes.length > content.length) return false;
  if (keyword.ignoreCase) {
    for (let index = 0; index < bytes.length; index++) if (FOLD_CASE[content[start + index]] !== bytes[index]) return false;
  } else {
    for (let index = 0; index < bytes.length; index++) if (content[start + index] !== bytes[index]) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// One file

interface SecretMatch {
  compiled: CompiledRule;
  /** Byte offsets of the secret in the file. */
  start: number;
  end: number;
  secret: string;
}

/**
 * Scans one file's content. `filePath` is reported as given (backslashes turned
 * into slashes); binary content (a NUL byte in the first 8 KiB) has no findings.
 */
export function scanContent(filePath: string, content: Buffer | string): SecretFinding[] {
  const bytes = typeof content === "string" ? Buffer.from(content, "utf8") : content;
  if (isBinary(bytes)) return [];
  return findSecrets(filePath.replace(/\\/g, "/"), bytes);
}

export function isBinary(content: Buffer): boolean {
  return (content.length > BINARY_SNIFF_BYTES ? content.subarray(0, BINARY_SNIFF_BYTES) : content).includes(0);
}

function findSecrets(relativePath: string, content: Buffer): SecretFinding[] {
  // Most files have no keyword at all: the search state is made at the first candidate.
  let search: KeywordHitSearch | null = null;
  const length = content.length;
  let previous = length > 0 ? content[0] : 0;
  for (let index = 1; index < length; index++) {
    const current = content[index];
    const bucket = bucketOfPair[(previous << 8) | current];
    previous = current;
    if (bucket !== 0) (search ??= new KeywordHitSearch(content)).checkCandidate(index - 1, keywordBuckets[bucket]);
  }
  const matches = search?.finish() ?? [];
  if (matches.length === 0) return [];
  return toFindings(relativePath, content, withoutOverlaps(matches));
}

/**
 * Turns keyword hits into rule searches. Hits come in file order; the rules of
 * all hits on one line (or one window of a long line) are searched together
 * once, over that line decoded.
 */
class KeywordHitSearch {
  readonly matches: SecretMatch[] = [];
  private windowStart = 0;
  private windowEnd = 0;
  private lineEnd = -1;
  private readonly pendingRules: CompiledRule[] = [];
  private readonly pendingInWindow = new Int32Array(compiledRules.length).fill(-1);

  constructor(private readonly content: Buffer) {}

  /** `pairOffset`: where a pair of the keyword index was found. */
  checkCandidate(pairOffset: number, bucket: Keyword[]): void {
    for (const keyword of bucket) {
      const start = pairOffset - keyword.anchor;
      if (keywordAt(this.content, start, keyword)) this.onKeyword(start, keyword);
    }
  }

  finish(): SecretMatch[] {
    this.flush();
    return this.matches;
  }

  private onKeyword(offset: number, keyword: Keyword): void {
    const content = this.content;
    // Hits arrive in the order of their anchors, so one may start a few bytes
    // before the previous one: a new window then opens for it.
    if (offset < this.windowStart || offset >= this.windowEnd) {
      this.flush();
      const lineStart = offset === 0 ? 0 : content.lastIndexOf(NEWLINE, offset - 1) + 1;
      const newline = content.indexOf(NEWLINE, offset);
      const lineEnd = newline === -1 ? content.length : newline;
      this.lineEnd = lineEnd;
      if (lineEnd - lineStart > LONG_LINE_BYTES) {
        this.windowStart = utf8CharacterStart(content, Math.max(lineStart, offset - LONG_LINE_CONTEXT_BYTES));
        this.windowEnd = Math.min(lineEnd, offset + keyword.bytes.length + LONG_LINE_CONTEXT_BYTES);
      } else {
        this.windowStart = lineStart;
        this.windowEnd = lineEnd;
      }
    } else if (this.windowEnd < this.lineEnd) {
      this.windowEnd = Math.min(this.lineEnd, Math.max(this.windowEnd, offset + keyword.bytes.length + LONG_LINE_CONTEXT_BYTES));
    }
    for (const compiled of keyword.rules) {
      if (compiled.rule.spansLines) {
        this.searchFromKeyword(compiled, offset);
      } else if (this.pendingInWindow[compiled.priority] !== this.windowStart) {
        this.pendingInWindow[compiled.priority] = this.windowStart;
        this.pendingRules.push(compiled);
      }
    }
  }

  private flush(): void {
    if (this.pendingRules.length === 0) return;
    const text = this.content.toString("utf8", this.windowStart, this.windowEnd);
    for (const compiled of this.pendingRules) this.collect(compiled, text, this.windowStart, this.windowEnd);
    this.pendingRules.length = 0;
  }

  private searchFromKeyword(compiled: CompiledRule, offset: number): void {
    const end = Math.min(this.content.length, offset + SPAN_WINDOW_BYTES);
    this.collect(compiled, this.content.toString("utf8", offset, end), offset, end);
  }

  private collect(compiled: CompiledRule, text: string, byteStart: number, byteEnd: number): void {
    const { regex, rule } = compiled;
    // Decoding maps each byte of ASCII (and each invalid byte) to one UTF-16
    // unit; only text with multi-byte characters needs its offsets converted.
    const oneUnitPerByte = text.length === byteEnd - byteStart;
    regex.lastIndex = 0;
    for (let match = regex.exec(text); match !== null; match = regex.sticky ? null : regex.exec(text)) {
      if (match[0].length === 0) regex.lastIndex++;
      const group = match.findIndex((value, index) => index > 0 && value !== undefined);
      const span = group === -1 ? undefined : match.indices?.[group];
      if (!span) continue;
      const secret = match[group];
      if (!isCredible(rule, secret)) continue;
      const start = byteStart + (oneUnitPerByte ? span[0] : Buffer.byteLength(text.slice(0, span[0])));
      const end = start + (oneUnitPerByte ? secret.length : Buffer.byteLength(secret));
      this.matches.push({ compiled, start, end, secret });
    }
  }
}

/** Moves back from a byte inside a UTF-8 sequence to the byte that starts it. */
function utf8CharacterStart(content: Buffer, offset: number): number {
  let start = offset;
  while (start > 0 && offset - start < 3 && (content[start] & 0xc0) === 0x80) start--;
  return start;
}

function isCredible(rule: SecretRule, secret: string): boolean {
  if (rule.entropy !== undefined && shannonEntropy(secret) < rule.entropy) return false;
  if (rule.allowlist?.some((placeholder) => placeholder.test(secret))) return false;
  if (rule.stopwords) {
    const folded = secret.toLowerCase();
    if (rule.stopwords.some((stopword) => folded.includes(stopword))) return false;
  }
  return true;
}

/** Shannon entropy of a string, in bits per character. */
export function shannonEntropy(value: string): number {
  const characters = [...value];
  if (characters.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const character of characters) counts.set(character, (counts.get(character) ?? 0) + 1);
  let entropy = 0;
  for (const count of counts.values()) {
    const probability = count / characters.length;
    entropy -= probability * Math.log2(probability);
  }
  return entropy;
}

/** Keeps, of matches whose secrets overlap, the one of the earlier rule in the catalog. */
function withoutOverlaps(matches: SecretMatch[]): SecretMatch[] {
  const byPriority = [...matches].sort((a, b) => a.compiled.priority - b.compiled.priority || a.start - b.start);
  const kept: SecretMatch[] = []; // sorted by start, never overlapping
  for (const match of byPriority) {
    let low = 0;
    let high = kept.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (kept[middle].start < match.start) low = middle + 1;
      else high = middle;
    }
    const before = kept[low - 1];
    const after = kept[low];
    if (before && before.end > match.start) continue;
    if (after && after.start < match.end) continue;
    kept.splice(low, 0, match);
  }
  return kept;
}

function toFindings(relativePath: string, content: Buffer, matches: SecretMatch[]): SecretFinding[] {
  const findings: SecretFinding[] = [];
  const seen = new Set<string>();
  let line = 1;
  let lineStart = 0;
  for (const match of matches) {
    for (let newline = content.indexOf(NEWLINE, lineStart); newline !== -1 && newline < match.start; newline = content.indexOf(NEWLINE, lineStart)) {
      line++;
      lineStart = newline + 1;
    }
    const fingerprint = secretFingerprint(match.compiled.rule.id, relativePath, match.secret);
    if (seen.has(fingerprint)) continue;
    seen.add(fingerprint);
    const newline = content.indexOf(NEWLINE, lineStart);
    const lineText = content.toString("utf8", lineStart, newline === -1 ? content.length : newline).replace(/\r$/, "");
    const column = content.toString("utf8", lineStart, match.start).length + 1;
    const redacted = redactSecret(match.secret);
    findings.push({
      ruleId: match.compiled.rule.id,
      severity: match.compiled.rule.severity,
      path: relativePath,
      line,
      column,
      ...endOfSecret(line, column, match.secret),
      message: `${match.compiled.rule.name} found (${redacted}). Revoke or rotate it, then remove it from the source.`,
      snippet: redactedSnippet(lineText, column - 1, match.secret),
      fingerprint,
    });
  }
  return findings;
}

/** The end of a secret that starts at line:column: a PEM block ends lines later, at the column after its last character. */
function endOfSecret(line: number, column: number, secret: string): { endLine: number; endColumn: number } {
  const lines = secret.split("\n");
  if (lines.length === 1) return { endLine: line, endColumn: column + secret.length };
  return { endLine: line + lines.length - 1, endColumn: lines[lines.length - 1].replace(/\r$/, "").length + 1 };
}

/** sha256hex(`${ruleId}:${path}:${sha256hex(secret)}`): stable across runs and line moves. */
export function secretFingerprint(ruleId: string, relativePath: string, secret: string): string {
  const secretHash = createHash("sha256").update(secret, "utf8").digest("hex");
  return createHash("sha256").update(`${ruleId}:${relativePath}:${secretHash}`, "utf8").digest("hex");
}

/** The first characters of a secret (at most 4, at most a quarter of it) and `****`. */
export function redactSecret(secret: string): string {
  const visible = Math.min(4, Math.floor(secret.length / 4));
  return `${secret.slice(0, visible)}****`;
}

function redactedSnippet(lineText: string, secretColumnIndex: number, secret: string): string {
  const firstLineOfSecret = secret.split(/\r?\n/, 1)[0].replace(/\r$/, "");
  const redactedLine = firstLineOfSecret.length > 0 ? lineText.split(firstLineOfSecret).join(redactSecret(secret)) : lineText;
  if (redactedLine.length <= SNIPPET_MAX_CHARS) return redactedLine;
  const start = Math.max(0, secretColumnIndex - SNIPPET_CONTEXT_BEFORE);
  const end = Math.min(redactedLine.length, start + SNIPPET_MAX_CHARS);
  return `${start > 0 ? "…" : ""}${redactedLine.slice(start, end)}${end < redactedLine.length ? "…" : ""}`;
}

// ---------------------------------------------------------------------------
// A tree

interface CandidateFile {
  absolutePath: string;
  relativePath: string;
}

interface FileBatchResult {
  findings: SecretFinding[];
  filesScanned: number;
  filesSkipped: number;
  skipped: SkipCounts;
  bytesScanned: number;
}

const emptyResult = (): FileBatchResult => ({ findings: [], filesScanned: 0, filesSkipped: 0, skipped: noSkips(), bytesScanned: 0 });

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

/**
 * Reads and scans files on the current thread, one at a time, through one read
 * buffer (see readFileWithin).
 */
function scanBatch(files: CandidateFile[], maxFileBytes: number): FileBatchResult {
  const result = emptyResult();
  for (const file of files) {
    const content = readFileWithin(file.absolutePath, maxFileBytes);
    if (content === null || content === OVER_SIZE_LIMIT || isBinary(content)) {
      result.filesSkipped++;
      result.skipped[content === null ? "unreadableFiles" : content === OVER_SIZE_LIMIT ? "oversizedFiles" : "binaryFiles"]++;
      continue;
    }
    result.filesScanned++;
    result.bytesScanned += content.length;
    for (const finding of findSecrets(file.relativePath, content)) result.findings.push(finding);
  }
  return result;
}

let readBuffer = Buffer.alloc(0);
/** readFileWithin's answer for a file larger than the limit (null is one that could not be read). */
const OVER_SIZE_LIMIT: unique symbol = Symbol("over the size limit");

/**
 * The file's bytes, or null when it is larger than `maxFileBytes`, is a
 * symbolic link, or cannot be read. The bytes are a view of a buffer that the
 * next call overwrites: findings copy what they keep. Source trees are mostly
 * small files, and on this kind of machine the system calls and allocations per
 * file cost more than scanning the bytes, so a file costs open, one read (a
 * short read of a regular file is its end; a full buffer means the file is over
 * the limit, without an fstat to learn its size) and close, and no allocation.
 */
function readFileWithin(absolutePath: string, maxFileBytes: number): Buffer | typeof OVER_SIZE_LIMIT | null {
  if (readBuffer.length < maxFileBytes + 1) readBuffer = Buffer.allocUnsafe(maxFileBytes + 1);
  let descriptor: number;
  try {
    // O_NOFOLLOW: a file replaced by a link after the listing is not followed;
    // O_NONBLOCK: nor does a FIFO put there block the scan.
    descriptor = openSync(absolutePath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const length = readSync(descriptor, readBuffer, 0, maxFileBytes + 1, 0);
    return length > maxFileBytes ? OVER_SIZE_LIMIT : readBuffer.subarray(0, length);
  } catch {
    return null;
  } finally {
    closeSync(descriptor);
  }
}

// ---------------------------------------------------------------------------
// The worker pool

const WORKER_ROLE = "vega-secrets-scanner";

interface ScannerWorkerData {
  role: typeof WORKER_ROLE;
  moduleUrl: string;
  /** tsx's ESM API, when this module is TypeScript source. */
  tsxApiUrl: string | null;
}

type ScannerRequest = { files: CandidateFile[]; maxFileBytes: number };
type ScannerResponse = { ok: true; result: FileBatchResult } | { ok: false; error: string };

// An eval'd CommonJS bootstrap: it registers tsx's loader when this module is
// TypeScript source (vitest and `tsx` load it through their own hooks, which a
// worker thread does not inherit), then imports this module, which serves.
const WORKER_BOOTSTRAP = `
const { workerData } = require("node:worker_threads");
(workerData.tsxApiUrl ? import(workerData.tsxApiUrl).then((tsx) => tsx.register()) : Promise.resolve())
  .then(() => import(workerData.moduleUrl));
`;

/**
 * Scans the batches on the calling thread and, for long scans, on worker
 * threads too, all taking the next batch from one queue. A worker costs about
 * half a CPU-second to start (tsx and esbuild load in it), so after
 * `startWorkersAfterMs` the calling thread projects the time the rest of the
 * scan will take at its pace so far, and starts workers only if that is at
 * least twice a worker's start-up, and only if it had most of a core to itself
 * meanwhile: measured here on an oversubscribed machine, starting a worker made
 * a 200 MB scan slower, not faster. `startWorkersAfterMs: 0` starts them at
 * once, as does leaving the calling thread out (`scanOnCallingThread: false`). The event loop gets a turn between batches, so the
 * runner's heartbeats, the workers' results and their requests for more go on.
 * Each batch's result goes to `onResult` as it is done; once `abandoned()`
 * answers true, no further batch is started.
 */
async function scanBatches(
  batches: CandidateFile[][],
  maxFileBytes: number,
  plan: { workerCount: number; scanOnCallingThread: boolean; startWorkersAfterMs: number },
  onResult: (result: FileBatchResult) => void,
  abandoned: () => boolean,
): Promise<void> {
  let nextBatch = 0;
  let workerFailure: unknown = null;
  const workers: Array<{ thread: Worker; busy: boolean; release: () => void }> = [];
  const workersDone: Promise<void>[] = [];

  const startWorkers = (count: number) => {
    const moduleUrl = import.meta.url;
    const data: ScannerWorkerData = {
      role: WORKER_ROLE,
      moduleUrl,
      tsxApiUrl: moduleUrl.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : null,
    };
    for (let index = 0; index < count; index++) {
      const thread = new Worker(WORKER_BOOTSTRAP, { eval: true, workerData: data, execArgv: [] });
      const done = new Promise<void>((resolve, reject) => {
        const record = { thread, busy: false, release: resolve };
        workers.push(record);
        const sendNext = () => {
          record.busy = nextBatch < batches.length && !abandoned();
          if (!record.busy) return resolve();
          const request: ScannerRequest = { files: batches[nextBatch++], maxFileBytes };
          thread.postMessage(request);
        };
        thread.on("message", (response: ScannerResponse | "ready") => {
          if (response === "ready") return sendNext();
          if (!response.ok) return reject(new Error(`secret scanner worker failed: ${response.error}`));
          onResult(response.result);
          sendNext();
        });
        thread.once("error", reject);
        thread.once("exit", (code) => {
          if (record.busy) reject(new Error(`secret scanner worker exited with code ${code} during a batch`));
          else resolve();
        });
      });
      done.catch((error: unknown) => {
        workerFailure ??= error;
      });
      workersDone.push(done);
    }
  };

  try {
    if (!plan.scanOnCallingThread) startWorkers(plan.workerCount);
    const started = performance.now();
    const startedCpu = process.cpuUsage();
    let workersConsidered = plan.workerCount === 0;
    while (plan.scanOnCallingThread && nextBatch < batches.length && workerFailure === null && !abandoned()) {
      const elapsedMs = performance.now() - started;
      if (!workersConsidered && elapsedMs >= plan.startWorkersAfterMs) {
        workersConsidered = true;
        const remainingMs = nextBatch === 0 ? Infinity : (elapsedMs / nextBatch) * (batches.length - nextBatch);
        // On a machine whose cores are taken, a thread that got less than most
        // of a core for itself would only add the workers' start-up to the bill.
        const { user, system } = process.cpuUsage(startedCpu);
        const coreToSpare = (user + system) / 1000 >= MIN_CPU_SHARE_FOR_WORKERS * elapsedMs;
        if (plan.startWorkersAfterMs === 0 || (remainingMs >= 2 * WORKER_START_UP_MS && coreToSpare)) {
          startWorkers(Math.min(plan.workerCount, batches.length - nextBatch - 1));
        }
      }
      onResult(scanBatch(batches[nextBatch++], maxFileBytes));
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Once the calling thread has emptied the queue (or the scan is abandoned), wait
    // for the batches in flight only, not for workers still loading.
    if (nextBatch >= batches.length || abandoned()) for (const worker of workers) if (!worker.busy) worker.release();
    await Promise.all(workersDone);
  } finally {
    await Promise.all(workers.map((worker) => worker.thread.terminate()));
  }
}

function serveScanRequests(): void {
  const port = parentPort;
  if (!port) return;
  port.on("message", (request: ScannerRequest) => {
    let response: ScannerResponse;
    try {
      response = { ok: true, result: scanBatch(request.files, request.maxFileBytes) };
    } catch (error) {
      response = { ok: false, error: error instanceof Error ? error.message : String(error) };
    }
    port.postMessage(response);
  });
  port.postMessage("ready");
}

if (!isMainThread && (workerData as Partial<ScannerWorkerData> | null)?.role === WORKER_ROLE) serveScanRequests();

// ---------------------------------------------------------------------------

function uniqueFlags(flags: string): string {
  return [...new Set(flags)].join("");
}
