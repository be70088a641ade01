import pino, { type Logger } from "pino";
import type { Config } from "./config.ts";

export type { Logger } from "pino";

/** Structured JSON logs on stderr, so that CLI commands keep stdout for their one-line result. */
export function createLogger(config: Pick<Config, "logLevel">, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level: config.logLevel, base: { pid: process.pid, ...bindings } }, pino.destination(2));
}
