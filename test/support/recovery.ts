/**
 * Helpers for the stale-scan recovery tests and bench: bounded polling of the
 * database, archives full of AWS-key-like secrets, scans put in RUNNING (through
 * the API, or thousands at once with SQL), an ECS endpoint that never answers,
 * and the AWS variables that point the SDK at the ECS test endpoint.
 */
import { randomUUID } from "node:crypto";
import net from "node:net";
import type { PrismaClient } from "../../api/db/client.ts";
import type { EcsLauncherOptions } from "../../worker/launchers/ecs.ts";
import { CLAIM, registerTestWorker, REPORT_STARTED } from "./execution.ts";
import { ensureUserRow } from "./fixtures.ts";
import type { TestServer } from "./server.ts";
import { submitScan } from "./uploads.ts";
import { buildZip } from "./zips.ts";

/**
 * Polls `check` until it answers something other than undefined/false, and
 * answers that. Bounded: after `timeoutMs` it throws, naming what it waited for
 * and the last value seen (`describe`), so a hang fails with a reason.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false | null>,
  options: { timeoutMs?: number; intervalMs?: number; describe?: () => Promise<unknown> } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false && value !== null) return value;
    if (Date.now() > deadline) {
      const last = options.describe ? ` (last seen: ${JSON.stringify(await options.describe())})` : "";
      throw new Error(`timed out waiting for ${what}${last}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 25));
  }
}

/** The AWS variables that point the real SDK at an ECS test endpoint, with fake credentials. */
export const ecsClientEnv = (endpointUrl: string): Record<string, string> => ({
  AWS_ENDPOINT_URL_ECS: endpointUrl,
  AWS_REGION: "us-east-1",
  AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
  AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
});

/**
 * Sets variables in this process's environment (the test server runs here, and
 * the SDK reads AWS_ENDPOINT_URL_ECS when a client is made); returns a function
 * that puts back what was there.
 */
