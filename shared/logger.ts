import pino, { type Logger } from "pino";
import pretty from "pino-pretty";
import type { Config } from "./config.ts";

export type { Logger } from "pino";

/**
 * Logs on stderr, so that CLI commands keep stdout for their result: readable
 * lines (pino-pretty: local time, level, message, then the fields) when stderr
 * is a terminal or VEGA_LOG_FORMAT=pretty, one JSON record a line otherwise
 * (what log collectors and the local launcher's relay read).
 */
export function createLogger(config: Pick<Config, "logLevel"> & Partial<Pick<Config, "logFormat">>, bindings: Record<string, unknown> = {}): Logger {
  const format = config.logFormat ?? "auto";
  const options = { level: config.logLevel, base: { pid: process.pid, ...bindings } };
  if (format === "pretty" || (format === "auto" && process.stderr.isTTY)) {
    return pino(
      options,
      pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY === true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" }),
    );
  }
  return pino(options, pino.destination(2));
}

/** What the relay needs of a logger: pino's, or a launcher's narrower one. */
export interface RelayLogger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
  debug?(details: object, message: string): void;
  bindings?(): Record<string, unknown>;
}
/** Fields of a child's record that the parent's own record has (its time, its host) or that become the level and message. */
const RECORD_FRAME = new Set(["level", "time", "msg", "hostname", "v"]);

/**
 * One line a child process (a runner) wrote on stderr, logged as a record of
 * `log`: a pino JSON record keeps its level, message and fields (the child's
 * pid as `childPid`; a field the parent's bindings already hold is kept only
 * when it differs, as `child.<name>`), so that it is one record and not an
 * escaped string; any other line is logged as its text.
 */
export function relayChildLine(log: RelayLogger, line: string, bindings: Record<string, unknown>) {
  const record = parseRecord(line);
  if (!record) {
    log.info(bindings, line);
    return;
  }
  const taken = { ...log.bindings?.(), ...bindings };
  const fields: Record<string, unknown> = { ...bindings };
  for (const [name, value] of Object.entries(record)) {
    if (RECORD_FRAME.has(name)) continue;
    if (name === "pid") fields.childPid = value;
    else if (!(name in taken)) fields[name] = value;
    else if (JSON.stringify(taken[name]) !== JSON.stringify(value)) fields[`child.${name}`] = value;
  }
  const message = typeof record.msg === "string" ? record.msg : "";
  // pino's levels: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
  const level = record.level as number;
  if (level >= 50) log.error(fields, message);
  else if (level >= 40) log.warn(fields, message);
  else if (level >= 30 || !log.debug) log.info(fields, message);
  else log.debug(fields, message);
}

function parseRecord(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const value = JSON.parse(line) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value) && typeof (value as { level?: unknown }).level === "number") {
      return value as Record<string, unknown>;
    }
  } catch {
    // not JSON: logged as text
  }
  return undefined;
}
