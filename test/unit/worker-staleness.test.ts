/**
 * Worker staleness (api/services/worker-staleness.ts), one rule with one
 * boundary: a heartbeat exactly VEGA_WORKER_HEARTBEAT_TTL_SECONDS old is still
 * fresh, one millisecond older is stale. Checked in memory, as the Prisma
 * filters every reader uses, and through the readers that take a `now`
 * (the stale-worker sweep, diagnostics, registry pruning), on an in-memory
 * PGlite (or PostgreSQL with VEGA_TEST_DATABASE_URL).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config.ts";
import { createLogger } from "../../shared/logger.ts";
import { createVegaPubSub } from "../../api/pubsub.ts";
import { diagnose } from "../../api/services/diagnostics.ts";
import { reportStaleWorkers } from "../../api/services/worker-sweeper.ts";
import { freshWorkerWhere, isWorkerStale, staleWorkerCutoff, staleWorkerWhere, workerLiveness } from "../../api/services/worker-staleness.ts";
import { pruneGoneWorkers } from "../../api/hardening/cleanup/workers.ts";
import { openTestDatabase, type TestDatabase } from "../support/database.ts";

const NOW = new Date("2026-12-01T12:00:00.000Z");
const TTL_SECONDS = 90;
const config = loadConfig({ VEGA_WORKER_HEARTBEAT_TTL_SECONDS: String(TTL_SECONDS), VEGA_WORKER_PRUNE_SECONDS: "3600" });
const msAgo = (ms: number) => new Date(NOW.getTime() - ms);
const TTL_MS = TTL_SECONDS * 1000;

describe("the cut-off and the in-memory rule", () => {
  it("puts the cut-off exactly the TTL before now", () => {
    expect(staleWorkerCutoff(config, NOW)).toEqual(msAgo(TTL_MS));
  });

  it("keeps a heartbeat exactly at the cut-off fresh and one millisecond older stale", () => {
    const cutoff = staleWorkerCutoff(config, NOW);
    expect(isWorkerStale(msAgo(TTL_MS - 1), cutoff)).toBe(false);
    expect(isWorkerStale(msAgo(TTL_MS), cutoff)).toBe(false);
    expect(isWorkerStale(msAgo(TTL_MS + 1), cutoff)).toBe(true);
  });

  it("answers the same in Worker.stale (workerLiveness) as in the rule", () => {
    expect(workerLiveness(msAgo(TTL_MS), TTL_SECONDS, NOW)).toEqual({ secondsSinceHeartbeat: TTL_SECONDS, stale: false });
    expect(workerLiveness(msAgo(TTL_MS + 1), TTL_SECONDS, NOW)).toEqual({ secondsSinceHeartbeat: TTL_SECONDS, stale: true });
    // A heartbeat from a clock ahead of ours is fresh, zero seconds ago.
    expect(workerLiveness(new Date(NOW.getTime() + 5000), TTL_SECONDS, NOW)).toEqual({ secondsSinceHeartbeat: 0, stale: false });
  });
});

describe("the rule in the database", () => {
  let db: TestDatabase;
  const ids: Record<"fresh" | "atCutoff" | "justStale", string> = { fresh: "", atCutoff: "", justStale: "" };
  const heardAt = { fresh: msAgo(TTL_MS - 1), atCutoff: msAgo(TTL_MS), justStale: msAgo(TTL_MS + 1) };

  beforeAll(async () => {
    db = await openTestDatabase();
    // Migrating a fresh database takes a while on a busy machine.
  }, 180_000);
  afterAll(async () => {
    await db?.close();
  });
  beforeEach(async () => {
    const prisma = db.database.prisma;
    await prisma.worker.deleteMany({});
    for (const name of Object.keys(ids) as (keyof typeof ids)[]) {
      const worker = await prisma.worker.create({
        data: { name, host: "unit", pid: 1, version: "test", capacity: 1, startedAt: msAgo(10 * TTL_MS), lastHeartbeatAt: heardAt[name] },
      });
      ids[name] = worker.id;
    }
  });

  const namesOf = (rows: { id: string }[]) =>
    rows.map((row) => (Object.keys(ids) as (keyof typeof ids)[]).find((name) => ids[name] === row.id)).sort();

  it("selects with the Prisma filters what the in-memory rule says, at the boundary", async () => {
    const prisma = db.database.prisma;
    const cutoff = staleWorkerCutoff(config, NOW);
    const stale = await prisma.worker.findMany({ where: staleWorkerWhere(cutoff) });
    const fresh = await prisma.worker.findMany({ where: freshWorkerWhere(cutoff) });
    expect(namesOf(stale)).toEqual(["justStale"]);
    expect(namesOf(fresh)).toEqual(["atCutoff", "fresh"]);
    for (const row of [...stale, ...fresh]) expect(isWorkerStale(row.lastHeartbeatAt, cutoff)).toBe(stale.includes(row));
  });

  it("has the stale-worker sweep report only the worker past the cut-off", async () => {
    const { pubsub } = createVegaPubSub({ redisUrl: undefined, redisChannelPrefix: "" });
    const reported = await reportStaleWorkers({ prisma: db.database.prisma, pubsub, config, log: createLogger({ logLevel: "silent" }) }, NOW);
    expect(namesOf(reported)).toEqual(["justStale"]);
  });

  it("has diagnostics list only the worker past the cut-off as STALE_WORKER", async () => {
    const found = await diagnose({ prisma: db.database.prisma, config }, { now: NOW, cleanupScheduledSince: NOW });
    const staleWorkers = found.filter((diagnostic) => diagnostic.code === "STALE_WORKER");
    expect(staleWorkers.map((diagnostic) => diagnostic.details.workerId)).toEqual([ids.justStale]);
  });

  it("prunes a worker stale for longer than the prune delay, by the same boundary", async () => {
    const prisma = db.database.prisma;
    const pruneMs = config.workerPruneSeconds * 1000;
    await prisma.worker.update({ where: { id: ids.atCutoff }, data: { lastHeartbeatAt: msAgo(TTL_MS + pruneMs) } });
    await prisma.worker.update({ where: { id: ids.justStale }, data: { lastHeartbeatAt: msAgo(TTL_MS + pruneMs + 1) } });
    const tally = { count: 0, bytes: 0 };
    const log = createLogger({ logLevel: "silent" });
    await pruneGoneWorkers({ prisma, config, now: NOW, dryRun: false, log, artifacts: undefined as never }, tally);
    expect(namesOf(await prisma.worker.findMany({}))).toEqual(["atCutoff", "fresh"]);
    expect(tally.count).toBe(1);
  });
});