export function setProcessEnv(variables: Record<string, string>): () => void {
  const before = Object.fromEntries(Object.keys(variables).map((name) => [name, process.env[name]]));
  Object.assign(process.env, variables);
  return () => {
    for (const [name, value] of Object.entries(before)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/**
 * `count` distinct AWS-access-key-like tokens, assembled at run time from the
 * public prefix and seeded characters (no secret-shaped literal in the source),
 * spread over files of 20 lines. Each is one aws-access-key-id finding.
 */
export function awsKeyFiles(count: number, seed = 0x7ec0): Array<{ name: string; data: string }> {
  let state = seed >>> 0;
  const next = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state >>> 8;
  };
  const files: Array<{ name: string; data: string }> = [];
  const seen = new Set<string>();
  for (let index = 0; index < count; ) {
    const key = `AKIA${Array.from({ length: 16 }, () => BASE32[next() % BASE32.length]).join("")}`;
    // The analyzer's allowlist skips AWS's documentation keys (…EXAMPLE).
    if (seen.has(key) || key.endsWith("EXAMPLE")) continue;
    seen.add(key);
    const file = Math.floor(index / 20);
    if (!files[file]) files[file] = { name: `src/keys/service-${file}.env`, data: "" };
    files[file].data += `ACCESS_KEY_${index}=${key}\n`;
    index++;
  }
  return files;
}

export const awsKeysArchive = (count: number) => buildZip(awsKeyFiles(count));

/** Submits a small archive as `token`'s user; answers the scan id. */
export async function queueScan(server: TestServer, token: string, files = [{ name: "src/a.ts", data: "export const a = 1;\n" }]) {
  const response = await submitScan(server, token, await buildZip(files));
  if (response.status !== 200) throw new Error(`submitScan: ${JSON.stringify(response.body)}`);
  return response.body.data.submitScan.scan.id as string;
}

/**
 * Scans RUNNING the way a worker makes them: submitted, claimed by a registered
 * test worker, and reported started with the given task ids (one per scan).
 */
export async function runningScansViaApi(server: TestServer, userToken: string, taskIds: string[], workerName = "sweep-worker") {
  const scanIds: string[] = [];
  for (const _ of taskIds) scanIds.push(await queueScan(server, userToken));
  const worker = await registerTestWorker(server, workerName);
  const claimed = new Set<string>();
  while (claimed.size < scanIds.length) {
    const response = await server.gql(CLAIM, { workerId: worker.id, max: 50 }, worker.token);
    if (response.body.errors) throw new Error(JSON.stringify(response.body.errors));
    const batch: { scan: { id: string } }[] = response.body.data.claimScans;
    if (batch.length === 0) throw new Error("claimScans returned nothing: are other scans queued on this server?");
    for (const claim of batch) claimed.add(claim.scan.id);
  }
  for (const [index, scanId] of scanIds.entries()) {
    const response = await server.gql(REPORT_STARTED, { scanId, taskId: taskIds[index] }, worker.token);
    if (response.body.errors) throw new Error(JSON.stringify(response.body.errors));
  }
  return { scanIds, worker };
}

/**
 * Inserts scans in bulk with SQL (one INSERT per 5,000), in `status` with the
 * given task ids, started (and claimed) at `startedAt`: the shape a fleet of
 * stale scans has, without going through uploads. Answers the scan ids.
 */
export async function insertScansInBulk(
  prisma: PrismaClient,
  options: { ownerId: string; taskIds: (string | null)[]; status?: "RUNNING" | "STARTING"; startedAt: Date; attempts?: number; workerId?: string | null },
): Promise<string[]> {
  const workspaceId = await ensureUserRow(prisma, options.ownerId);
  const artifact = await prisma.artifact.create({
    data: { kind: "SOURCE", workspaceId, ownerId: options.ownerId, storageKey: `sources/bulk/${randomUUID()}`, sizeBytes: 100n, sha256: "0".repeat(64) },
  });
  const status = options.status ?? "RUNNING";
  const ids = options.taskIds.map(() => randomUUID());
  // Prisma keeps DateTime columns as UTC timestamps without a zone: an ISO string cast to timestamp is exactly that.
  const at = options.startedAt.toISOString();
  const startedAt = status === "RUNNING" ? at : null;
  for (let index = 0; index < ids.length; index += 5000) {
    const batchIds = ids.slice(index, index + 5000);
    const batchTasks = options.taskIds.slice(index, index + 5000);
    await prisma.$executeRaw`
      INSERT INTO "Scan" (id, status, "workspaceId", "ownerId", "sourceArtifactId", "workerId", "taskId", attempts,
                          "createdAt", "queuedAt", "claimedAt", "startedAt", "updatedAt")
      SELECT d.id, ${status}::"ScanStatus", ${workspaceId}, ${options.ownerId}, ${artifact.id}, ${options.workerId ?? null}, d.task,
             ${options.attempts ?? 1}, ${at}::timestamp, ${at}::timestamp, ${at}::timestamp, ${startedAt}::timestamp, ${at}::timestamp
      FROM unnest(${batchIds}::text[], ${batchTasks}::text[]) AS d(id, task)`;
  }
  return ids;
}

/** Events of these scans, counted by code. */
export async function eventCountsByCode(prisma: PrismaClient, scanIds: string[]): Promise<Record<string, number>> {
  const groups = await prisma.scanEvent.groupBy({ by: ["code"], where: { scanId: { in: scanIds } }, _count: { _all: true } });
  return Object.fromEntries(groups.map((group) => [group.code ?? "(none)", group._count._all]));
}

/**
 * A TCP endpoint that accepts connections and never answers: an ECS whose
 * RunTask hangs, so a worker pointed at it keeps its claims STARTING for as
 * long as the test wants.
 */
export async function startSilentEndpoint(): Promise<{ url: string; connections(): number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => accepted,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The runner launcher a recovering worker holds in these tests: the endpoint's cluster and task definition, no network config. */
export const testEcsLauncherOptions = {
  cluster: "vega",
  taskDefinition: "vega-runner:1",
  containerName: "runner",
  launchType: "FARGATE",
  capacityProviders: [],
  subnets: [],
  securityGroups: [],
  assignPublicIp: false,
} satisfies Partial<EcsLauncherOptions>;
