/**
 * Secrets scanner throughput against `grep -rEn` with the same rules, side by
 * side in one run over one generated tree (~200 MB of source-like text in
 * thousands of nested files, a few planted secrets), so the ratio holds on a
 * noisy machine. Each tool runs twice, alternating; the better run counts.
 *
 * grep gets the catalog's patterns translated to POSIX ERE (GNU extensions such
 * as \b allowed). What ERE cannot say is approximated and printed:
 * - lookaheads `(?!…)` are dropped (grep accepts a token followed by more token
 *   characters);
 * - bounds above 255 are lowered to 255 (large counted repeats make GNU grep's
 *   DFA slow to build, which would penalize grep for a rewrite detail);
 * - case-insensitive rules are spelled with [xX] classes;
 * - the private key rule spans lines, which grep cannot match: grep looks for the
 *   BEGIN line alone;
 * - entropy thresholds, allowlists and stopwords do not exist in grep, so it
 *   reports more lines than the scanner has findings.
 *
 * Run: npx tsx test/bench/index.ts secrets
 */
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { SECRET_RULES, type SecretRule } from "../../worker/runner/analyzers/secret-rules.ts";
import { scanTree } from "../../worker/runner/analyzers/secrets.ts";

const TREE_BYTES = Number(process.env.TREE_MB ?? 200) * 1024 * 1024;
const MAX_BOUND = 255;

export default async function (): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), "vega-secrets-bench-"));
  try {
    const generationStart = performance.now();
    const tree = await writeSourceLikeTree(root, TREE_BYTES);
    console.log(
      `tree: ${tree.files} files, ${(tree.bytes / 1e6).toFixed(1)} MB, ${tree.planted} planted secrets ` +
        `(generated in ${((performance.now() - generationStart) / 1000).toFixed(1)} s)`,
    );

    const patterns = SECRET_RULES.map((rule) => ({ rule, ...toExtendedRegExp(rule) }));
    for (const { rule, approximations } of patterns) {
      if (approximations.length > 0) console.log(`grep approximates ${rule.id}: ${approximations.join("; ")}`);
    }
    const grepArgs = ["-rEnI", "--exclude-dir=.git", "--exclude-dir=node_modules", ...patterns.flatMap(({ source }) => ["-e", source]), root];
    console.log(`grep locale: LC_ALL=${process.env.LC_ALL ?? ""} LANG=${process.env.LANG ?? ""}`);

    let bestGrepSeconds = Infinity;
    let bestScanSeconds = Infinity;
    let grepLines = 0;
    let findings = 0;
    for (let round = 1; round <= 2; round++) {
      const grepStart = performance.now();
      grepLines = await runGrep(grepArgs);
      const grepSeconds = (performance.now() - grepStart) / 1000;
      bestGrepSeconds = Math.min(bestGrepSeconds, grepSeconds);

      const scanStart = performance.now();
      const summary = await scanTree(root);
      const scanSeconds = (performance.now() - scanStart) / 1000;
      bestScanSeconds = Math.min(bestScanSeconds, scanSeconds);
      findings = summary.findings.length;
      console.log(
        `round ${round}: grep ${grepSeconds.toFixed(2)} s (${grepLines} lines), ` +
          `scanTree ${scanSeconds.toFixed(2)} s (${findings} findings, ${summary.filesScanned} files, ${summary.filesSkipped} skipped)`,
      );
    }

    const singleStart = performance.now();
    await scanTree(root, { concurrency: 1 });
    const singleSeconds = (performance.now() - singleStart) / 1000;

    const megabytes = tree.bytes / 1e6;
    const grepRate = megabytes / bestGrepSeconds;
    const scanRate = megabytes / bestScanSeconds;
    console.log(`grep -rEn (1 process):           ${grepRate.toFixed(0)} MB/s`);
    console.log(`scanTree (${os.availableParallelism()} worker threads):     ${scanRate.toFixed(0)} MB/s`);
    console.log(`scanTree (in-process, 1 thread): ${(megabytes / singleSeconds).toFixed(0)} MB/s`);
    console.log(`ratio scanTree / grep:           ${(scanRate / grepRate).toFixed(2)}x`);
    if (findings < tree.planted) console.log(`WARNING: ${tree.planted} secrets planted, ${findings} found`);
  } finally {
    if (!process.env.KEEP_TREE) await rm(root, { recursive: true, force: true }); else console.log("kept", root);
  }
}

