/**
 * The runner's heartbeat: every VEGA_RUNNER_HEARTBEAT_SECONDS it reports its
 * progress (phase, files and bytes done and, once known, in total, findings so
 * far) with reportScanProgress, and at once when the phase changes. Recovery
 * measures VEGA_SCAN_HEARTBEAT_TTL_SECONDS from these reports: a runner that
 * stops sending them while its task lives is stopped as hung.
 *
 * - A failed report (network, 5xx) is not retried: the next beat carries newer
 *   counts anyway.
 * - CONFLICT means the scan ended on the API's side (cancelled, recovered) or
 *   was claimed again: `onScanEnded` tells the runner to stop its work.
 * - One report in flight at a time; a beat due while one is in flight is skipped.
 */
import type { Logger } from "../../shared/logger.ts";
import { ApiRequestError } from "../api-client.ts";
import type { ScanPhase, ScanProgressInput } from "../generated/graphql.ts";

export interface ProgressCounts {
  filesDone?: number | null;
  filesTotal?: number | null;
  bytesDone?: number | null;
  bytesTotal?: number | null;
}

export class RunnerHeartbeat {
  private phase: ScanPhase = "DOWNLOADING";
  private counts: ProgressCounts = {};
  private findings = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly send: (input: ScanProgressInput) => Promise<unknown>,
    private readonly intervalSeconds: number,
    private readonly log: Logger,
    private readonly onScanEnded: (reason: string) => void,
  ) {}

  /** Enters `phase` with its counts (those left out are unknown) and reports at once; resolves once reported (or failed). */
  async enter(phase: ScanPhase, counts: ProgressCounts = {}): Promise<void> {
    this.phase = phase;
    this.counts = { filesDone: null, filesTotal: null, bytesDone: null, bytesTotal: null, ...counts };
    await this.inFlight;
    await this.beat();
  }

  /** Updates counts of the current phase; the next beat reports them. */
  update(counts: ProgressCounts): void {
    Object.assign(this.counts, counts);
  }

  foundFindings(count: number): void {
    this.findings += count;
  }

  /** Stops beating; resolves once the report in flight, if any, is answered. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.inFlight;
  }

  private beat(): Promise<void> {
    clearTimeout(this.timer);
    if (this.stopped) return Promise.resolve();
    if (this.inFlight) return this.inFlight;
    const report = this.snapshot();
    this.inFlight = this.send(report)
      .then(
        () => undefined,
        (error: unknown) => {
          if (error instanceof ApiRequestError && error.hasCode("CONFLICT")) {
            this.stopped = true;
            this.onScanEnded(error.message);
            return;
          }
          this.log.warn({ err: error, phase: report.phase }, "progress report failed; the next beat tries again");
        },
      )
      .finally(() => {
        this.inFlight = undefined;
        if (!this.stopped) this.timer = setTimeout(() => void this.beat(), this.intervalSeconds * 1000);
      });
    return this.inFlight;
  }

  private snapshot(): ScanProgressInput {
    const integer = (value: number | null | undefined) => (value === null || value === undefined ? null : Math.floor(value));
    return {
      phase: this.phase,
      filesDone: integer(this.counts.filesDone),
      filesTotal: integer(this.counts.filesTotal),
      bytesDone: this.counts.bytesDone == null ? null : String(integer(this.counts.bytesDone)),
      bytesTotal: this.counts.bytesTotal == null ? null : String(integer(this.counts.bytesTotal)),
      findings: this.findings,
    };
  }
}
