/**
 * Stale-scan recovery of 10,000 ECS-launched scans, all started two hours ago
 * (threshold: one hour): 5,000 whose task has STOPPED, 1,000 whose task ECS
 * has forgotten (MISSING) and 4,000 whose task still runs. The sweep is the
 * real path (recoverStaleScans: the launcher the config names, the real
 * SDK pointed at the ECS test endpoint by AWS_ENDPOINT_URL_ECS), measured side
 * by side with its parts on the same rows: DescribeTasks alone, and the
 * database updates alone (applyRecoveryDecisions with the decisions computed
 * beforehand). Rows are inserted with SQL; between runs they are put back.
 *
 * Embedded PGlite (in memory) by default; with VEGA_TEST_DATABASE_URL, a fresh
 * PostgreSQL database next to it.
 */
import { ECSClient, RunTaskCommand } from "@aws-sdk/client-ecs";
import { loadConfig } from "../../shared/config.ts";
import { createLogger, type Logger } from "../../shared/logger.ts";
import { createVegaPubSub } from "../../api/pubsub.ts";
import { applyRecoveryDecisions, recoverStaleScans, type RecoverySweep } from "../../api/services/recovery.ts";
import { createEcsLauncher } from "../../worker/launchers/ecs.ts";
import { createLauncher } from "../../worker/launchers/index.ts";
import { openTestDatabase, postgresTestUrl } from "../support/database.ts";
import { startEcsEndpoint } from "../support/ecs-endpoint.ts";
import { ecsClientEnv, insertScansInBulk, setProcessEnv, testEcsLauncherOptions } from "../support/recovery.ts";

const SCANS = 10_000;
const STOPPED = 5_000;
const MISSING = 1_000;
const RUNTASK_COUNT = 10;
const CONCURRENCY = 16;

const seconds = (ms: number) => `${(ms / 1000).toFixed(2).padStart(6)} s`;

