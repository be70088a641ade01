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
 *   Files under them are not counted at all.
 * - Files larger than DEFAULT_MAX_FILE_BYTES (1 MiB, `maxFileBytes` to change it)
 *   are skipped without being read: past that size a file is a bundle, a dump or
 *   data, and one such file would cost more than the rest of a typical tree.
 * - Binary files are skipped: a NUL byte in the first BINARY_SNIFF_BYTES (8 KiB),
 *   the test git and grep use.
 *
 * How a file is scanned
 * - One regex holding every rule keyword finds the keyword hits in one pass; a
 *   rule's own regex then runs only over the line of a hit (a window around it
 *   on very long lines, the following bytes for rules that span lines). A file
 *   without keywords costs one pass.
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
 * Parallelism
 * - scanTree scans in-process when the tree holds less than
 *   POOL_THRESHOLD_BYTES of candidate files (starting threads costs more than it
 *   saves there); otherwise it starts a pool of `concurrency` worker threads
 *   (default: os.availableParallelism()) that each take batches of files. The
 *   worker entry point is this module itself, loaded through tsx's loader when
 *   it is a .ts file, as bin/vega.mjs does for the main thread.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { SECRET_RULES, type SecretRule, type SecretSeverity } from "./secret-rules.ts";

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;
export const BINARY_SNIFF_BYTES = 8 * 1024;
export const SKIPPED_DIRECTORY_NAMES: ReadonlySet<string> = new Set([".git", ".hg", ".svn", "node_modules"]);
/** Below this many bytes of candidate files, scanTree does not start threads. */
export const POOL_THRESHOLD_BYTES = 32 * 1024 * 1024;

/** Lines longer than this are searched in a window around each keyword hit. */
const LONG_LINE_CHARS = 16 * 1024;
const LONG_LINE_CONTEXT_CHARS = 4 * 1024;
/** How far past its keyword's line a rule that spans lines may match (a PEM key). */
const SPAN_WINDOW_CHARS = 20 * 1024;
const SNIPPET_MAX_CHARS = 200;
const SNIPPET_CONTEXT_BEFORE = 60;
/** Files per message to a worker, and bytes: enough to amortize the round trip. */
const BATCH_MAX_FILES = 256;
const BATCH_MAX_BYTES = 4 * 1024 * 1024;

export interface SecretFinding {
  ruleId: string;
  severity: SecretSeverity;
  /** Relative to the scanned root, with forward slashes. */
  path: string;
  line: number;
  column: number;
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
  bytesScanned: number;
}

export interface ScanTreeOptions {
  maxFileBytes?: number;
  /** Worker threads for large trees; 1 scans in-process. */
  concurrency?: number;
  /** Candidate bytes from which a pool is used (tests and benchmarks lower it). */
  poolThresholdBytes?: number;
}

// ---------------------------------------------------------------------------
// Rules, compiled once per thread

interface CompiledRule {
  rule: SecretRule;
  priority: number;
  /** The rule's pattern with `g` (iterate over a window) and `d` (group offsets). */
  regex: RegExp;
}

const compiledRules: CompiledRule[] = SECRET_RULES.map((rule, priority) => ({
  rule,
  priority,
  regex: new RegExp(rule.pattern.source, uniqueFlags(rule.pattern.flags + "gd")),
}));

const rulesByExactKeyword = new Map<string, CompiledRule[]>();
const rulesByLowerCaseKeyword = new Map<string, CompiledRule[]>();
for (const compiled of compiledRules) {
  const ignoreCase = compiled.rule.pattern.flags.includes("i");
  for (const keyword of compiled.rule.keywords) {
    const index = ignoreCase ? rulesByLowerCaseKeyword : rulesByExactKeyword;
    const key = ignoreCase ? keyword.toLowerCase() : keyword;
    index.set(key, [...(index.get(key) ?? []), compiled]);
  }
}

/**
 * Every keyword in one alternation, longest first. JavaScript regexes cannot mix
 * case sensitivities per alternative, so the case-insensitive keywords are
 * spelled with a class per letter.
 */
const keywordGate = new RegExp(
  [
    ...[...rulesByExactKeyword.keys()].map((keyword) => ({ keyword, source: escapeRegExp(keyword) })),
    ...[...rulesByLowerCaseKeyword.keys()].map((keyword) => ({ keyword, source: caseInsensitiveSource(keyword) })),
  ]
    .sort((a, b) => b.keyword.length - a.keyword.length)
    .map(({ source }) => source)
    .join("|"),
  "g",
);

