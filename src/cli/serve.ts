import type { Config } from "../config.ts";
import { createApp, type App } from "../server.ts";
import { parseArgs, rejectUnknownFlags } from "./args.ts";
import { startEmbeddedWorker } from "./worker.ts";

/** Runs until SIGTERM/SIGINT, then closes connections and the database so the process exits. */
async function runUntilSignal(
  app: App,
  startExtra: ((baseUrl: string) => Promise<{ close(): Promise<void> }>) | undefined,
  config: Config,
) {
  const baseUrl = await app.listen(config.port, config.host);
  const extra = await startExtra?.(baseUrl);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  app.deps.log.info("shutting down");
  await extra?.close();
  await app.close();
}

/** `vega serve`: the API alone, for deployments that run workers apart. */
export async function serve(argv: string[], config: Config) {
  rejectUnknownFlags(parseArgs(argv), []);
  const app = await createApp(config);
  await runUntilSignal(app, undefined, config);
}

/** `vega start` (npm start): one machine, the API and an embedded worker; on a signal the worker stops first. */
export async function start(argv: string[], config: Config) {
  rejectUnknownFlags(parseArgs(argv), []);
  const app = await createApp(config);
  await runUntilSignal(app, (baseUrl) => startEmbeddedWorker(config, baseUrl, app.deps.signingKey, app.deps.log), config);
}
