/**
 * `vega maintenance <job>`: one-shot jobs that print one line of JSON on stdout,
 * log on stderr, and exit 0 on success, non-zero with the reason otherwise.
 * In production this is the vega-maintenance ECS task with its command overridden.
 */
import type { Config } from "../config.ts";
import { openDatabase } from "../db/client.ts";
import { migrate } from "../db/migrate.ts";
import { createLogger } from "../logger.ts";
import { parseArgs, rejectUnknownFlags, UsageError } from "./args.ts";

type Job = (argv: string[], config: Config) => Promise<Record<string, unknown>>;

const jobs: Record<string, Job> = {
  async migrate(argv, config) {
    rejectUnknownFlags(parseArgs(argv), []);
    const log = createLogger(config, { service: "vega-maintenance", job: "migrate" });
    const database = await openDatabase(config);
    try {
      const result = await migrate(database.sql, { log: (message) => log.info(message) });
      return { job: "migrate", database: database.description, ...result };
    } finally {
      await database.close();
    }
  },
};

export async function maintenance(argv: string[], config: Config) {
  const [name, ...rest] = argv;
  const job = name ? jobs[name] : undefined;
  if (!job) throw new UsageError(`maintenance needs a job: ${Object.keys(jobs).join(", ")}`);
  const started = Date.now();
  try {
    const summary = await job(rest, config);
    console.log(JSON.stringify({ ok: true, ...summary, durationMs: Date.now() - started }));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    console.log(JSON.stringify({ ok: false, job: name, error: reason, durationMs: Date.now() - started }));
    console.error(`vega maintenance ${name}: ${reason}`);
    return 1;
  }
}
