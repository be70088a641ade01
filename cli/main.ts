/**
 * `vega <command>`: the one entry point of every Vega process. Settings are
 * read here, once; an invalid one stops the process before anything starts.
 */
// Every @aws-sdk client warns once per process that Node < 22 will lose support
// in 2027 (the README says which Node a deployment should run): on a normal run
// of any AWS-using command that warning is noise on stderr. An operator who set
// the variable either way keeps their choice. The commands, and the SDK with
// them, are imported dynamically below, after this line has run.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
import { loadConfig } from "../shared/config.ts";
import { asksForHelp, helpOf, HelpRequested, UsageError } from "./args.ts";
import { COMMANDS, overview, type CommandName } from "./commands.ts";

type Command = (argv: string[], config: ReturnType<typeof loadConfig>) => Promise<number | void>;

const commands: Record<string, () => Promise<Command>> = {
  serve: async () => (await import("./serve.ts")).serve,
  start: async () => (await import("./serve.ts")).start,
  worker: async () => (await import("./worker.ts")).worker,
  token: async () => (await import("./token.ts")).token,
  dashboard: async () => (await import("./dashboard.ts")).dashboard,
  runner: async () => (await import("./runner.ts")).runner,
  maintenance: async () => (await import("./maintenance.ts")).maintenance,
  scan: async () => (await import("./scan.ts")).scan,
  workers: async () => (await import("./scan.ts")).workers,
};

/** The most specific description the leading words name: "maintenance cleanup" before "maintenance". */
function specOf(argv: string[]) {
  const two = `${argv[0]} ${argv[1]}` as CommandName;
  return COMMANDS[two] ?? COMMANDS[argv[0] as CommandName];
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    if (name) console.log(overview());
    else console.error(overview());
    return name ? 0 : 2;
  }
  const load = commands[name];
  if (!load) {
    console.error(`vega: unknown command "${name}"\n\n${overview()}`);
    return 2;
  }
  // Help needs no settings: it is printed even where they are not valid.
  if (asksForHelp(rest)) {
    console.log(helpOf(specOf(argv)));
    return 0;
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
  if (error instanceof HelpRequested) {
    console.log(error.text);
  } else if (error instanceof Error && expectedFailures.has(error.name)) {
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
