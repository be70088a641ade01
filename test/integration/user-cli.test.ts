/**
 * The CLI for users, run as a user runs it: `vega scan submit --wait`, `scan
 * list`, `scan show --sarif`, `vega workers`, against a real `vega start` (API
 * and embedded worker) on the embedded default, with the token minted locally
 * from the data directory's key. And the conventions every command line keeps:
 * `--help` listing every flag, exit status 2 on a usage error, logs a person and
 * a collector can each read.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMMANDS } from "../../cli/commands.ts";
import { PRIMARY_LOCATION_LINE_HASH } from "../../api/services/sarif.ts";
import { childEnv, runVega } from "../support/cli.ts";
import { seedDataDir } from "../support/data-dir.ts";
import { plantedSecretsTree } from "../support/planted-secrets.ts";
import { startVegaServer, type VegaServerProcess } from "../support/processes.ts";
import { sarifValidator } from "../support/sarif-schema.ts";
import { buildRawZip, buildZip } from "../support/zips.ts";

const CLI = { timeoutMs: 120_000 };

let dir: string;
let server: VegaServerProcess;
let env: Record<string, string>;
let plantedZip: string;
let hostileZip: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "vega-user-cli-"));
  const dataDir = path.join(dir, "data");
  await seedDataDir(dataDir);
  // The embedded default with no VEGA_JWT_SECRET: the CLI mints its token from VEGA_DATA_DIR/jwt-secret.
  server = await startVegaServer("start", { VEGA_DATA_DIR: dataDir, VEGA_WORKER_POLL_INTERVAL_SECONDS: "1", VEGA_LOG_LEVEL: "info" });
  env = { VEGA_DATA_DIR: dataDir, VEGA_API_URL: server.graphqlUrl };
  plantedZip = path.join(dir, "planted.zip");
  hostileZip = path.join(dir, "hostile.zip");
  await writeFile(plantedZip, await buildZip(Object.entries(plantedSecretsTree().files).map(([name, data]) => ({ name, data }))));
  await writeFile(hostileZip, buildRawZip([{ name: "../escape.txt", data: Buffer.from("x") }]));
}, 300_000);

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("vega scan submit --wait", () => {
  let scanId: string;

  it("uploads a planted-secrets archive, follows the scan to SUCCEEDED, prints the findings count and exits 0", async () => {
    const result = await runVega(["scan", "submit", plantedZip, "--label", "planted", "--wait"], env, CLI);
    expect(result.code, result.stderr).toBe(0);
    const expected = plantedSecretsTree().expected.length;
    const summary = new RegExp(`^Scan ([0-9a-f-]{36}) SUCCEEDED: ${expected} findings \\(critical \\d+, high \\d+, medium \\d+, low \\d+, info \\d+\\)$`, "m");
    expect(result.stdout).toMatch(summary);
    scanId = summary.exec(result.stdout)![1];
    // Its progress on the way, and what was not read.
    expect(result.stdout).toMatch(/^\d\d:\d\d:\d\d (STARTING|RUNNING)/m);
    expect(result.stdout).toMatch(/^\d\d:\d\d:\d\d SUCCEEDED$/m);
    expect(result.stdout).toMatch(/not read: 1 vendored directory, 1 version-control directory, 1 binary file, 1 file over the size limit/);
    // Not a terminal: no progress line rewritten in place.
    expect(result.stderr).not.toContain("\r");
  }, 180_000);

  it("lists the scan, and writes its SARIF (valid, with GitHub's fingerprint and end columns) with scan show --sarif", async () => {
    const listed = await runVega(["scan", "list"], env, CLI);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`^${scanId}\\s+SUCCEEDED\\s+\\S+\\s+${plantedSecretsTree().expected.length}\\s+planted$`, "m"));
    const asJson = JSON.parse((await runVega(["scan", "list", "--json", "--status", "succeeded"], env, CLI)).stdout);
    expect(asJson.map((scanned: { id: string }) => scanned.id)).toContain(scanId);

    const sarifFile = path.join(dir, "scan.sarif");
    const shown = await runVega(["scan", "show", scanId, "--sarif", sarifFile], env, CLI);
    expect(shown.code, shown.stderr).toBe(0);
    const log = JSON.parse(await readFile(sarifFile, "utf8"));
    const { validate } = sarifValidator();
    expect(validate(log), JSON.stringify(validate.errors)).toBe(true);
    expect(log.runs[0].results).toHaveLength(plantedSecretsTree().expected.length);
    for (const result of log.runs[0].results) {
      expect(result.partialFingerprints[PRIMARY_LOCATION_LINE_HASH]).toMatch(/^[0-9a-f]{16}:1$/);
      expect(result.locations[0].physicalLocation.region.endColumn).toBeGreaterThan(0);
    }

    const details = await runVega(["scan", "show", scanId], env, CLI);
    expect(details.code).toBe(0);
    expect(details.stdout).toContain(`Scan ${scanId} (planted)`);
  });

  it("refuses a hostile archive: exit 1 with its error code, and no scan is made", async () => {
    const before = JSON.parse((await runVega(["scan", "list", "--json"], env, CLI)).stdout).length;
    const result = await runVega(["scan", "submit", hostileZip, "--wait"], env, CLI);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^vega: the API refused hostile\.zip: .*\(ARCHIVE_INVALID\)$/m);
    expect(result.stderr).not.toContain(dir);
    expect(JSON.parse((await runVega(["scan", "list", "--json"], env, CLI)).stdout)).toHaveLength(before);
  });

  it("says what a token the API refuses gets, with its code", async () => {
    const result = await runVega(["scan", "list"], { ...env, VEGA_TOKEN: "not-a-token" }, CLI);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^vega: .*\(UNAUTHENTICATED\)$/m);
  });

  it("needs a token where it cannot mint one", async () => {
    const result = await runVega(["scan", "list"], { VEGA_DATA_DIR: path.join(dir, "no-such-dir"), VEGA_API_URL: server.graphqlUrl }, CLI);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/set VEGA_TOKEN/);
  });
});

describe("vega workers", () => {
  it("lists the embedded worker", async () => {
    const result = await runVega(["workers"], env, CLI);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^NAME\s+HOST\s+PID\s+VERSION\s+SCANS\s+STATE\s+HEARTBEAT$/m);
    expect(result.stdout).toMatch(/\s0\/2\s+live\s+\d+s ago$/m);
  });
});

/** Runs many short `vega` commands a few at a time (the machine is shared). */
async function runAll(commands: string[][]) {
  const results: Awaited<ReturnType<typeof runVega>>[] = [];
  for (let index = 0; index < commands.length; index += 4) {
    results.push(...(await Promise.all(commands.slice(index, index + 4).map((args) => runVega(args, {}, CLI)))));
  }
  return results;
}

