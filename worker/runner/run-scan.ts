/**
 * The runner: runs one scan (VEGA_SCAN_ID) with a token bound to it and to its
 * claim. It downloads the source archive (from S3 through a presigned URL the
 * API hands it, or from the API itself with the local store), extracts it into a
 * temporary directory with the archive limits enforced again on the actual
 * bytes, runs the analyzers, sends findings as they are found (findings-stream.ts)
 * and completes the scan; all along it heartbeats with its progress
 * (heartbeat.ts). When the API answers CONFLICT (the scan was cancelled,
 * recovered or claimed again) it stops where it is. The temporary directory is
 * removed whatever happens, a SIGTERM (StopTask, cancellation) included. It
 * speaks GraphQL and HTTP only: no database.
 */
import { createHash } from "node:crypto";
import { createWriteStream, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { ArchiveLimits } from "../../shared/archive-rules.ts";
import type { Logger } from "../../shared/logger.ts";
import { isClaimed } from "../../shared/scan-status.ts";
import { ApiRequestError, createApiClient, type ApiClient } from "../api-client.ts";
import {
  AddFindingsDocument,
  AppendScanEventsDocument,
  CompleteScanDocument,
  ReportScanProgressDocument,
  RunnerScanDocument,
  SourceDownloadDocument,
  type FindingInput,
  type ScanEventInput,
} from "../generated/graphql.ts";
import { scanTreeProgressively, type SecretFinding, type SecretScanSummary } from "./analyzers/secrets/analyzer.ts";
import { describeSkips } from "./analyzers/skipped.ts";
import { extractArchive } from "./extract.ts";
import { FindingsStream } from "./findings-stream.ts";
import { RunnerHeartbeat } from "./heartbeat.ts";

export interface RunnerSettings {
  apiUrl: string;
  scanId: string;
  token: string;
  limits: ArchiveLimits;
  /** Findings per addFindings call. */
  findingsBatch: number;
  /** Between progress reports (VEGA_RUNNER_HEARTBEAT_SECONDS). */
  heartbeatSeconds: number;
  /** A work directory made by the launcher (which removes it if the runner cannot); default: a new one under TMPDIR. */
  workDir?: string;
}

const REPORT_ATTEMPTS = 5;
/** A finding waits at most this long to be sent: a crash loses only what was found in the last couple of seconds. */
const FINDINGS_MAX_DELAY_MS = 2_000;

/** The scan ended on the API's side (cancelled, recovered): nothing more to report. */
class ScanNoLongerActive extends Error {}

export type RunnerOutcome = "SUCCEEDED" | "FAILED" | "ABANDONED";

/** Retries a report through network errors and 5xx with backoff; a CONFLICT means the scan has ended. */
async function report<T>(log: Logger, what: string, send: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (error) {
      if (error instanceof ApiRequestError && error.hasCode("CONFLICT")) throw new ScanNoLongerActive(error.message);
      const retryable = error instanceof ApiRequestError && (error.codes.length === 0 || (error.status ?? 0) >= 500);
      if (!retryable || attempt === REPORT_ATTEMPTS) throw error;
      const delayMs = Math.min(8_000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
      log.warn({ err: error, attempt, delayMs }, `${what} failed; retrying`);
      await sleep(delayMs);
    }
  }
}

/**
 * Fetches the archive from where the API says (a presigned S3 URL, or its own
 * GET /v1/artifacts/:id with the token), hashing it on the way to disk. The
 * token goes only to the API: a presigned URL carries its own authorization.
 */
async function downloadSource(
  settings: RunnerSettings,
  download: { url: string; withToken: boolean },
  source: { id: string; sha256: string },
  target: string,
  signal: AbortSignal,
  onProgress: (bytes: number) => void,
) {
  const headers: Record<string, string> = download.withToken ? { authorization: `Bearer ${settings.token}` } : {};
  const response = await fetch(new URL(download.url, settings.apiUrl), { headers, signal });
  // 409: the scan ended, or was claimed again, before this runner could fetch its archive.
  if (response.status === 409) throw new ScanNoLongerActive("the API refused the archive download (CONFLICT)");
  // The body of a failed S3 request (XML naming the bucket and key) is not repeated: the status says enough.
  if (!response.ok || !response.body) throw new Error(`downloading the source archive answered HTTP ${response.status}`);
  const hash = createHash("sha256");
  let bytes = 0;
  await pipeline(
    Readable.fromWeb(response.body as import("node:stream/web").ReadableStream),
    new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        bytes += chunk.length;
        onProgress(bytes);
        callback(null, chunk);
      },
    }),
    createWriteStream(target, { flags: "wx" }),
    { signal },
  );
  const digest = hash.digest("hex");
  if (digest !== source.sha256) {
    throw Object.assign(new Error(`source archive checksum mismatch: expected ${source.sha256}, got ${digest}`), { code: "ARTIFACT_CORRUPT" });
  }
  return bytes;
}

