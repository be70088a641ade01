/**
 * The rules of shared/secret-rules.ts compiled for this thread, and the keyword
 * index the file scanner searches bytes with (see below).
 */
import { SECRET_RULES, type SecretRule } from "../../../../shared/secret-rules.ts";

export interface CompiledRule {
  rule: SecretRule;
  priority: number;
  /**
   * The rule's pattern with `d` (group offsets) and `g` to iterate over a line;
   * a rule that spans lines gets `y` instead, as its match starts at its keyword.
   */
  regex: RegExp;
}

export interface Keyword {
  bytes: Buffer;
  ignoreCase: boolean;
  /** Offset in the keyword of the byte pair the index finds it by. */
  anchor: number;
  rules: CompiledRule[];
}

export const compiledRules: CompiledRule[] = SECRET_RULES.map((rule, priority) => ({
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
export const keywordBuckets: Keyword[][] = [[]];
export const bucketOfPair = new Uint8Array(65536);
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

/** Whether `keyword` is at `start` of `content` (case folded for a case-insensitive one). */
export function keywordAt(content: Buffer, start: number, keyword: Keyword): boolean {
  const { bytes } = keyword;
  if (start < 0 || start + bytes.length > content.length) return false;
  if (keyword.ignoreCase) {
    for (let index = 0; index < bytes.length; index++) if (FOLD_CASE[content[start + index]] !== bytes[index]) return false;
  } else {
    for (let index = 0; index < bytes.length; index++) if (content[start + index] !== bytes[index]) return false;
  }
  return true;
}

function uniqueFlags(flags: string): string {
  return [...new Set(flags)].join("");
}