describe("conventional command lines", () => {
  it("vega --help lists every command, the maintenance jobs and the scan commands included", async () => {
    const result = await runVega(["--help"], {}, CLI);
    expect(result.code).toBe(0);
    for (const spec of Object.values(COMMANDS)) {
      if (spec.name === "maintenance" || spec.name === "scan") continue;
      expect(result.stdout).toContain(`  ${spec.name}`);
    }
    expect(result.stdout).toContain("maintenance recover-stale [--dry-run]");
  });

  it("--help of every command lists every flag it takes, and exits 0", async () => {
    const specs = Object.values(COMMANDS);
    const results = await runAll(specs.map((spec) => [...spec.name.split(" "), "--help"]));
    specs.forEach((spec, index) => {
      const { code, stdout } = results[index];
      expect(code, spec.name).toBe(0);
      expect(stdout).toContain(`Usage: vega ${spec.name}`);
      for (const flag of Object.keys(spec.flags)) expect(stdout, `${spec.name} --${flag}`).toMatch(new RegExp(`^  --${flag}\\b`, "m"));
      expect(stdout).toContain("-h, --help");
    });
  }, 300_000);

  it("exits 2 on usage errors, saying what is wrong, and no boolean flag takes the next word", async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /Usage: vega <command>/],
      [["nope"], /unknown command "nope"/],
      [["maintenance", "cleanup", "--dry-run", "x"], /maintenance cleanup takes no argument "x"/],
      [["maintenance", "recover-stale", "--dry-run=yes"], /--dry-run/],
      [["maintenance", "nope"], /unknown maintenance job "nope"/],
      [["maintenance"], /maintenance needs a job/],
      [["token", "--sub", "a", "--bogus"], /Unknown option '--bogus'/],
      [["token", "--sub"], /--sub/],
      [["scan", "submit"], /scan submit needs PATH\.zip/],
      [["scan", "submit", "a.zip", "--label"], /--label/],
      [["scan", "submit", "a.zip", "--wait", "b.zip"], /takes no argument "b\.zip"/],
      [["scan", "list", "--limit", "0"], /--limit must be a number from 1 to 100/],
      [["scan", "nope"], /unknown scan command "nope"/],
      [["workers", "extra"], /takes no argument "extra"/],
      [["serve", "--port", "1"], /Unknown option '--port'/],
    ];
    const results = await runAll(cases.map(([args]) => args));
    cases.forEach(([args, message], index) => {
      expect(results[index].code, args.join(" ")).toBe(2);
      expect(results[index].stderr, args.join(" ")).toMatch(message);
    });
  }, 300_000);
});