const toFindingInput = (finding: SecretFinding): FindingInput => ({
  ruleId: finding.ruleId,
  severity: finding.severity,
  path: finding.path,
  line: finding.line,
  column: finding.column,
  endLine: finding.endLine,
  endColumn: finding.endColumn,
  message: finding.message,
  snippet: finding.snippet,
  fingerprint: finding.fingerprint,
});

/** The error code a failed scan reports: the archive's own code, or RUNNER_ERROR. */
function failureCode(error: unknown): string {
  const extensions = (error as { extensions?: { code?: unknown } }).extensions;
  if (typeof extensions?.code === "string") return extensions.code;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && /^[A-Z_]+$/.test(code) ? code : "RUNNER_ERROR";
}

export async function runScan(settings: RunnerSettings, log: Logger): Promise<RunnerOutcome> {
  const api: ApiClient = createApiClient({ url: settings.apiUrl, token: () => settings.token, timeoutMs: 30_000 });
  const scanId = settings.scanId;
  const workDir = settings.workDir ?? (await mkdtemp(path.join(os.tmpdir(), `vega-runner-${scanId.slice(0, 8)}-`)));
  // StopTask and cancellation send SIGTERM: leave no extracted source behind.
  const onSignal = (signal: NodeJS.Signals) => {
    log.warn({ signal }, "runner stopped by signal; removing its work directory");
    rmSync(workDir, { recursive: true, force: true });
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  const events = (items: ScanEventInput[]) =>
    report(log, "appendScanEvents", () => api.request(AppendScanEventsDocument, { scanId, events: items }));
  // Aborted when a heartbeat hears that the scan ended on the API's side: the work stops at its next step.
  const ended = new AbortController();
  const throwIfEnded = () => {
    if (ended.signal.aborted) throw ended.signal.reason;
  };
  const heartbeat = new RunnerHeartbeat(
    (input) => api.request(ReportScanProgressDocument, { scanId, input }),
    settings.heartbeatSeconds,
    log,
    (reason) => ended.abort(new ScanNoLongerActive(reason)),
  );
  const findings = new FindingsStream<FindingInput>({
    send: async (batch) => (await report(log, "addFindings", () => api.request(AddFindingsDocument, { scanId, findings: batch }))).addFindings.added,
    batchSize: settings.findingsBatch,
    maxDelayMs: FINDINGS_MAX_DELAY_MS,
  });

  try {
    const { scan } = await report(log, "reading the scan", () => api.request(RunnerScanDocument, { id: scanId }));
    if (!isClaimed(scan.status)) {
      log.info({ status: scan.status }, "the scan is no longer active; nothing to run");
      return "ABANDONED";
    }
    try {
      // The first report is also the one that moves a STARTING scan to RUNNING.
      await heartbeat.enter("DOWNLOADING", { bytesDone: 0, bytesTotal: Number(scan.source.sizeBytes) });
      throwIfEnded();
      const archivePath = path.join(workDir, "source.zip");
      const { sourceDownload } = await report(log, "asking where to download the archive", () => api.request(SourceDownloadDocument, { scanId }));
      const downloaded = await downloadSource(settings, sourceDownload, scan.source, archivePath, ended.signal, (bytes) =>
        heartbeat.update({ bytesDone: bytes }),
      );
      await heartbeat.enter("EXTRACTING", {
        filesDone: 0,
        filesTotal: scan.source.entryCount ?? null,
        bytesDone: 0,
        bytesTotal: scan.source.uncompressedBytes == null ? null : Number(scan.source.uncompressedBytes),
      });
      throwIfEnded();
      const extraction = await extractArchive(archivePath, path.join(workDir, "source"), settings.limits, (done) =>
        heartbeat.update({ filesDone: done.entriesWritten, bytesDone: done.bytesWritten }),
      );
      await rm(archivePath, { force: true });
      await events([
        {
          kind: "PROGRESS",
          code: "EXTRACTED",
          message: `Extracted ${extraction.entryCount} entries (${extraction.bytesWritten} bytes)`,
          data: { downloadedBytes: downloaded, ...extraction },
        },
      ]);

      await heartbeat.enter("ANALYZING", { filesDone: 0, bytesDone: 0 });
      const { summary, filesListed } = await analyze(path.join(workDir, "source"), heartbeat, findings, throwIfEnded);
      await heartbeat.enter("REPORTING", { filesDone: filesListed, filesTotal: filesListed, bytesDone: summary.bytesScanned });
      throwIfEnded();
      const added = await findings.close();
      log.info(
        { filesScanned: summary.filesScanned, filesSkipped: summary.filesSkipped, skipped: summary.skipped, bytesScanned: summary.bytesScanned, findings: added },
        `analysis done: ${summary.filesScanned} files scanned, not read: ${describeSkips(summary.skipped)}`,
      );
      await events([
        {
          kind: "PROGRESS",
          code: "ANALYZED",
          message: `Secrets scan: ${summary.filesScanned} files scanned, ${summary.filesSkipped} skipped, ${added} findings; not read: ${describeSkips(summary.skipped)}`,
          data: {
            filesScanned: summary.filesScanned,
            filesSkipped: summary.filesSkipped,
            skipped: summary.skipped,
            bytesScanned: summary.bytesScanned,
            findings: added,
          },
        },
      ]);
      await heartbeat.stop();
      await report(log, "completeScan", () => api.request(CompleteScanDocument, { scanId, input: { status: "SUCCEEDED" } }));
      return "SUCCEEDED";
    } catch (error) {
      if (ended.signal.aborted) throw ended.signal.reason;
      if (error instanceof ScanNoLongerActive) throw error;
      const errorCode = failureCode(error);
      const errorMessage = error instanceof Error ? error.message : String(error);
      log.error({ err: error, errorCode }, "scan failed");
      // What was found before the failure stays with the failed scan.
      await findings.close().catch((sendError: unknown) => log.warn({ err: sendError }, "could not send the last findings"));
      await heartbeat.stop();
      await report(log, "completeScan", () =>
        api.request(CompleteScanDocument, { scanId, input: { status: "FAILED", errorCode, errorMessage } }),
      );
      return "FAILED";
    }
  } catch (error) {
    if (error instanceof ScanNoLongerActive) {
      log.info({ reason: error.message }, "the scan ended on the API's side (cancelled, recovered or claimed again); stopping");
      return "ABANDONED";
    }
    throw error;
  } finally {
    findings.abandon();
    await heartbeat.stop();
    // Handlers stay until the directory is gone: a SIGTERM landing now still removes it (twice is harmless).
    await rm(workDir, { recursive: true, force: true });
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}

/** Runs the secrets analyzer over the tree, handing its findings to the stream as they are found. */
async function analyze(
  root: string,
  heartbeat: RunnerHeartbeat,
  findings: FindingsStream<FindingInput>,
  throwIfEnded: () => void,
): Promise<{ summary: SecretScanSummary; filesListed: number }> {
  const scan = scanTreeProgressively(root);
  let filesListed = 0;
  try {
    for (;;) {
      const step = await scan.next();
      if (step.done) return { summary: step.value, filesListed };
      filesListed = step.value.filesTotal;
      throwIfEnded();
      heartbeat.update({ filesDone: step.value.filesDone, filesTotal: step.value.filesTotal, bytesDone: step.value.bytesScanned });
      heartbeat.foundFindings(step.value.findings.length);
      await findings.add(step.value.findings.map(toFindingInput));
    }
  } finally {
    // Leaving early (the scan ended, a report failed) stops the analyzer and its threads.
    await scan.return(undefined as never);
  }
}
