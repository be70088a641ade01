import type { Config } from "../shared/config.ts";
import { createLogger } from "../shared/logger.ts";
import { archiveLimitsOf } from "../shared/archive-rules.ts";
import { runScan } from "../worker/runner/run-scan.ts";
import { parseCommandLine, UsageError } from "./args.ts";
import { COMMANDS } from "./commands.ts";

/**
 * `vega runner`: runs the scan named by VEGA_SCAN_ID and exits. Exit 0 when the
 * scan's outcome was reported (succeeded, failed, or ended elsewhere); non-zero
 * when it could not be, so the worker's task watch sees a crashed runner.
 */
export async function runner(argv: string[], config: Config) {
  parseCommandLine(COMMANDS.runner, argv);
  if (!config.scanId || !config.runnerToken) throw new UsageError("vega runner needs VEGA_SCAN_ID and VEGA_RUNNER_TOKEN (set by the launcher)");
  const log = createLogger(config, { service: "vega-runner", scanId: config.scanId });
  const outcome = await runScan(
    {
      apiUrl: config.apiUrl,
      scanId: config.scanId,
      token: config.runnerToken,
      limits: archiveLimitsOf(config),
      findingsBatch: Math.min(config.runnerFindingsBatch, 1000),
      heartbeatSeconds: config.runnerHeartbeatSeconds,
      workDir: config.runnerWorkDir,
    },
    log,
  );
  log.info({ outcome }, "runner finished");
  return 0;
}