function rulesForKeywordHit(hit: string): CompiledRule[] {
  const exact = rulesByExactKeyword.get(hit);
  const folded = rulesByLowerCaseKeyword.get(hit.toLowerCase());
  if (exact && folded) return [...exact, ...folded];
  return exact ?? folded ?? [];
}

// ---------------------------------------------------------------------------
// One file

interface SecretMatch {
  compiled: CompiledRule;
  start: number;
  end: number;
  secret: string;
}

/**
 * Scans one file's content. `filePath` is reported as given (backslashes turned
 * into slashes); binary content (a NUL byte in the first 8 KiB) has no findings.
 */
export function scanContent(filePath: string, content: Buffer | string): SecretFinding[] {
  const relativePath = filePath.replace(/\\/g, "/");
  if (typeof content === "string") {
    if (content.slice(0, BINARY_SNIFF_BYTES).includes("\0")) return [];
    return findSecrets(relativePath, content);
  }
  if (isBinary(content)) return [];
  return findSecrets(relativePath, content.toString("utf8"));
}

export function isBinary(content: Buffer): boolean {
  return content.subarray(0, BINARY_SNIFF_BYTES).includes(0);
}

function findSecrets(relativePath: string, text: string): SecretFinding[] {
  const matches: SecretMatch[] = [];
  const searchedWindows = new Set<string>();
  keywordGate.lastIndex = 0;
  for (let hit = keywordGate.exec(text); hit !== null; hit = keywordGate.exec(text)) {
    const rules = rulesForKeywordHit(hit[0]);
    if (rules.length === 0) continue;
    const lineStart = text.lastIndexOf("\n", hit.index - 1) + 1;
    const newline = text.indexOf("\n", hit.index);
    const lineEnd = newline === -1 ? text.length : newline;
    for (const compiled of rules) {
      let windowStart = lineStart;
      let windowEnd = lineEnd;
      if (compiled.rule.spansLines) {
        windowEnd = Math.min(text.length, lineStart + SPAN_WINDOW_CHARS);
      } else if (lineEnd - lineStart > LONG_LINE_CHARS) {
        windowStart = Math.max(lineStart, hit.index - LONG_LINE_CONTEXT_CHARS);
        windowEnd = Math.min(lineEnd, hit.index + hit[0].length + LONG_LINE_CONTEXT_CHARS);
      }
      const windowKey = `${compiled.priority}:${windowStart}:${windowEnd}`;
      if (searchedWindows.has(windowKey)) continue;
      searchedWindows.add(windowKey);
      collectMatches(compiled, text, windowStart, windowEnd, matches);
    }
  }
  if (matches.length === 0) return [];
  return toFindings(relativePath, text, withoutOverlaps(matches));
}

