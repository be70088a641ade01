/**
 * `vega maintenance <job>`: one-shot jobs that print one line of JSON on stdout,
 * log on stderr, and exit 0 on success, non-zero with the reason otherwise.
 * In production this is the vega-maintenance ECS task with its command overridden.
 *
 * On the embedded database, a job finds the data directory held by a running
 * server (`npm start`) more often than not: cleanup, prune-artifacts and
 * recover-stale then run through that server's API (./through-server.ts) and
 * print the same JSON with the same exit codes; migrate refuses (the server
 * migrated the database when it started).
 */
import os from "node:os";
import path from "node:path";
import type { Config } from "../shared/config.ts";
import { openDatabase, type Database } from "../api/db/client.ts";
import { DataDirHeldError } from "../api/db/data-dir-lock.ts";
import { migrate, pendingMigrations } from "../api/db/migrate.ts";
import { createLogger } from "../shared/logger.ts";
import { createVegaPubSub } from "../api/pubsub.ts";
import { openConfiguredArtifactStore } from "../api/services/artifact-store.ts";
import { recoverStaleScans } from "../api/services/recovery.ts";
import { createLauncher } from "../worker/launchers/index.ts";
import { countsOfRun, type CleanupJobName } from "../api/services/cleanup.ts";
import { CleanupGate, startCleanup, stopCleanupInProcess } from "../api/services/cleanup-runs.ts";
import { asksForHelp, helpOf, HelpRequested, parseCommandLine, UsageError } from "./args.ts";
import { COMMANDS } from "./commands.ts";
import { EXIT_TIMED_OUT, parseRunRemote, runRemote } from "./run-remote.ts";
import { cleanupThroughServer, findHoldingServer, recoverThroughServer, type HoldingServer, type ServerCleanupRun } from "./through-server.ts";

type Job = (argv: string[], config: Config) => Promise<Record<string, unknown>>;

/** A job that ends with its own exit code and summary (a refusal, a remote task's failure), not an error. */
export class JobExit extends Error {
  constructor(
    readonly exitCode: number,
    readonly summary: Record<string, unknown>,
  ) {
    super(`exit ${exitCode}`);
  }
}

/**
 * sysexits' EX_TEMPFAIL: nothing was done because something else is in progress
 * (another cleanup; another process, not a server, holding the embedded data
 * directory); try again later.
 */
export const EXIT_TRY_LATER = 75;

const jobs: Record<string, Job> = {
  async migrate(argv, config) {
    parseCommandLine(COMMANDS["maintenance migrate"], argv);
    const log = createLogger(config, { service: "vega-maintenance", job: "migrate" });
    const database = await openDatabase(config, { purpose: "vega maintenance migrate" }).catch((error: unknown) => {
      if (error instanceof DataDirHeldError) {
        throw new Error(`${error.message}; a server migrates the embedded database itself when it starts: stop it to migrate by hand`);
      }
      throw error;
    });
    try {
      const result = await migrate(database.sql, { log: (message) => log.info(message) });
      return { job: "migrate", database: database.description, ...result };
    } finally {
      await database.close();
    }
  },
  cleanup: (argv, config) => cleanupJob("cleanup", argv, config),
  "prune-artifacts": (argv, config) => cleanupJob("prune-artifacts", argv, config, ["artifacts"]),
  "recover-stale": recoverStaleJob,
  async "run-remote"(argv, config) {
    const request = parseRunRemote(argv, config, Object.keys(jobs));
    const log = createLogger(config, { service: "vega-maintenance", job: "run-remote" });
    const outcome = await runRemote(request, config, log);
    const summary = { job: "run-remote", ...outcome.summary };
    if (outcome.timedOut) throw new JobExit(EXIT_TIMED_OUT, summary);
    // The task's own exit code, so that a script (run-migrations.sh) fails as the task did.
    if (outcome.exitCode !== 0) throw new JobExit(outcome.exitCode ?? 1, summary);
    return summary;
  },
};

/**
 * The embedded database for a job, or the live server that holds it (the job
 * then runs through the server's API). A directory held by another maintenance
 * job is a JobExit(EXIT_TRY_LATER). On PostgreSQL, always the database.
 */
