/**
 * GET /metrics after one scan succeeded (the real runner), one failed and one
 * submission was refused: the exposition parses with a real parser, the
 * counters moved, the histograms have observations, and the gauges are the
 * database's numbers. Who may scrape: VEGA_METRICS_TOKEN or an operator.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMPLETE, CLAIM, REPORT_STARTED, registerTestWorker, runScanWithRunner } from "../support/execution.ts";
import { histogramSeries, parseExposition, promtoolCheckMetrics, promtoolPath, valueOf, type MetricFamily } from "../support/prometheus.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { buildNotAZip, buildZip } from "../support/zips.ts";

const METRICS_TOKEN = "metrics-scrape-credential-0123456789";

let server: TestServer;
let alice: string;
let operator: string;

beforeAll(async () => {
  server = await startTestServer({ VEGA_METRICS_TOKEN: METRICS_TOKEN, VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "600" });
  alice = await server.token("alice");
  operator = await server.token("ops-olga", { groups: ["vega-ops"] });
});
afterAll(() => server?.close());

async function scrape(token: string | null = METRICS_TOKEN) {
  const response = await fetch(`${server.url}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: response.status, contentType: response.headers.get("content-type"), text: await response.text() };
}

async function submit(archive: Buffer, label: string) {
  const response = await submitScan(server, alice, archive, { label });
  return response;
}

describe("GET /metrics after a success, a failure and a refusal", () => {
  let families: Map<string, MetricFamily>;
  let exposition: string;
  let uploadedBytes = 0;

  beforeAll(async () => {
    const good = await buildZip([{ name: "README.md", data: "# hello\n" }]);
    const succeeding = await submit(good, "succeeds");
    expect(succeeding.status, JSON.stringify(succeeding.body)).toBe(200);
    uploadedBytes += good.length;
    const succeedingId = succeeding.body.data.submitScan.scan.id;
    const run = await runScanWithRunner(server, succeedingId);
    expect(run.code, run.stderr).toBe(0);

    const failing = await submit(good, "fails");
    uploadedBytes += good.length;
    const failingId = failing.body.data.submitScan.scan.id;
    const worker = await registerTestWorker(server, "metrics-worker");
    const [claim] = (await server.gql(CLAIM, { workerId: worker.id, max: 1 }, worker.token)).body.data.claimScans;
    expect(claim.scan.id).toBe(failingId);
    await server.gql(REPORT_STARTED, { scanId: failingId, taskId: "local:2" }, worker.token);
    const completed = await server.gql(
      COMPLETE,
      { scanId: failingId, input: { status: "FAILED", errorCode: "ANALYZER_CRASHED", errorMessage: "the analyzer crashed" } },
      claim.runnerToken,
    );
    expect(completed.body.data.completeScan).toMatchObject({ status: "FAILED", errorCode: "ANALYZER_CRASHED" });

    const refused = await submit(buildNotAZip(), "refused");
    expect(refused.body.errors?.[0]?.extensions?.code).toBe("ARCHIVE_INVALID");

    // One more, left in the queue, so that the queued gauges have something to report.
    expect((await submit(good, "waits")).status).toBe(200);
    uploadedBytes += good.length;

    const scraped = await scrape();
    expect(scraped.status).toBe(200);
    expect(scraped.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    exposition = scraped.text;
    families = parseExposition(exposition);
  }, 120_000);

  it("counts the finished scans by status and error code", () => {
    expect(families.get("vega_scans_finished_total")?.type).toBe("COUNTER");
    expect(valueOf(families, "vega_scans_finished_total", { status: "SUCCEEDED", error_code: "none" })).toBe(1);
    expect(valueOf(families, "vega_scans_finished_total", { status: "FAILED", error_code: "ANALYZER_CRASHED" })).toBe(1);
  });

  it("counts the refused submission by its code, and the bytes uploaded", () => {
    expect(valueOf(families, "vega_submissions_refused_total", { code: "ARCHIVE_INVALID" })).toBe(1);
    expect(valueOf(families, "vega_upload_bytes_total")).toBeGreaterThanOrEqual(uploadedBytes);
  });

  it("observes the queue wait of both claims and the duration of both finished scans", () => {
    const wait = families.get("vega_scan_queue_wait_seconds")!;
    expect(wait.type).toBe("HISTOGRAM");
    expect(Number(wait.metrics[0].count)).toBe(2);
    expect(Object.keys(wait.metrics[0].buckets!)).toEqual(expect.arrayContaining(["1", "3600", "28800"]));
    expect(families.get("vega_scan_duration_seconds")?.type).toBe("HISTOGRAM");
    const duration = histogramSeries(exposition, "vega_scan_duration_seconds");
    for (const status of ["SUCCEEDED", "FAILED"]) {
      expect(duration.count({ status }), status).toBe(1);
      expect(duration.bucket("+Inf", { status }), status).toBe(1);
      expect(duration.sum({ status }), status).toBeGreaterThanOrEqual(0);
    }
    expect(duration.count({ status: "CANCELLED" })).toBe(0);
  });

  it("reports the database's numbers in the gauges", async () => {
    const prisma = server.app.deps.prisma;
    for (const status of ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const) {
      expect(valueOf(families, "vega_scans", { status }), status).toBe(await prisma.scan.count({ where: { status } }));
    }
    expect(valueOf(families, "vega_scans", { status: "QUEUED" })).toBe(1);
    expect(valueOf(families, "vega_oldest_queued_scan_age_seconds")).toBeGreaterThanOrEqual(0);
    const workers = await prisma.worker.findMany({ where: { deregisteredAt: null } });
    expect(valueOf(families, "vega_workers", { state: "live" })).toBe(workers.length);
    expect(valueOf(families, "vega_workers", { state: "stale" })).toBe(0);
    expect(valueOf(families, "vega_worker_capacity")).toBe(workers.reduce((sum, worker) => sum + worker.capacity, 0));
    expect(valueOf(families, "vega_claims_paused")).toBe(0);
    expect(valueOf(families, "vega_cleanup_last_success_timestamp_seconds")).toBe(0);
  });

  it("lists every metric the README names, with HELP and TYPE", () => {
    const names = [
      "vega_scans",
      "vega_oldest_queued_scan_age_seconds",
      "vega_scans_finished_total",
      "vega_scan_queue_wait_seconds",
      "vega_scan_duration_seconds",
      "vega_workers",
      "vega_worker_capacity",
      "vega_worker_active_scans",
      "vega_launch_failures_total",
      "vega_recoveries_total",
      "vega_submissions_refused_total",
      "vega_upload_bytes_total",
      "vega_cleanup_last_success_timestamp_seconds",
      "vega_cleanup_bytes_freed_total",
      "vega_claims_paused",
    ];
    for (const name of names) {
      expect(exposition, name).toContain(`# HELP ${name} `);
      expect(exposition, name).toContain(`# TYPE ${name} `);
    }
  });

  it.skipIf(!promtoolPath)("passes `promtool check metrics` (Prometheus' own linter)", () => {
    const lint = promtoolCheckMetrics(exposition);
    // promtool exits 3 for lint problems; every one it finds is printed.
    expect(lint.output.split("\n").filter((line) => line.startsWith("vega_")), lint.output).toEqual([]);
  });
});

describe("who may scrape", () => {
  it("answers 401 without a token and with a wrong one, 403 to a user who is not an operator", async () => {
    expect((await scrape(null)).status).toBe(401);
    expect((await scrape("not-the-metrics-token")).status).toBe(401);
    const user = await scrape(alice);
    expect(user.status).toBe(403);
    expect(JSON.parse(user.text).errors[0].extensions.code).toBe("FORBIDDEN");
  });

  it("answers an operator's token as it answers VEGA_METRICS_TOKEN", async () => {
    const scraped = await scrape(operator);
    expect(scraped.status).toBe(200);
    expect(parseExposition(scraped.text).has("vega_scans")).toBe(true);
  });
});