function runGrep(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const grep = spawn("grep", args, { stdio: ["ignore", "pipe", "pipe"] });
    let lines = 0;
    let errors = "";
    grep.stdout.on("data", (chunk: Buffer) => {
      for (let index = chunk.indexOf(10); index !== -1; index = chunk.indexOf(10, index + 1)) lines++;
    });
    grep.stderr.on("data", (chunk: Buffer) => {
      errors += chunk.toString();
    });
    grep.on("error", reject);
    grep.on("close", (code) => {
      // 0: lines matched, 1: none; anything else (or a warning) means the patterns are not what we think.
      if ((code === 0 || code === 1) && errors === "") resolve(lines);
      else reject(new Error(`grep exited with ${code}: ${errors.slice(0, 2000)}`));
    });
  });
}

// ---------------------------------------------------------------------------
// JavaScript regex source → POSIX ERE

export function toExtendedRegExp(rule: SecretRule): { source: string; approximations: string[] } {
  const approximations = new Set<string>();
  if (rule.spansLines) {
    approximations.add("spans lines: the BEGIN line only");
    return { source: "-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY( BLOCK)?-----", approximations: [...approximations] };
  }
  const ignoreCase = rule.pattern.flags.includes("i");
  if (ignoreCase) approximations.add("case-insensitive letters as [xX]");
  const source = rule.pattern.source;
  let output = "";
  let index = 0;
  const groupKinds: Array<"keep" | "drop"> = [];
  let dropDepth = 0;
  const emit = (text: string) => {
    if (dropDepth === 0) output += text;
  };
  while (index < source.length) {
    const character = source[index];
    if (character === "\\") {
      emit(translateEscape(source[index + 1], source.slice(index + 2, index + 4), false));
      index += source[index + 1] === "x" ? 4 : 2;
    } else if (character === "[") {
      const { text, next } = translateClass(source, index);
      emit(text);
      index = next;
    } else if (character === "(") {
      if (source.startsWith("(?:", index)) {
        groupKinds.push("keep");
        emit("(");
        index += 3;
      } else if (source.startsWith("(?!", index) || source.startsWith("(?=", index)) {
        groupKinds.push("drop");
        dropDepth++;
        approximations.add("lookahead dropped");
        index += 3;
      } else if (source.startsWith("(?", index)) {
        throw new Error(`${rule.id}: unsupported group at ${index}`);
      } else {
        groupKinds.push("keep");
        emit("(");
        index += 1;
      }
    } else if (character === ")") {
      const kind = groupKinds.pop();
      if (kind === "drop") dropDepth--;
      else emit(")");
      index += 1;
    } else if (character === "{") {
      const close = source.indexOf("}", index);
      const [low, high] = source.slice(index + 1, close).split(",");
      let bound = source.slice(index, close + 1);
      if (high !== undefined && high !== "" && Number(high) > MAX_BOUND) {
        bound = `{${Math.min(Number(low), MAX_BOUND)},${MAX_BOUND}}`;
        approximations.add(`bounds above ${MAX_BOUND} lowered`);
      }
      emit(bound);
      index = close + 1;
      if (source[index] === "?") {
        approximations.add("lazy quantifier made greedy");
        index += 1;
      }
    } else if (/[a-zA-Z]/.test(character) && ignoreCase) {
      emit(`[${character.toLowerCase()}${character.toUpperCase()}]`);
      index += 1;
    } else {
      emit(character);
      index += 1;
    }
  }
  return { source: output, approximations: [...approximations] };
}

function translateEscape(escaped: string, hexDigits: string, inClass: boolean): string {
  switch (escaped) {
    case "b":
      return "\\b";
    case "s":
      return inClass ? "[:space:]" : "[[:space:]]";
    case "d":
      return inClass ? "0-9" : "[0-9]";
    case "x":
      return String.fromCharCode(Number.parseInt(hexDigits, 16));
    default:
      // Inside a bracket expression every character but ] is literal; outside,
      // only ERE's own metacharacters keep their backslash.
      if (inClass) return escaped;
      return ".[]()*+?{}|^$\\".includes(escaped) ? `\\${escaped}` : escaped;
  }
}

function translateClass(source: string, start: number): { text: string; next: number } {
  let index = start + 1;
  let text = "[";
  if (source[index] === "^") {
    text += "^";
    index += 1;
  }
  while (source[index] !== "]") {
    if (source[index] === "\\") {
      text += translateEscape(source[index + 1], source.slice(index + 2, index + 4), true);
      index += source[index + 1] === "x" ? 4 : 2;
    } else {
      text += source[index];
      index += 1;
    }
  }
  return { text: `${text}]`, next: index + 1 };
}

// ---------------------------------------------------------------------------
// The tree