async function openJobTarget(config: Config, job: string): Promise<{ database: Database } | { server: HoldingServer }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { database: await openDatabase(config, { purpose: `vega maintenance ${job}` }) };
    } catch (error) {
      if (!(error instanceof DataDirHeldError)) throw error;
      const server = await findHoldingServer(config, error.owner, cliCaller());
      // The owner ended while we looked: the directory is free, take it.
      if (server === "gone" && attempt < 3) continue;
      if (server && server !== "gone") return { server };
      throw new JobExit(EXIT_TRY_LATER, { job, skipped: true, error: `${error.message}; nothing was done: try again when it has ended` });
    }
  }
}

/** What a job run through a server adds to its summary. */
const ranThrough = (config: Config, server: HoldingServer) => ({ database: path.join(config.dataDir, "pglite"), server: server.url });

/**
 * `cleanup` (every job) and `prune-artifacts` (the artifact job alone), as a
 * CleanupRun triggered by the CLI under the same lock as the API's runs. A run
 * refused because another is in progress exits EXIT_TRY_LATER with
 * `skipped: true` and that run; a run that failed exits 1 with its error.
 * SIGTERM (ECS StopTask) and SIGINT interrupt the run between two batches.
 * Through a server, the run is the server's (an operator's, triggered by the
 * CLI's user@host): the command waits for it, and a signal ends the wait only.
 */
async function cleanupJob(name: "cleanup" | "prune-artifacts", argv: string[], config: Config, jobNames?: CleanupJobName[]) {
  const dryRun = parseCommandLine(COMMANDS[`maintenance ${name}`], argv).flags["dry-run"] ?? false;
  const target = await openJobTarget(config, name);
  if ("server" in target) {
    const cleanup = await cleanupThroughServer(target.server, { dryRun, jobs: jobNames });
    if (cleanup.outcome === "inProgress") throw cleanupInProgress(name, cleanup.run);
    return cleanupSummary(name, cleanup.run, ranThrough(config, target.server));
  }
  const database = target.database;
  const log = createLogger(config, { service: "vega-maintenance", job: name });
  // With VEGA_REDIS_URL, the API's cleanupRunUpdated subscribers see this run too.
  const { pubsub, close: closePubSub } = createVegaPubSub(config, log);
  const deps = {
    config,
    database,
    prisma: database.prisma,
    pubsub,
    log,
    artifacts: await openConfiguredArtifactStore(config),
    cleanupGate: new CleanupGate(),
  };
  const interrupt = () => void stopCleanupInProcess(deps);
  process.once("SIGTERM", interrupt).once("SIGINT", interrupt);
  try {
    await requireMigrated(database);
    const start = await startCleanup(deps, { trigger: "CLI", triggeredBy: cliCaller(), dryRun, jobs: jobNames });
    if (start.outcome !== "started") throw cleanupInProgress(name, start.outcome === "inProgress" ? start.run : null);
    const run = await start.finished;
    return cleanupSummary(name, { ...run, counts: countsOfRun(run), bytesFreed: run.bytesFreed.toString() }, { database: database.description });
  } finally {
    process.off("SIGTERM", interrupt).off("SIGINT", interrupt);
    await closePubSub();
    await database.close();
  }
}

type RunSummary = Pick<ServerCleanupRun, "id" | "dryRun" | "status" | "bytesFreed" | "error"> & { counts: Record<string, number | null | undefined> };

/** The summary of a finished run; a run that did not succeed exits 1 with its error. */
function cleanupSummary(name: string, run: RunSummary, where: Record<string, string>) {
  const summary = {
    job: name,
    cleanupRunId: run.id,
    dryRun: run.dryRun,
    status: run.status,
    // Only the jobs the run executed (a GraphQL answer has null for the others).
    counts: Object.fromEntries(Object.entries(run.counts).filter(([key, count]) => key !== "__typename" && typeof count === "number")),
    bytesFreed: run.bytesFreed,
    ...where,
  };
  if (run.status !== "SUCCEEDED") throw new JobExit(1, { ...summary, error: run.error });
  return summary;
}

