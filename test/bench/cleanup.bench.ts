/**
 * `vega maintenance cleanup` over 100,000 artifacts of scans finished a month
 * ago (rows made in bulk with SQL, 64-byte files in the store's layout:
 * sources/<month>/<key>), side by side with `rm -rf` of the same number of files
 * in the same layout. Each command runs as its own process under /usr/bin/time,
 * so the figures are wall time and peak RSS of that process alone; the job's
 * own duration (without Node's start-up or the final sync) is the JSON's durationMs.
 *
 * Embedded PGlite by default; with VEGA_TEST_DATABASE_URL, a fresh PostgreSQL
 * database next to it.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../../shared/config.ts";
import { openDatabase } from "../../api/db/client.ts";
import { childEnv, vegaBin } from "../support/cli.ts";
import { createPostgresDatabase, postgresTestUrl } from "../support/database.ts";

// Uploaded one every 10 s from 40 days ago: the newest finished about 28 days ago, all past a week's retention.
const ARTIFACTS = 100_000;
const FILE_BYTES = 64;
const MONTHS = 12;
const WRITE_CONCURRENCY = 64;

const keyOf = (index: number) =>
  `sources/2020-${String((index % MONTHS) + 1).padStart(2, "0")}/${createHash("md5").update(String(index)).digest("hex")}`;

interface Timed {
  seconds: number;
  syncSeconds: number;
  peakRssMb: number;
  stdout: string;
  stderr: string;
  code: number | null;
}

/**
 * Runs a command under GNU time: wall seconds and maximum resident set size of
 * that process. The disk is synced first, so that the command does not pay for
 * the previous one's deletions, and the sync that follows it is timed apart:
 * on a busy or discard-mounted disk it dwarfs everything else and is not the
 * command's own cost.
 */
function timed(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Timed {
  spawnSync("sync");
  const result = spawnSync("/usr/bin/time", ["-f", "__time__ %e %M", command, ...args], { env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  const match = /__time__ ([\d.]+) (\d+)/.exec(result.stderr);
  if (!match) throw new Error(`no timing from /usr/bin/time: ${result.stderr}`);
  const syncStarted = process.hrtime.bigint();
  spawnSync("sync");
  const syncSeconds = Number(process.hrtime.bigint() - syncStarted) / 1e9;
  return { seconds: Number(match[1]), syncSeconds, peakRssMb: Number(match[2]) / 1024, stdout: result.stdout, stderr: result.stderr, code: result.status };
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
                   ${FILE_BYTES}, repeat('0', 64), (now() AT TIME ZONE 'UTC') - interval '40 days' + i * interval '10 seconds'
            FROM generate_series(0, ${ARTIFACTS - 1}) AS i;
          INSERT INTO "Scan" (id, status, "workspaceId", "ownerId", "sourceArtifactId", "createdAt", "queuedAt", "startedAt", "finishedAt")
            SELECT 'scan-' || a.i, 'SUCCEEDED', 'bench-workspace', 'bench', 'artifact-' || a.i, a.at, a.at, a.at, a.at + interval '5 minutes'
            FROM (SELECT i, (now() AT TIME ZONE 'UTC') - interval '40 days' + i * interval '10 seconds' AS at
                  FROM generate_series(0, ${ARTIFACTS - 1}) AS i) AS a;
          ANALYZE;`),
      );
    } finally {
      await database.close();
    }
    const seedSeconds = (Date.now() - started) / 1000;
    started = Date.now();
    await writeTree(env.VEGA_ARTIFACT_DIR);
    // Two baseline trees: one removed just before the cleanup, one just after, so that a disk
    // busy with something else shows as a difference between the two rm -rf figures.
    const baselineRoots = [path.join(dir, "rm-before"), path.join(dir, "rm-after")];
    for (const root of baselineRoots) await writeTree(root);
    const treeSeconds = (Date.now() - started) / 1000;
    console.log(
      `${ARTIFACTS} artifacts of scans finished 28 to 40 days ago on ${postgres ? "PostgreSQL" : "PGlite"}: rows in ${seedSeconds.toFixed(1)} s, ` +
        `three trees of ${ARTIFACTS} files (${MONTHS} month directories) in ${treeSeconds.toFixed(1)} s`,
    );

    // A process that opens the database and does nothing: the RSS baseline.
    const idle = vega("maintenance", "migrate");
    const dry = vega("maintenance", "cleanup", "--dry-run");
    const removalBefore = timed("rm", ["-rf", path.join(baselineRoots[0], "sources")]);
    const real = vega("maintenance", "cleanup");
    const removalAfter = timed("rm", ["-rf", path.join(baselineRoots[1], "sources")]);
    const again = vega("maintenance", "cleanup");
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
        `${label.padEnd(48)} ${run.seconds.toFixed(2).padStart(7)} s wall` +
          `${jobMs === undefined ? "".padEnd(17) : `  (job ${(jobMs / 1000).toFixed(2).padStart(6)} s)`}` +
          `  then sync ${run.syncSeconds.toFixed(2).padStart(6)} s  peak RSS ${run.peakRssMb.toFixed(0).padStart(4)} MB`,
      );
    row("vega maintenance migrate (nothing to apply)", idle, summary(idle).durationMs);
    row("vega maintenance cleanup --dry-run", dry, summary(dry).durationMs);
    row("vega maintenance cleanup", real, realSummary.durationMs);
    row("vega maintenance cleanup (nothing left)", again, summary(again).durationMs);
    row(`rm -rf (${ARTIFACTS} files, same layout), before`, removalBefore);
    row(`rm -rf (${ARTIFACTS} files, same layout), after`, removalAfter);
    const jobSeconds = realSummary.durationMs / 1000;
    const removalSeconds = (removalBefore.seconds + removalAfter.seconds) / 2;
    const withSync = (run: Timed) => run.seconds + run.syncSeconds;
    console.log(
      `cleanup: ${(ARTIFACTS / jobSeconds).toFixed(0)} artifacts/s (files deleted and rows marked); ` +
        `wall ${(real.seconds / removalSeconds).toFixed(1)}× the mean rm -rf, ` +
        `${(withSync(real) / ((withSync(removalBefore) + withSync(removalAfter)) / 2)).toFixed(1)}× counting each one's sync; ` +
        `peak RSS ${(real.peakRssMb - idle.peakRssMb).toFixed(0)} MB above a process that does nothing; bytes freed ${realSummary.bytesFreed}`,
    );
  } finally {
    await postgres?.drop();
    await rm(dir, { recursive: true, force: true });
  }
}