/** The top-level keys of one JSON object as written, duplicates kept (JSON.parse keeps only the last). */
function writtenKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let index = 0; index < line.length; index++) {
    const char = line[index];
    if (char === '"') {
      let end = index + 1;
      while (line[end] !== '"') end += line[end] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(line.slice(index, end + 1)));
      expectKey = false;
      index = end;
    } else if (char === "{" || char === "[") {
      depth++;
      expectKey = char === "{" && depth === 1;
    } else if (char === "}" || char === "]") depth--;
    else if (char === "," && depth === 1) expectKey = true;
  }
  return keys;
}

describe("readable output", () => {
  it("the server's JSON logs have no duplicate keys, relay the runner's records as records, and carry no SDK warning", () => {
    const lines = server.output().split("\n").filter((line) => line.startsWith("{"));
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) {
      const keys = writtenKeys(line);
      expect(new Set(keys).size, line).toBe(keys.length);
    }
    const records = lines.map((line) => JSON.parse(line));
    const analysis = records.find((record) => typeof record.msg === "string" && record.msg.startsWith("analysis done"));
    expect(analysis).toMatchObject({ stream: "stderr", skipped: { vendoredDirectories: 1 }, findings: plantedSecretsTree().expected.length });
    expect(typeof analysis.childPid).toBe("number");
    // No runner record is left as an escaped string.
    expect(records.some((record) => typeof record.msg === "string" && record.msg.startsWith('{"level"'))).toBe(false);
    expect(server.output()).not.toContain("NodeVersionSupportWarning");
  });

  it("logs readable lines when asked to (as on a terminal), JSON otherwise", async () => {
    const code = `
      const { createLogger } = await import(${JSON.stringify(new URL("../../shared/logger.ts", import.meta.url).href)});
      const format = process.argv.at(-1);
      createLogger({ logLevel: "info", logFormat: format }, { service: "demo" }).info({ scanId: "s-1" }, "hello there");`;
    const run = (format: string) =>
      new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code, format], { env: childEnv({}), stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        child.stderr.on("data", (chunk) => (stderr += chunk));
        child.on("close", () => resolve(stderr));
      });
    const [prettyText, jsonText] = await Promise.all([run("pretty"), run("auto")]);
    expect(prettyText).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: hello there/m);
    expect(prettyText).toMatch(/scanId: "s-1"/);
    expect(prettyText).not.toContain('{"level"');
    // stderr is a pipe here: auto means JSON.
    expect(JSON.parse(jsonText.trim())).toMatchObject({ level: 30, msg: "hello there", service: "demo", scanId: "s-1" });
  });
});
