import type { Config } from "../config.ts";
import { createApp, type App } from "../server.ts";
import { parseArgs, rejectUnknownFlags } from "./args.ts";

/** Runs until SIGTERM/SIGINT, then closes connections and the database so the process exits. */
async function runUntilSignal(app: App, extra: { close(): Promise<void> } | undefined, config: Config) {
  await app.listen(config.port, config.host);
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

/** `vega start` (npm start): one machine, the API and (once it exists) an embedded worker. */
export async function start(argv: string[], config: Config) {
  rejectUnknownFlags(parseArgs(argv), []);
  const app = await createApp(config);
  await runUntilSignal(app, undefined, config);
}
