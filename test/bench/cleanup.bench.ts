/**
 * `vega maintenance cleanup` over 100,000 artifacts of scans finished a month
 * ago (rows made in bulk with SQL, 64-byte files in the store's layout:
 * sources/<month>/<key>), side by side with `rm -rf` of the same number of files
 * in the same layout. Each command runs as its own process under /usr/bin/time,
 * so the figures are wall time and peak RSS of that process alone; the job's
 * own duration (without Node's start-up) is the JSON's durationMs.
 *
 * Embedded PGlite by default; with VEGA_TEST_DATABASE_URL, a fresh PostgreSQL
 * database next to it.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../../src/config.ts";
import { openDatabase } from "../../src/db/client.ts";
import { childEnv, vegaBin } from "../support/cli.ts";
import { createPostgresDatabase, postgresTestUrl } from "../support/database.ts";

const ARTIFACTS = 100_000;
const FILE_BYTES = 64;
const MONTHS = 12;
const WRITE_CONCURRENCY = 64;

const keyOf = (index: number) =>
  `sources/2020-${String((index % MONTHS) + 1).padStart(2, "0")}/${createHash("md5").update(String(index)).digest("hex")}`;

interface Timed {
  seconds: number;
  peakRssMb: number;
  stdout: string;
  stderr: string;
  code: number | null;
}

/** Runs a command under GNU time: wall seconds and maximum resident set size of that process. */
function timed(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Timed {
  const result = spawnSync("/usr/bin/time", ["-f", "__time__ %e %M", command, ...args], { env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  const match = /__time__ ([\d.]+) (\d+)/.exec(result.stderr);
  if (!match) throw new Error(`no timing from /usr/bin/time: ${result.stderr}`);
  return { seconds: Number(match[1]), peakRssMb: Number(match[2]) / 1024, stdout: result.stdout, stderr: result.stderr, code: result.status };
}

async function writeTree(root: string) {
  for (let month = 1; month <= MONTHS; month++) await mkdir(path.join(root, "sources", `2020-${String(month).padStart(2, "0")}`), { recursive: true });
  const content = Buffer.alloc(FILE_BYTES, 120);
  let next = 0;
  await Promise.all(
    Array.from({ length: WRITE_CONCURRENCY }, async () => {
      while (next < ARTIFACTS) {
        const index = next++;
        await writeFile(path.join(root, keyOf(index)), content);
      }
    }),
  );
}

export default async function (): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-cleanup-"));
  const postgres = postgresTestUrl ? await createPostgresDatabase() : undefined;
  try {
    const env = {
      VEGA_DATA_DIR: path.join(dir, "data"),
      VEGA_ARTIFACT_DIR: path.join(dir, "store"),
      VEGA_LOG_LEVEL: "warn",
      ...(postgres ? { VEGA_DATABASE_URL: postgres.url } : {}),
    };
    const vega = (...args: string[]) => timed(process.execPath, [vegaBin, ...args], childEnv(env));
    const migrated = vega("maintenance", "migrate");
    if (migrated.code !== 0) throw new Error(`migrate failed: ${migrated.stderr}`);

    let started = Date.now();
    const database = await openDatabase(loadConfig(env));
    try {
      await database.sql.withConnection((connection) =>
        connection.exec(`
          INSERT INTO "User" (id, groups) VALUES ('bench', '{}');
          INSERT INTO "Workspace" (id, name, personal, "ownerId") VALUES ('bench-workspace', 'bench', false, 'bench');
          INSERT INTO "Artifact" (id, kind, "workspaceId", "ownerId", "storageKey", "sizeBytes", sha256, "createdAt")
            SELECT 'artifact-' || i, 'SOURCE', 'bench-workspace', 'bench',
                   'sources/2020-' || lpad((i % ${MONTHS} + 1)::text, 2, '0') || '/' || md5(i::text),
                   ${FILE_BYTES}, repeat('0', 64), (now() AT TIME ZONE 'UTC') - interval '40 days'
            FROM generate_series(0, ${ARTIFACTS - 1}) AS i;
          INSERT INTO "Scan" (id, status, "workspaceId", "ownerId", "sourceArtifactId", "startedAt", "finishedAt")
            SELECT 'scan-' || i, 'SUCCEEDED', 'bench-workspace', 'bench', 'artifact-' || i,
                   (now() AT TIME ZONE 'UTC') - interval '31 days', (now() AT TIME ZONE 'UTC') - interval '30 days'
            FROM generate_series(0, ${ARTIFACTS - 1}) AS i;
          ANALYZE;`),
      );
    } finally {
      await database.close();
    }
    const seedSeconds = (Date.now() - started) / 1000;
    started = Date.now();
    await writeTree(env.VEGA_ARTIFACT_DIR);
    const baselineRoot = path.join(dir, "rm-baseline");
    await writeTree(baselineRoot);
    const treeSeconds = (Date.now() - started) / 1000;
    console.log(
      `${ARTIFACTS} artifacts of scans finished 30 days ago on ${postgres ? "PostgreSQL" : "PGlite"}: rows in ${seedSeconds.toFixed(1)} s, ` +
        `two trees of ${ARTIFACTS} files (${MONTHS} month directories) in ${treeSeconds.toFixed(1)} s`,
    );

    // A process that opens the database and does nothing: the RSS baseline.
    const idle = vega("maintenance", "migrate");
    const dry = vega("maintenance", "cleanup", "--dry-run");
    const real = vega("maintenance", "cleanup");
    const again = vega("maintenance", "cleanup");
    const removal = timed("rm", ["-rf", path.join(baselineRoot, "sources")]);
    for (const [name, run] of Object.entries({ dry, real, again })) {
      if (run.code !== 0) throw new Error(`cleanup (${name}) failed: ${run.stdout}${run.stderr}`);
    }
    const summary = (run: Timed) => JSON.parse(run.stdout.trim().split("\n").at(-1)!);
    const realSummary = summary(real);
    if (summary(dry).counts.artifacts !== ARTIFACTS || realSummary.counts.artifacts !== ARTIFACTS) {
      throw new Error(`expected ${ARTIFACTS} artifacts, got dry ${summary(dry).counts.artifacts}, real ${realSummary.counts.artifacts}`);
    }

    const row = (label: string, run: Timed, jobMs?: number) =>
      console.log(
        `${label.padEnd(44)} ${run.seconds.toFixed(2).padStart(7)} s wall` +
          `${jobMs === undefined ? "".padEnd(17) : `  (job ${(jobMs / 1000).toFixed(2).padStart(6)} s)`}  peak RSS ${run.peakRssMb.toFixed(0).padStart(4)} MB`,
      );
    row("vega maintenance migrate (nothing to apply)", idle, summary(idle).durationMs);
    row("vega maintenance cleanup --dry-run", dry, summary(dry).durationMs);
    row("vega maintenance cleanup", real, realSummary.durationMs);
    row("vega maintenance cleanup (nothing left)", again, summary(again).durationMs);
    row(`rm -rf (${ARTIFACTS} files, same layout)`, removal);
    const jobSeconds = realSummary.durationMs / 1000;
    console.log(
      `cleanup: ${(ARTIFACTS / jobSeconds).toFixed(0)} artifacts/s (files deleted and rows marked), ` +
        `${(jobSeconds / removal.seconds).toFixed(1)}× rm -rf's time; ` +
        `peak RSS ${(real.peakRssMb - idle.peakRssMb).toFixed(0)} MB above a process that does nothing; bytes freed ${realSummary.bytesFreed}`,
    );
  } finally {
    await postgres?.drop();
    await rm(dir, { recursive: true, force: true });
  }
}
