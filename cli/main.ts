/**
 * `vega <command>`: the one entry point of every Vega process. Settings are
 * read here, once; an invalid one stops the process before anything starts.
 */
import { loadConfig } from "../shared/config.ts";
import { UsageError } from "./args.ts";

const usage = `Usage: vega <command>

  serve                       run the API server alone (HTTP, WebSocket and SSE on VEGA_PORT)
  start                       one machine: the API plus an embedded worker (what \`npm start\` runs)
  worker                      run a scan worker against VEGA_API_URL
  runner                      run one scan (VEGA_SCAN_ID), as launched by a worker
  token --sub ID [--groups a,b] [--scope worker|runner] [--scan-id ID] [--ttl SECONDS]
                              print a bearer token signed with the server's key
  maintenance migrate         apply pending database migrations
  maintenance recover-stale [--dry-run]
                              stale-scan recovery (running scans whose task is gone, orphaned claims)
  maintenance cleanup [--dry-run]
                              one cleanup run (artifacts, orphaned files, upload temporaries, sessions, workers)
  maintenance prune-artifacts [--dry-run]
                              the artifact job alone (artifacts of scans finished past the retention)
  maintenance run-remote <job> [args] --env NAME [--cluster C] [--task-definition TD] [--timeout SECONDS]
                              run a maintenance job as the vega-maintenance-NAME ECS task; exit with its exit code

Settings come from VEGA_* environment variables; see the README.
On the embedded database, maintenance jobs run through the server that holds the data directory, if one does.`;

type Command = (argv: string[], config: ReturnType<typeof loadConfig>) => Promise<number | void>;

const commands: Record<string, () => Promise<Command>> = {
  serve: async () => (await import("./serve.ts")).serve,
  start: async () => (await import("./serve.ts")).start,
  worker: async () => (await import("./worker.ts")).worker,
  token: async () => (await import("./token.ts")).token,
  runner: async () => (await import("./runner.ts")).runner,
  maintenance: async () => (await import("./maintenance.ts")).maintenance,
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    console.log(usage);
    return name ? 0 : 2;
  }
  const load = commands[name];
  if (!load) {
    console.error(`vega: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  const config = loadConfig(process.env);
  const command = await load();
  return (await command(rest, config)) ?? 0;
}

/**
 * Failures that say everything in their message (no stack trace), by name: the
 * modules that define them are loaded only by the commands that need them.
 */
const expectedFailures = new Set([
  "ConfigError",
  "UsageError",
  "MigrationError",
  "DataDirHeldError",
  "DatabaseUnreachableError",
  "ListenError",
  "RegistrationRefusedError",
]);

// PGlite compiles its WebAssembly asynchronously, which holds no event-loop
// handle: without one of our own, Node can find the loop empty mid-start and
// exit with code 13 (unsettled top-level await). Cleared once the command ends.
const keepAlive = setInterval(() => {}, 1 << 30);
try {
  const code = await main(process.argv.slice(2));
  if (code !== 0) process.exitCode = code;
} catch (error) {
  if (error instanceof Error && expectedFailures.has(error.name)) {
    console.error(`vega: ${error.message}`);
    process.exitCode = error instanceof UsageError ? 2 : 1;
  } else {
    console.error("vega: failed:", error);
    process.exitCode = 1;
  }
  // What failed has closed what it opened; should a handle still hold the loop, the process ends anyway.
  setTimeout(() => process.exit(), 5_000).unref();
} finally {
  clearInterval(keepAlive);
}