function cleanupInProgress(name: string, running: (Pick<ServerCleanupRun, "id" | "trigger" | "triggeredBy"> & { startedAt: string | Date }) | null) {
  return new JobExit(EXIT_TRY_LATER, {
    job: name,
    skipped: true,
    error: "another cleanup is in progress; nothing was done",
    inProgress: running && {
      cleanupRunId: running.id,
      trigger: running.trigger,
      triggeredBy: running.triggeredBy,
      startedAt: new Date(running.startedAt).toISOString(),
    },
  });
}

/** user@host of the CLI's caller, for CleanupRun.triggeredBy (a container's uid may have no user name). */
function cliCaller(): string {
  let user: string;
  try {
    user = os.userInfo().username;
  } catch {
    user = `uid-${process.getuid?.() ?? "unknown"}`;
  }
  return `${user}@${os.hostname()}`;
}

/** Jobs need the current schema: a database with pending migrations is refused with the remedy. */
async function requireMigrated(database: Database) {
  const pending = await pendingMigrations(database.sql);
  if (pending.length > 0) throw new Error(`the database has pending migrations (${pending.join(", ")}): run \`vega maintenance migrate\` first`);
}

/**
 * `recover-stale [--dry-run]`: stale-scan recovery when no worker runs it, asking
 * the configured launcher (ECS, or local processes on this machine) about tasks.
 */
async function recoverStaleJob(argv: string[], config: Config) {
  const dryRun = parseCommandLine(COMMANDS["maintenance recover-stale"], argv).flags["dry-run"] ?? false;
  const target = await openJobTarget(config, "recover-stale");
  if ("server" in target) {
    const { decisions, ...sweep } = await recoverThroughServer(target.server, dryRun);
    return {
      job: "recover-stale",
      ...sweep,
      decisions: decisions.map((decision) => ({ scanId: decision.scanId, action: decision.action, code: decision.code, reason: decision.reason })),
      ...ranThrough(config, target.server),
    };
  }
  const database = target.database;
  const log = createLogger(config, { service: "vega-maintenance", job: "recover-stale" });
  const { pubsub, close: closePubSub } = createVegaPubSub(config, log);
  try {
    await requireMigrated(database);
    const sweep = await recoverStaleScans(
      { config, prisma: database.prisma, pubsub, log, signingKey: undefined, openLauncher: (launcherLog) => createLauncher(config, launcherLog) },
      { dryRun, actor: `cli:${cliCaller()}` },
    );
    return {
      job: "recover-stale",
      dryRun,
      runningScansChecked: sweep.candidates.running,
      orphanedClaimsFound: sweep.candidates.orphaned,
      decisions: sweep.decisions.map((decision) => ({ scanId: decision.scanId, action: decision.action, code: decision.code, reason: decision.reason })),
      applied: sweep.outcomes.filter((outcome) => outcome.applied).length,
    };
  } finally {
    await closePubSub();
    await database.close();
  }
}

export async function maintenance(argv: string[], config: Config) {
  const [name, ...rest] = argv;
  if (!name || name.startsWith("-")) {
    if (asksForHelp(argv)) throw new HelpRequested(helpOf(COMMANDS.maintenance));
    throw new UsageError(`maintenance needs a job: ${Object.keys(jobs).join(", ")} (see vega maintenance --help)`);
  }
  const job = jobs[name];
  if (!job) throw new UsageError(`unknown maintenance job "${name}" (known: ${Object.keys(jobs).join(", ")})`);
  const started = Date.now();
  try {
    const summary = await job(rest, config);
    console.log(JSON.stringify({ ok: true, ...summary, durationMs: Date.now() - started }));
    return 0;
  } catch (error) {
    if (error instanceof UsageError || error instanceof HelpRequested) throw error;
    if (error instanceof JobExit) {
      console.log(JSON.stringify({ ok: false, job: name, ...error.summary, durationMs: Date.now() - started }));
      return error.exitCode;
    }
    const reason = error instanceof Error ? error.message : String(error);
    console.log(JSON.stringify({ ok: false, job: name, error: reason, durationMs: Date.now() - started }));
    console.error(`vega maintenance ${name}: ${reason}`);
    return 1;
  }
}
