/**
 * One GET /metrics scrape (and one Ops.summary) with 100,000 scans in the
 * database: the state gauges are read at scrape time, so the cost must stay a
 * few fixed queries whatever the table's size. Measured side by side with a
 * plain `count(*)` of the Scan table on the same rows, so that the ratio means
 * something on a noisy machine; the queries of one scrape are counted.
 *
 * Embedded PGlite (in memory) by default; with VEGA_TEST_DATABASE_URL, a fresh
 * PostgreSQL database next to it.
 */
import { randomUUID } from "node:crypto";
import { loadConfig } from "../../shared/config.ts";
import { createVegaPubSub } from "../../api/pubsub.ts";
import { createMetrics, scrapeMetrics } from "../../api/services/metrics.ts";
import { summarizeScans } from "../../api/services/ops-scans.ts";
import type { Viewer } from "../../api/context.ts";
import { openTestDatabase, postgresTestUrl } from "../support/database.ts";
import { ensureUserRow } from "../support/fixtures.ts";

const SCANS = 100_000;
const RUNS = 20;

async function median(runs: number, work: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let run = 0; run < runs; run++) {
    const started = performance.now();
    await work();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

export default async function (): Promise<void> {
  let queries = 0;
  const db = await openTestDatabase({ onQuery: () => void queries++ });
  const config = loadConfig({ VEGA_LOG_LEVEL: "warn", ...(db.url ? { VEGA_DATABASE_URL: db.url } : {}) });
  const { pubsub, close: closePubSub } = createVegaPubSub(config);
  const prisma = db.database.prisma;
  const metrics = createMetrics(pubsub);
  try {
    const started = Date.now();
    const workspaceId = await ensureUserRow(prisma, "bench");
    const artifact = await prisma.artifact.create({
      data: { kind: "SOURCE", workspaceId, ownerId: "bench", storageKey: `sources/bench/${randomUUID()}`, sizeBytes: 100n, sha256: "0".repeat(64) },
    });
    // Mostly finished scans over the last two days, some queued, starting and running: a busy deployment's table.
    await prisma.$executeRaw`
      INSERT INTO "Scan" (id, status, "workspaceId", "ownerId", "sourceArtifactId", "createdAt", "queuedAt", "startedAt", "finishedAt", "errorCode", "updatedAt")
      SELECT gen_random_uuid()::text,
             (ARRAY['SUCCEEDED','SUCCEEDED','SUCCEEDED','FAILED','CANCELLED','QUEUED','STARTING','RUNNING'])[1 + i % 8]::"ScanStatus",
             ${workspaceId}, 'bench', ${artifact.id},
             now() - (i % 172800) * interval '1 second', now() - (i % 172800) * interval '1 second',
             CASE WHEN i % 8 IN (0, 1, 2, 3, 4, 7) THEN now() - (i % 172800) * interval '1 second' END,
             CASE WHEN i % 8 <= 4 THEN now() - (i % 172800) * interval '1 second' + interval '30 seconds' END,
             CASE WHEN i % 8 = 3 THEN 'SCAN_FAILED' END,
             now()
      FROM generate_series(1, ${SCANS}) AS i`;
    await prisma.$executeRaw`
      INSERT INTO "Worker" (id, name, host, pid, version, capacity, "activeScans", "lastHeartbeatAt")
      SELECT gen_random_uuid()::text, 'bench-' || i, 'bench', i, 'bench', 4, i % 4, now() - (i % 120) * interval '1 second'
      FROM generate_series(1, 50) AS i`;
    await prisma.$executeRawUnsafe("ANALYZE");
    console.log(`${SCANS} scans and 50 workers on ${postgresTestUrl ? "PostgreSQL" : "PGlite"}: rows in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const deps = { prisma, metrics, config };
    const operator: Viewer = { principal: { sub: "bench-ops", scope: "user", groups: ["vega-ops"] } as Viewer["principal"], isOperator: true, user: null };
    await scrapeMetrics(deps);
    queries = 0;
    const exposition = await scrapeMetrics(deps);
    const scrapeQueries = queries;
    queries = 0;
    await summarizeScans({ prisma }, operator);
    const summaryQueries = queries;

    const count = await median(RUNS, () => prisma.scan.count());
    const scrape = await median(RUNS, () => scrapeMetrics(deps));
    const summary = await median(RUNS, () => summarizeScans({ prisma }, operator));
    console.log(`  baseline: SELECT count(*) FROM "Scan"     ${count.toFixed(1).padStart(7)} ms`);
    console.log(`  one /metrics scrape (${scrapeQueries} queries, ${exposition.body.length} bytes)  ${scrape.toFixed(1).padStart(7)} ms  (${(scrape / count).toFixed(2)}× the count)`);
    console.log(`  one Ops.summary (${summaryQueries} queries)              ${summary.toFixed(1).padStart(7)} ms  (${(summary / count).toFixed(2)}× the count)`);
  } finally {
    metrics.close();
    await closePubSub();
    await db.close();
  }
}
