/**
 * One file's content searched for secrets.
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
 */
import type { SecretSeverity } from "../../../../shared/secret-rules.ts";
import { isCredible } from "./credibility.ts";
import { bucketOfPair, compiledRules, keywordAt, keywordBuckets, type CompiledRule, type Keyword } from "./keywords.ts";
import { redactedSnippet, redactSecret, secretFingerprint } from "./redaction.ts";

const BINARY_SNIFF_BYTES = 8 * 1024;
/** Lines longer than this (minified code, data) are searched in a window around each keyword hit. */
const LONG_LINE_BYTES = 16 * 1024;
const LONG_LINE_CONTEXT_BYTES = 4 * 1024;
/** How far from its keyword a rule that spans lines may match (a PEM key is a few KiB). */
const SPAN_WINDOW_BYTES = 20 * 1024;
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

/** The findings of a file already read (`relativePath` as reported), binary or not: callers sniff first. */
export function findSecrets(relativePath: string, content: Buffer): SecretFinding[] {
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