function collectMatches(compiled: CompiledRule, text: string, windowStart: number, windowEnd: number, into: SecretMatch[]): void {
  const { regex, rule } = compiled;
  const window = text.slice(windowStart, windowEnd);
  regex.lastIndex = 0;
  for (let match = regex.exec(window); match !== null; match = regex.exec(window)) {
    if (match[0].length === 0) regex.lastIndex++;
    const group = match.findIndex((value, index) => index > 0 && value !== undefined);
    if (group === -1 || !match.indices?.[group]) continue;
    const secret = match[group];
    if (!isCredible(rule, secret)) continue;
    const [start, end] = match.indices[group];
    into.push({ compiled, start: windowStart + start, end: windowStart + end, secret });
  }
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
  if (value.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const character of value) counts.set(character, (counts.get(character) ?? 0) + 1);
  const length = [...value].length;
  let entropy = 0;
  for (const count of counts.values()) {
    const probability = count / length;
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

function toFindings(relativePath: string, text: string, matches: SecretMatch[]): SecretFinding[] {
  const findings: SecretFinding[] = [];
  const seen = new Set<string>();
  let line = 1;
  let lineStart = 0;
  for (const match of matches) {
    for (let newline = text.indexOf("\n", lineStart); newline !== -1 && newline < match.start; newline = text.indexOf("\n", lineStart)) {
      line++;
      lineStart = newline + 1;
    }
    const fingerprint = secretFingerprint(match.compiled.rule.id, relativePath, match.secret);
    if (seen.has(fingerprint)) continue;
    seen.add(fingerprint);
    const column = match.start - lineStart + 1;
    const redacted = redactSecret(match.secret);
    findings.push({
      ruleId: match.compiled.rule.id,
      severity: match.compiled.rule.severity,
      path: relativePath,
      line,
      column,
      message: `${match.compiled.rule.name} found (${redacted}). Revoke or rotate it, then remove it from the source.`,
      snippet: redactedSnippet(text, lineStart, column - 1, match.secret),
      fingerprint,
    });
  }
  return findings;
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

function redactedSnippet(text: string, lineStart: number, secretOffsetInLine: number, secret: string): string {
  const newline = text.indexOf("\n", lineStart);
  const lineText = text.slice(lineStart, newline === -1 ? text.length : newline).replace(/\r$/, "");
  const firstLineOfSecret = secret.split(/\r?\n/, 1)[0];
  const redacted = redactSecret(secret);
  const redactedLine = firstLineOfSecret.length > 0 ? lineText.split(firstLineOfSecret).join(redacted) : lineText;
  if (redactedLine.length <= SNIPPET_MAX_CHARS) return redactedLine;
  const start = Math.max(0, secretOffsetInLine - SNIPPET_CONTEXT_BEFORE);
  const end = Math.min(redactedLine.length, start + SNIPPET_MAX_CHARS);
  return `${start > 0 ? "…" : ""}${redactedLine.slice(start, end)}${end < redactedLine.length ? "…" : ""}`;
}

// ---------------------------------------------------------------------------
// A tree

interface CandidateFile {
  absolutePath: string;
  relativePath: string;
  size: number;
}

interface FileBatchResult {
  findings: SecretFinding[];
  filesScanned: number;
  filesSkipped: number;
  bytesScanned: number;
}

/**
 * Scans every regular file under `rootDir` (see the module comment for what is
 * skipped). Findings are sorted by path, line, column and rule.
 */
export async function scanTree(rootDir: string, options: ScanTreeOptions = {}): Promise<SecretScanSummary> {
  const maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? availableParallelism()));
  const poolThresholdBytes = options.poolThresholdBytes ?? POOL_THRESHOLD_BYTES;

  const listing = await listCandidateFiles(rootDir, maxFileBytes);
  const candidateBytes = listing.files.reduce((total, file) => total + file.size, 0);
  const usePool = concurrency > 1 && listing.files.length > 1 && candidateBytes >= poolThresholdBytes;
  const result = usePool
    ? await scanFilesInPool(listing.files, maxFileBytes, concurrency)
    : await scanFilesInProcess(listing.files, maxFileBytes);

  const findings = new Map<string, SecretFinding>();
  for (const finding of result.findings) if (!findings.has(finding.fingerprint)) findings.set(finding.fingerprint, finding);
  return {
    findings: [...findings.values()].sort(compareFindings),
    filesScanned: result.filesScanned,
    filesSkipped: result.filesSkipped + listing.filesSkipped,
    bytesScanned: result.bytesScanned,
  };
}

function compareFindings(a: SecretFinding, b: SecretFinding): number {
  if (a.path !== b.path) return a.path < b.path ? -1 : 1;
  return a.line - b.line || a.column - b.column || (a.ruleId < b.ruleId ? -1 : a.ruleId > b.ruleId ? 1 : 0);
}

async function listCandidateFiles(rootDir: string, maxFileBytes: number): Promise<{ files: CandidateFile[]; filesSkipped: number }> {
  const files: CandidateFile[] = [];
  let filesSkipped = 0;
  const visit = async (directory: string, relativeDirectory: string): Promise<void> => {
    const entries = await readdir(directory, { withFileTypes: true });
    const subdirectories: Promise<void>[] = [];
    const sizes: Promise<void>[] = [];
    for (const entry of entries) {
      const absolutePath = path.join(directory, entry.name);
      const relativePath = relativeDirectory ? `${relativeDirectory}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (!SKIPPED_DIRECTORY_NAMES.has(entry.name)) subdirectories.push(visit(absolutePath, relativePath));
      } else if (entry.isFile()) {
        sizes.push(
          stat(absolutePath).then(
            ({ size }) => {
              if (size > maxFileBytes) filesSkipped++;
              else files.push({ absolutePath, relativePath, size });
            },
            () => {
              filesSkipped++;
            },
          ),
        );
      } else if (entry.isSymbolicLink()) {
        filesSkipped++;
      }
    }
    await Promise.all([...sizes, ...subdirectories]);
  };
  await visit(rootDir, "");
  return { files, filesSkipped };
}

/** Reads and scans one file; the size is checked again on the bytes read, as the file may have grown. */
function scanFileContent(file: Pick<CandidateFile, "relativePath">, content: Buffer, maxFileBytes: number, into: FileBatchResult): void {
  if (content.length > maxFileBytes || isBinary(content)) {
    into.filesSkipped++;
    return;
  }
  into.filesScanned++;
  into.bytesScanned += content.length;
  for (const finding of findSecrets(file.relativePath, content.toString("utf8"))) into.findings.push(finding);
}

async function scanFilesInProcess(files: CandidateFile[], maxFileBytes: number): Promise<FileBatchResult> {
  const result: FileBatchResult = { findings: [], filesScanned: 0, filesSkipped: 0, bytesScanned: 0 };
  for (const file of files) {
    let content: Buffer;
    try {
      content = await readFile(file.absolutePath);
    } catch {
      result.filesSkipped++;
      continue;
    }
    scanFileContent(file, content, maxFileBytes, result);
  }
  return result;
}

function scanFilesSynchronously(files: CandidateFile[], maxFileBytes: number): FileBatchResult {
  const result: FileBatchResult = { findings: [], filesScanned: 0, filesSkipped: 0, bytesScanned: 0 };
  for (const file of files) {
    let content: Buffer;
    try {
      content = readFileSync(file.absolutePath);
    } catch {
      result.filesSkipped++;
      continue;
    }
    scanFileContent(file, content, maxFileBytes, result);
  }
  return result;
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

function batchesOf(files: CandidateFile[]): CandidateFile[][] {
  const batches: CandidateFile[][] = [];
  let batch: CandidateFile[] = [];
  let batchBytes = 0;
  for (const file of files) {
    batch.push(file);
    batchBytes += file.size;
    if (batch.length >= BATCH_MAX_FILES || batchBytes >= BATCH_MAX_BYTES) {
      batches.push(batch);
      batch = [];
      batchBytes = 0;
    }
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

async function scanFilesInPool(files: CandidateFile[], maxFileBytes: number, concurrency: number): Promise<FileBatchResult> {
  // Largest files first, so that the last batches are small and the threads finish together.
  const batches = batchesOf([...files].sort((a, b) => b.size - a.size));
  const total: FileBatchResult = { findings: [], filesScanned: 0, filesSkipped: 0, bytesScanned: 0 };
  const moduleUrl = import.meta.url;
  const data: ScannerWorkerData = {
    role: WORKER_ROLE,
    moduleUrl,
    tsxApiUrl: moduleUrl.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : null,
  };
  const workers = Array.from(
    { length: Math.min(concurrency, batches.length) },
    () => new Worker(WORKER_BOOTSTRAP, { eval: true, workerData: data, execArgv: [] }),
  );
  let nextBatch = 0;
  try {
    await Promise.all(
      workers.map(
        (worker) =>
          new Promise<void>((resolve, reject) => {
            const sendNext = () => {
              if (nextBatch >= batches.length) {
                resolve();
                return;
              }
              const request: ScannerRequest = { files: batches[nextBatch++], maxFileBytes };
              worker.postMessage(request);
            };
            worker.on("message", (response: ScannerResponse | "ready") => {
              if (response === "ready") return sendNext();
              if (!response.ok) return reject(new Error(`secret scanner worker failed: ${response.error}`));
              total.findings.push(...response.result.findings);
              total.filesScanned += response.result.filesScanned;
              total.filesSkipped += response.result.filesSkipped;
              total.bytesScanned += response.result.bytesScanned;
              sendNext();
            });
            worker.once("error", reject);
            worker.once("exit", (code) => {
              if (nextBatch < batches.length || code !== 0) reject(new Error(`secret scanner worker exited with code ${code}`));
            });
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return total;
}

function serveScanRequests(): void {
  const port = parentPort;
  if (!port) return;
  port.on("message", (request: ScannerRequest) => {
    let response: ScannerResponse;
    try {
      response = { ok: true, result: scanFilesSynchronously(request.files, request.maxFileBytes) };
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

function escapeRegExp(literal: string): string {
  return literal.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

function caseInsensitiveSource(keyword: string): string {
  return [...keyword]
    .map((character) => {
      const lower = character.toLowerCase();
      const upper = character.toUpperCase();
      return lower === upper ? escapeRegExp(character) : `[${lower}${upper}]`;
    })
    .join("");
}
