/**
 * Secrets scanner throughput against `grep -rEn` with the same rules, side by
 * side in one run over one generated tree (~200 MB of source-like text in
 * thousands of nested files, a few planted secrets), so the ratio holds on a
 * noisy machine. Each contender runs twice, interleaved; the better run counts.
 * Wall time and CPU time are printed: on a shared machine (this one often runs
 * other sessions' work) MB per CPU-second is the steadier figure.
 *
 * Contenders: grep in the inherited locale and with LC_ALL=C (its fastest);
 * scanTree as the runner calls it (workers only when the scan looks long
 * enough and a core is free, which a 200 MB tree usually is not); scanTree on
 * one thread; and scanTree with its workers started at once, to show what they
 * cost or bring on this machine at this moment.
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
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { SECRET_RULES, type SecretRule } from "../../shared/secret-rules.ts";
import { scanTree, type ScanTreeOptions } from "../../worker/runner/analyzers/secrets/analyzer.ts";

const TREE_BYTES = 200 * 1024 * 1024;
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
    const megabytes = tree.bytes / 1e6;
    const inheritedLocale = process.env.LC_ALL || process.env.LANG || "POSIX";

    // Each contender runs twice, interleaved; the faster run counts. CPU time is
    // printed too: on a shared machine it says what wall time cannot.
    const contenders: Array<{ label: string; run: () => Promise<{ cpuSeconds: number; detail: string }> }> = [
      { label: `grep -rEn (1 process, ${inheritedLocale})`, run: () => runGrep(grepArgs, {}) },
      { label: "grep -rEn (1 process, LC_ALL=C)", run: () => runGrep(grepArgs, { LC_ALL: "C" }) },
      { label: `scanTree (up to ${os.availableParallelism()} threads)`, run: () => runScan(root, {}) },
      { label: "scanTree (1 thread)", run: () => runScan(root, { concurrency: 1 }) },
      {
        label: `scanTree (${os.availableParallelism()} threads from the start)`,
        run: () => runScan(root, { startWorkersAfterMs: 0 }),
      },
    ];
    const best = contenders.map(() => ({ seconds: Infinity, cpuSeconds: Infinity, detail: "" }));
    for (let round = 1; round <= 2; round++) {
      for (const [index, contender] of contenders.entries()) {
        const start = performance.now();
        const { cpuSeconds, detail } = await contender.run();
        const seconds = (performance.now() - start) / 1000;
        console.log(`round ${round}: ${contender.label}: ${seconds.toFixed(2)} s, ${cpuSeconds.toFixed(2)} CPU-s (${detail})`);
        best[index] = { seconds: Math.min(best[index].seconds, seconds), cpuSeconds: Math.min(best[index].cpuSeconds, cpuSeconds), detail };
      }
    }

    for (const [index, contender] of contenders.entries()) {
      const { seconds, cpuSeconds } = best[index];
      console.log(`${contender.label.padEnd(40)} ${(megabytes / seconds).toFixed(0).padStart(5)} MB/s   ${(megabytes / cpuSeconds).toFixed(0).padStart(5)} MB per CPU-second`);
    }
    const fastestGrep = Math.min(best[0].seconds, best[1].seconds);
    const leanestGrep = Math.min(best[0].cpuSeconds, best[1].cpuSeconds);
    console.log(
      `ratio scanTree (up to ${os.availableParallelism()} threads) / fastest grep: ${(fastestGrep / best[2].seconds).toFixed(2)}x wall, ` +
        `${(leanestGrep / best[2].cpuSeconds).toFixed(2)}x per CPU-second`,
    );
    const found = Number(/^(\d+) findings/.exec(best[2].detail)?.[1] ?? 0);
    if (found < tree.planted) console.log(`WARNING: ${tree.planted} secrets planted, ${found} found`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function runScan(root: string, options: ScanTreeOptions): Promise<{ cpuSeconds: number; detail: string }> {
  const before = process.cpuUsage(); // the whole process: worker threads included
  const summary = await scanTree(root, options);
  const used = process.cpuUsage(before);
  return {
    cpuSeconds: (used.user + used.system) / 1e6,
    detail: `${summary.findings.length} findings, ${summary.filesScanned} files, ${summary.filesSkipped} skipped`,
  };
}

/** Runs grep under bash's `time`, to learn its CPU time; counts the lines it prints. */
function runGrep(args: string[], environment: Record<string, string>): Promise<{ cpuSeconds: number; detail: string }> {
  return new Promise((resolve, reject) => {
    const script = 'TIMEFORMAT="%3U %3S"; { time grep "$@" 2>&3; } 3>&2 2>"$VEGA_BENCH_TIMES"';
    const timesFile = path.join(os.tmpdir(), `vega-bench-grep-times-${process.pid}`);
    const grep = spawn("bash", ["-c", script, "bash", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...environment, VEGA_BENCH_TIMES: timesFile },
    });
    let lines = 0;
    let errors = "";
    grep.stdout.on("data", (chunk: Buffer) => {
      for (let index = chunk.indexOf(10); index !== -1; index = chunk.indexOf(10, index + 1)) lines++;
    });
    grep.stderr.on("data", (chunk: Buffer) => {
      errors += chunk.toString();
    });
    grep.on("error", reject);
    grep.on("close", async (code) => {
      // 0: lines matched, 1: none; anything else (or a warning) means the patterns are not what we think.
      if ((code !== 0 && code !== 1) || errors !== "") {
        reject(new Error(`grep exited with ${code}: ${errors.slice(0, 2000)}`));
        return;
      }
      const [user, system] = (await readFile(timesFile, "utf8")).trim().split(/\s+/).map(Number);
      await rm(timesFile, { force: true });
      resolve({ cpuSeconds: user + system, detail: `${lines} lines` });
    });
  });
}

// ---------------------------------------------------------------------------
// JavaScript regex source → POSIX ERE

function toExtendedRegExp(rule: SecretRule): { source: string; approximations: string[] } {
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
  "workspace", "session", "buffer", "chunk", "stream", "path", "line", "column", "message", "error", "status", "state", "task",
  "queue", "batch", "retry", "timeout", "deadline", "heartbeat", "artifact", "storage", "bucket", "region", "client",
];
/** Names that contain rule keywords: real code has them, on a few lines in a hundred. */
const KEYWORD_IDENTIFIERS = ["token", "refreshToken", "tokenizer", "password", "passwordHash", "secretName", "apiKey", "accessKey", "TASK_QUEUE", "postgresPool"];
const TYPES = ["Scan", "Finding", "Worker", "Config", "Request", "Response", "Promise<void>", "string", "number", "Buffer", "Task", "Session"];
const WORDS = [
  "the", "scan", "could", "not", "be", "started", "because", "worker", "limit", "reached", "retry", "later", "invalid",
  "archive", "entry", "missing", "expired", "reset", "required", "rotated", "value", "from", "environment", "for", "each", "file", "in", "tree", "skip", "binary", "large",
];

function sourceLikeFile(random: () => number, targetBytes: number): string {
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const identifier = () =>
    (random() < 0.004 ? pick(KEYWORD_IDENTIFIERS) : pick(IDENTIFIERS)) + (random() < 0.3 ? pick(TYPES).replace(/\W/g, "") : "");
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