/** A small deterministic generator (mulberry32), so every run scans the same bytes. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

const IDENTIFIERS = [
  "scan", "finding", "archive", "entry", "worker", "runner", "request", "response", "result", "options", "config",
  "context", "logger", "event", "payload", "index", "count", "limit", "offset", "cursor", "node", "edge", "user",
  "workspace", "session", "token", "refreshToken", "tokenizer", "password", "passwordHash", "secretName", "apiKey",
  "accessKey", "buffer", "chunk", "stream", "path", "line", "column", "message", "error", "status", "state", "task",
  "queue", "batch", "retry", "timeout", "deadline", "heartbeat", "artifact", "storage", "bucket", "region", "client",
];
const TYPES = ["Scan", "Finding", "Worker", "Config", "Request", "Response", "Promise<void>", "string", "number", "Buffer", "Task", "Session"];
const WORDS = [
  "the", "scan", "could", "not", "be", "started", "because", "worker", "limit", "reached", "retry", "later", "invalid",
  "archive", "entry", "missing", "token", "expired", "password", "reset", "required", "secret", "rotated", "DISK", "TASK",
  "ASK", "value", "from", "environment", "for", "each", "file", "in", "tree", "skip", "binary", "large",
];

function sourceLikeFile(random: () => number, targetBytes: number): string {
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const identifier = () => pick(IDENTIFIERS) + (random() < 0.3 ? pick(TYPES).replace(/\W/g, "") : "");
  const sentence = (words: number) => Array.from({ length: words }, () => pick(WORDS)).join(" ");
  const templates: Array<() => string> = [
    () => `import { ${identifier()}, ${identifier()} } from "./${identifier()}.ts";`,
    () => `export async function ${identifier()}(${identifier()}: ${pick(TYPES)}, ${identifier()}: number): ${pick(TYPES)} {`,
    () => `  const ${identifier()} = await ${identifier()}.${identifier()}(${identifier()}, { ${identifier()}: ${Math.floor(random() * 1000)} });`,
    () => `  if (!${identifier()}) throw new Error("${sentence(5)}");`,
    () => `  // ${sentence(10)}`,
    () => `  return ${identifier()}.map((${identifier()}) => ${identifier()}.${identifier()} + ${Math.floor(random() * 100)});`,
    () => `}`,
    () => ``,
    () => `    ${identifier()} = self.${identifier()}.get("${identifier()}", ${Math.floor(random() * 1000)})`,
    () => `  ${identifier()}: ${pick(WORDS)}-${Math.floor(random() * 100)}`,
    () => `func (s *${pick(TYPES).replace(/\W/g, "")}) ${identifier()}(ctx context.Context, ${identifier()} string) error {`,
    () => `  logger.info({ ${identifier()}, ${identifier()} }, "${sentence(6)}");`,
    () => `  ${identifier()}: process.env.VEGA_${identifier().toUpperCase()} ?? "${pick(WORDS)}",`,
  ];
  const lines: string[] = [];
  let bytes = 0;
  while (bytes < targetBytes) {
    const line = pick(templates)();
    lines.push(line);
    bytes += line.length + 1;
  }
  return `${lines.join("\n")}\n`;
}

function randomToken(random: () => number, length: number, alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"): string {
  return Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join("");
}

function plantedLine(random: () => number, kind: number): string {
  switch (kind % 5) {
    case 0:
      return `const deployKey = "AKIA${randomToken(random, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")}";`;
    case 1:
      return `GITHUB_TOKEN=ghp_${randomToken(random, 36)}`;
    case 2:
      return `  url: "postgres://app:${randomToken(random, 18)}@db.internal:5432/app",`;
    case 3:
      return `stripe.setKey("sk_live_${randomToken(random, 32)}");`;
    default:
      return `  "npmToken": "npm_${randomToken(random, 36)}",`;
  }
}

async function writeSourceLikeTree(root: string, totalBytes: number): Promise<{ files: number; bytes: number; planted: number }> {
  const random = seededRandom(20240611);
  let bytes = 0;
  let files = 0;
  let planted = 0;
  const pending: Promise<void>[] = [];
  while (bytes < totalBytes) {
    const directory = path.join(root, `pkg${files % 23}`, `module${files % 7}`, files % 3 === 0 ? "lib" : "src");
    const extension = [".ts", ".py", ".go", ".yaml", ".js"][files % 5];
    const size = 2048 + Math.floor(random() ** 2 * 120 * 1024);
    let content = sourceLikeFile(random, size);
    if (files % 40 === 0) {
      const lines = content.split("\n");
      lines.splice(Math.floor(lines.length / 2), 0, plantedLine(random, planted));
      content = lines.join("\n");
      planted++;
    }
    const filePath = path.join(directory, `file${files}${extension}`);
    pending.push(mkdir(directory, { recursive: true }).then(() => writeFile(filePath, content)));
    if (pending.length >= 64) await Promise.all(pending.splice(0));
    bytes += Buffer.byteLength(content);
    files++;
  }
  await Promise.all(pending);
  return { files, bytes, planted };
}
