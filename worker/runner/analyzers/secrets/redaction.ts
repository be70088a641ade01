/**
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
 */
import { createHash } from "node:crypto";

const SNIPPET_MAX_CHARS = 200;
const SNIPPET_CONTEXT_BEFORE = 60;

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

/** The line with every occurrence of the secret redacted, cut to a window around it when long. */
export function redactedSnippet(lineText: string, secretColumnIndex: number, secret: string): string {
  const firstLineOfSecret = secret.split(/\r?\n/, 1)[0].replace(/\r$/, "");
  const redactedLine = firstLineOfSecret.length > 0 ? lineText.split(firstLineOfSecret).join(redactSecret(secret)) : lineText;
  if (redactedLine.length <= SNIPPET_MAX_CHARS) return redactedLine;
  const start = Math.max(0, secretColumnIndex - SNIPPET_CONTEXT_BEFORE);
  const end = Math.min(redactedLine.length, start + SNIPPET_MAX_CHARS);
  return `${start > 0 ? "…" : ""}${redactedLine.slice(start, end)}${end < redactedLine.length ? "…" : ""}`;
}
