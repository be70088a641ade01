/** When a long-running command (`vega start`, `serve`, `worker`) is asked to stop. */
import type { Config } from "../shared/config.ts";

export type StopReason = "SIGTERM" | "SIGINT" | "parent exited";

const PARENT_POLL_MS = 1000;

/**
 * Resolves on the first SIGTERM or SIGINT, or, for a command npm started, once
 * its parent is gone: npm's `sh -c` may die of a signal meant for the whole
 * command and leave Vega running, still holding its port and data directory.
 */
export function untilStopRequested(config: Pick<Config, "launchedByNpm">): Promise<StopReason> {
  return new Promise((resolve) => {
    const parent = process.ppid;
    const watch = config.launchedByNpm
      ? setInterval(() => {
          // process.ppid is read afresh each time: an orphan is adopted by init or a subreaper.
          if (process.ppid !== parent) stop("parent exited");
        }, PARENT_POLL_MS).unref()
      : undefined;
    const onSigterm = () => stop("SIGTERM");
    const onSigint = () => stop("SIGINT");
    function stop(reason: StopReason) {
      clearInterval(watch);
      process.off("SIGTERM", onSigterm).off("SIGINT", onSigint);
      resolve(reason);
    }
    process.once("SIGTERM", onSigterm).once("SIGINT", onSigint);
  });
}
