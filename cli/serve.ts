import type { Config } from "../shared/config.ts";
import { createApp, type App } from "../api/server.ts";
import { createLauncher } from "../worker/launchers/index.ts";
import { parseCommandLine } from "./args.ts";
import { COMMANDS } from "./commands.ts";
import { untilStopRequested, type StopReason } from "./stop-signal.ts";
import { startEmbeddedWorker, type EmbeddedWorker } from "./worker.ts";

/**
 * Serves until SIGTERM/SIGINT (or npm's parent going away), then stops the
 * embedded worker, closes connections and the database so the process exits 0.
 * A port that cannot be had, or an embedded worker the API refuses, closes
 * everything at once and fails the command.
 */
async function runUntilStopped(
  app: App,
  startWorker: ((baseUrl: string) => Promise<EmbeddedWorker>) | undefined,
  config: Config,
  stopRequested: Promise<StopReason>,
) {
  let worker: EmbeddedWorker | undefined;
  try {
    const baseUrl = await app.listen(config.port, config.host);
    // The URL `vega maintenance` uses to run jobs through this server while it holds the data directory.
    await app.deps.database.dataDirLock?.announce(baseUrl);
    worker = await startWorker?.(baseUrl);
  } catch (error) {
    await app.close();
    throw error;
  }
  const outcome = await Promise.race([stopRequested.then((reason) => ({ reason })), ...(worker ? [worker.refused.then((error) => ({ error }))] : [])]);
  app.deps.log.info("error" in outcome ? { reason: "the embedded worker was refused" } : outcome, "shutting down");
  await worker?.close();
  await app.close();
  if ("error" in outcome) throw outcome.error;
}

/** `vega serve`: the API alone, for deployments that run workers apart. */
export async function serve(argv: string[], config: Config) {
  parseCommandLine(COMMANDS.serve, argv);
  // Listening for a stop first: a signal during the start (PGlite opening, migrations) stops the server once started.
  const stopRequested = untilStopRequested(config);
  const app = await createApp(config, { purpose: "vega serve", openLauncher: (log) => createLauncher(config, log) });
  await runUntilStopped(app, undefined, config, stopRequested);
}

/** `vega start` (npm start): one machine, the API and an embedded worker; on a signal the worker stops first. */
export async function start(argv: string[], config: Config) {
  parseCommandLine(COMMANDS.start, argv);
  const stopRequested = untilStopRequested(config);
  const app = await createApp(config, { purpose: "vega start", openLauncher: (log) => createLauncher(config, log) });
  await runUntilStopped(app, (baseUrl) => startEmbeddedWorker(config, baseUrl, app.deps.signingKey, app.deps.log), config, stopRequested);
}