export default async function (): Promise<void> {
  const ecs = await startEcsEndpoint();
  const restoreEnv = setProcessEnv(ecsClientEnv(ecs.url));
  const db = await openTestDatabase();
  const config = loadConfig({
    VEGA_LOG_LEVEL: "warn",
    VEGA_LAUNCHER: "ecs",
    VEGA_ECS_CLUSTER: "vega",
    VEGA_ECS_TASK_DEFINITION: "vega-runner:1",
    VEGA_SCAN_RUNNING_STALE_SECONDS: "3600",
    // Past the scans' age: the live tasks are warned about by the stale sweep, not stopped by the timeout.
    VEGA_SCAN_TIMEOUT_SECONDS: "86400",
    ...(db.url ? { VEGA_DATABASE_URL: db.url } : {}),
  });
  const { pubsub, close: closePubSub } = createVegaPubSub(config);
  const prisma = db.database.prisma;
  const deps = { prisma, pubsub, config, signingKey: undefined, log: createLogger(config, { service: "bench" }), openLauncher: (log: Logger) => createLauncher(config, log) };
  try {
    // 10,000 tasks the endpoint knows, started by RunTask (ten per call) through the real SDK.
    let started = Date.now();
    const client = new ECSClient({ region: "us-east-1", maxAttempts: 1 });
    const taskArns: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < SCANS / RUNTASK_COUNT) {
          next++;
          const { tasks = [] } = await client.send(new RunTaskCommand({ cluster: "vega", taskDefinition: "vega-runner:1", count: RUNTASK_COUNT, launchType: "FARGATE" }));
          taskArns.push(...tasks.map((task) => task.taskArn!));
        }
      }),
    );
    client.destroy();
    taskArns.forEach((taskArn, index) => {
      if (index < STOPPED) ecs.setTaskState(taskArn, { lastStatus: "STOPPED", stopCode: "SpotInterruption", stoppedReason: "Your Spot Task was interrupted.", exitCode: 137 });
      else if (index < STOPPED + MISSING) ecs.forget(taskArn);
      else ecs.setTaskState(taskArn, { lastStatus: "RUNNING" });
    });
    const tasksSeconds = (Date.now() - started) / 1000;
    started = Date.now();
    const scanIds = await insertScansInBulk(prisma, { ownerId: "bench", taskIds: taskArns, startedAt: new Date(Date.now() - 2 * 3600_000) });
    await prisma.$executeRawUnsafe("ANALYZE");
    console.log(
      `${SCANS} RUNNING ECS scans on ${postgresTestUrl ? "PostgreSQL" : "PGlite"} (${STOPPED} tasks STOPPED, ${MISSING} MISSING, ` +
        `${SCANS - STOPPED - MISSING} RUNNING): tasks in ${tasksSeconds.toFixed(1)} s, rows in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );

    /** Puts every scan back to RUNNING, unwarned, without events. */
    const putBack = async () => {
      await prisma.$executeRaw`DELETE FROM "ScanEvent" WHERE "scanId" = ANY(${scanIds}::text[])`;
      await prisma.$executeRaw`
        UPDATE "Scan" SET status = 'RUNNING', "errorCode" = NULL, "errorMessage" = NULL, "finishedAt" = NULL,
                          "staleWarnedAt" = NULL, "lastEventSeq" = 0
        WHERE id = ANY(${scanIds}::text[])`;
      // Each round starts from the same tables, not from the dead rows of the one before.
      await prisma.$executeRawUnsafe(`VACUUM ANALYZE "Scan", "ScanEvent"`);
    };

    const check = (what: string, applied: number) => {
      if (applied !== SCANS) throw new Error(`${what}: ${applied} of ${SCANS} decisions applied`);
    };

    const fullSweep = async () => {
      const describesBefore = ecs.calls("DescribeTasks");
      const begin = performance.now();
      const sweep = await recoverStaleScans(deps, { dryRun: false });
      const ms = performance.now() - begin;
      check("sweep", sweep.outcomes.filter((outcome) => outcome.applied).length);
      return { ms, describes: ecs.calls("DescribeTasks") - describesBefore, sweep };
    };

    const describeOnly = async () => {
      const launcher = createEcsLauncher({
        ...testEcsLauncherOptions,
      });
      try {
        const begin = performance.now();
        const statuses = await launcher.describe(taskArns);
        const ms = performance.now() - begin;
        if (statuses.size !== SCANS) throw new Error(`describe answered ${statuses.size} statuses`);
        return ms;
      } finally {
        await launcher.close();
      }
    };

    const updatesOnly = async (decisions: RecoverySweep["decisions"]) => {
      const begin = performance.now();
      const outcomes = await applyRecoveryDecisions(deps, decisions);
      const ms = performance.now() - begin;
      check("updates", outcomes.filter((outcome) => outcome.applied).length);
      return ms;
    };

    const rounds: { full: number; describes: number; describeMs: number; updatesMs: number }[] = [];
    for (let round = 0; round < 2; round++) {
      const full = await fullSweep();
      const counts = full.sweep.decisions.reduce<Record<string, number>>((all, decision) => ({ ...all, [decision.code]: (all[decision.code] ?? 0) + 1 }), {});
      if (round === 0) console.log(`decisions: ${JSON.stringify(counts)}`);
      await putBack();
      const describeMs = await describeOnly();
      const updatesMs = await updatesOnly(full.sweep.decisions);
      await putBack();
      rounds.push({ full: full.ms, describes: full.describes, describeMs, updatesMs });
    }

    console.log(`${"round".padEnd(6)} ${"whole sweep".padStart(12)} ${"DescribeTasks calls".padStart(20)} ${"describe alone".padStart(15)} ${"DB updates alone".padStart(17)}`);
    for (const [index, round] of rounds.entries()) {
      console.log(
        `${String(index + 1).padEnd(6)} ${seconds(round.full).padStart(12)} ${String(round.describes).padStart(20)} ` +
          `${seconds(round.describeMs).padStart(15)} ${seconds(round.updatesMs).padStart(17)}`,
      );
      if (round.describes > 100) throw new Error(`${round.describes} DescribeTasks calls for ${SCANS} tasks: at most 100 expected`);
    }
    const best = (key: "full" | "describeMs" | "updatesMs") => Math.min(...rounds.map((round) => round[key]));
    console.log(
      `best of ${rounds.length}: whole sweep ${(best("full") / 1000).toFixed(2)} s = ${(SCANS / (best("full") / 1000)).toFixed(0)} scans/s; ` +
        `DB updates alone ${(best("updatesMs") / 1000).toFixed(2)} s (${((best("updatesMs") / best("full")) * 100).toFixed(0)}% of the sweep), ` +
        `DescribeTasks alone ${(best("describeMs") / 1000).toFixed(2)} s`,
    );
  } finally {
    await closePubSub();
    await db.close();
    restoreEnv();
    await ecs.close();
  }
}
