/**
 * Whether a rule's match is a credible secret: generic rules check the
 * secret's Shannon entropy; placeholders listed in a rule's allowlist and
 * stopwords are dropped.
 */
import type { SecretRule } from "../../../../shared/secret-rules.ts";

export function isCredible(rule: SecretRule, secret: string): boolean {
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
