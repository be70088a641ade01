/**
 * Command lines, parsed by node:util's parseArgs (strict: an unknown flag, a
 * string flag without its value, a value given to a boolean flag or a word
 * nobody asked for is a usage error, exit status 2). Every command is described
 * once, as a CommandSpec: the parser reads its flags from it and `--help`
 * prints it, so the help cannot leave a flag out.
 */
import { parseArgs as parseNodeArgs } from "node:util";

export interface FlagSpec {
  type: "string" | "boolean";
  /** The placeholder the help shows for a string flag's value (`--label L`). */
  value?: string;
  description: string;
}

export interface CommandSpec {
  /** The words after `vega`: "scan submit". */
  name: string;
  /** What follows the name in the usage line: "PATH.zip [--label L] [--wait]". */
  synopsis: string;
  summary: string;
  flags: Record<string, FlagSpec>;
  /** Positional arguments, by name, required first; `rest` takes any number more. */
  positionals?: { required?: string[]; optional?: string[]; rest?: boolean };
  /** More lines under the flags: settings read, exit statuses. */
  notes?: string[];
}

export class UsageError extends Error {
  override name = "UsageError";
}

/** `--help` was asked for: main prints the text on stdout and exits 0. */
export class HelpRequested extends Error {
  override name = "HelpRequested";
  constructor(readonly text: string) {
    super("help requested");
  }
}

type FlagValues<Flags extends Record<string, FlagSpec>> = {
  [Name in keyof Flags]?: Flags[Name]["type"] extends "boolean" ? boolean : string;
};

export interface ParsedCommandLine<Flags extends Record<string, FlagSpec>> {
  flags: FlagValues<Flags>;
  positionals: string[];
}

export function helpOf(spec: CommandSpec): string {
  const rows = Object.entries(spec.flags).map(([name, flag]) => [`--${name}${flag.type === "string" ? ` ${flag.value ?? "VALUE"}` : ""}`, flag.description]);
  rows.push(["-h, --help", "show this help"]);
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  return [
    `Usage: vega ${spec.name}${spec.synopsis ? ` ${spec.synopsis}` : ""}`,
    "",
    spec.summary,
    "",
    "Flags:",
    ...rows.map(([left, right]) => `  ${left.padEnd(width)}${right}`),
    ...(spec.notes?.length ? ["", ...spec.notes] : []),
  ].join("\n");
}

/** Whether the words hold `--help` or `-h` before a `--` terminator. */
export function asksForHelp(argv: string[]): boolean {
  for (const word of argv) {
    if (word === "--") return false;
    if (word === "--help" || word === "-h") return true;
  }
  return false;
}

export function parseCommandLine<Flags extends Record<string, FlagSpec>>(
  spec: CommandSpec & { flags: Flags },
  argv: string[],
): ParsedCommandLine<Flags> {
  if (asksForHelp(argv)) throw new HelpRequested(helpOf(spec));
  const options = Object.fromEntries(Object.entries(spec.flags).map(([name, flag]) => [name, { type: flag.type }]));
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseNodeArgs({ args: argv, options, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (error) {
    throw new UsageError(`${parseErrorMessage(error)} (see vega ${spec.name} --help)`);
  }
  const required = spec.positionals?.required ?? [];
  const optional = spec.positionals?.optional ?? [];
  if (parsed.positionals.length < required.length) {
    throw new UsageError(`${spec.name} needs ${required.slice(parsed.positionals.length).join(" ")} (see vega ${spec.name} --help)`);
  }
  if (!spec.positionals?.rest && parsed.positionals.length > required.length + optional.length) {
    const extra = parsed.positionals.slice(required.length + optional.length);
    throw new UsageError(`${spec.name} takes no argument ${JSON.stringify(extra[0])} (see vega ${spec.name} --help)`);
  }
  for (const [name, value] of Object.entries(parsed.values)) {
    if (value === "") throw new UsageError(`--${name} needs a value (see vega ${spec.name} --help)`);
  }
  return { flags: parsed.values as FlagValues<Flags>, positionals: parsed.positionals };
}

/** parseArgs' messages, without Node's advice to use `--` (these commands take no word that starts with a dash). */
function parseErrorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\. To specify a positional argument.*$/s, "").replace(/\.$/, "");
}
