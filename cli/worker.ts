/**
 * `vega worker`: a worker process against VEGA_API_URL with VEGA_WORKER_TOKEN,
 * and the embedded worker that `vega start` runs next to the API.
 */
import { readFileSync } from "node:fs";
import os from "node:os";
import { signToken } from "../api/auth.ts";
import { ConfigError, defaultWorkerName, type Config } from "../shared/config.ts";
import { createLogger, type Logger } from "../shared/logger.ts";
import { Worker, type WorkerSettings } from "../worker/worker.ts";
import type { RegistrationRefusedError } from "../worker/heartbeat.ts";
import { createLauncher } from "../worker/launchers/index.ts";
import { createRecoveryStep } from "../worker/recovery.ts";
import { ScanExecutionLoop } from "../worker/scan-loop.ts";
import { parseCommandLine } from "./args.ts";
import { COMMANDS } from "./commands.ts";
import { untilStopRequested } from "./stop-signal.ts";

const packageVersion = (): string =>
  (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

function workerSettings(config: Config, apiUrl: string, token: string): WorkerSettings {
  return {
    apiUrl,
    token,
    name: config.workerName ?? defaultWorkerName(),
    host: os.hostname(),
    pid: process.pid,
    version: packageVersion(),
    capacity: config.workerCapacity,
    heartbeatIntervalSeconds: config.workerHeartbeatIntervalSeconds,
    shutdownSeconds: config.workerShutdownSeconds,
  };
}

/**
 * A worker with its scan loop: the launcher VEGA_LAUNCHER names, recovery before
 * each claim, claims up to VEGA_WORKER_CAPACITY. Closing stops the worker (drain,
 * deregister), then releases the launcher. Before anything runs, the local
 * launcher removes the work directories that runners killed with an earlier
 * worker left behind.
 */
async function createScanWorker(config: Config, apiUrl: string, token: string, log: Logger) {
  const launcher = createLauncher(config, log.child({ component: "launcher" }));
  await launcher.removeLeftoverWorkDirs?.();
  let instance: Worker | undefined;
  const scanLoop = new ScanExecutionLoop(
    { capacity: config.workerCapacity, pollIntervalSeconds: config.workerPollIntervalSeconds, runnerApiUrl: apiUrl },
    launcher,
    () => instance?.id,
    log.child({ component: "scan-loop" }),
    createRecoveryStep(launcher, log.child({ component: "recovery" })),
  );
  instance = new Worker(workerSettings(config, apiUrl, token), log, scanLoop);
  const worker = instance;
  return {
    worker,
    async close() {
      await worker.stop();
      await launcher.close();
    },
  };
}

export async function worker(argv: string[], config: Config) {
  parseCommandLine(COMMANDS.worker, argv);
  if (!config.workerToken) {
    throw new ConfigError(
      "VEGA_WORKER_TOKEN is not set: a worker needs a bearer token with vega_scope=worker " +
        "(e.g. `vega token --sub worker-1 --scope worker`)",
    );
  }
  const stopRequested = untilStopRequested(config);
  const log = createLogger(config, { service: "vega-worker" });
  const { worker: instance, close } = await createScanWorker(config, config.apiUrl, config.workerToken, log);
  // Not awaited: registration retries until the API answers, and a signal must be able to end that.
  void instance.start();
  const outcome = await Promise.race([stopRequested.then((reason) => ({ reason })), instance.refused.then((error) => ({ error }))]);
  log.info("error" in outcome ? { reason: "registration refused" } : outcome, "worker stopping");
  // A safety net behind the worker's own deadline: the process ends within VEGA_WORKER_SHUTDOWN_SECONDS.
  setTimeout(() => process.exit("error" in outcome ? 1 : 0), config.workerShutdownSeconds * 1000).unref();
  await close();
  if ("error" in outcome) throw outcome.error;
}

export interface EmbeddedWorker {
  /** Resolves if the API refuses the worker for good (see registrationRefusal). */
  refused: Promise<RegistrationRefusedError>;
  close(): Promise<void>;
}

/**
 * The worker `vega start` runs in the API's process: a GraphQL client of the API
 * at the address it listens on, with a worker token minted from the server's key
 * (sub "embedded-worker"), or VEGA_WORKER_TOKEN when the server verifies tokens
 * against a JWKS and cannot mint.
 */
export async function startEmbeddedWorker(
  config: Config,
  apiBaseUrl: string,
  signingKey: Uint8Array | undefined,
  log: Logger,
): Promise<EmbeddedWorker> {
  let token = config.workerToken;
  if (signingKey) {
    token = await signToken(signingKey, { sub: "embedded-worker", scope: "worker", ttlSeconds: 365 * 24 * 3600 });
  }
  if (!token) {
    throw new ConfigError("vega start cannot mint a worker token with VEGA_JWT_JWKS_URL set: set VEGA_WORKER_TOKEN");
  }
  const { worker: instance, close } = await createScanWorker(config, `${apiBaseUrl}/graphql`, token, log.child({ worker: "embedded" }));
  void instance.start();
  return { refused: instance.refused, close };
}
