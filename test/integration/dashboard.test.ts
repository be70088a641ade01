/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core,
 * against a real server and a real `vega worker` (local launcher) that reaches
 * the API through the gate (test/support/api-gate.ts). Holding the worker's
 * claims and the runner's addFindings keeps a scan at a known point for as long
 * as the page needs to show it, so nothing here depends on the machine's speed.
 *
 * What the page showed is recorded on the page itself, by a MutationObserver
 * that notes each scan row's status and progress as the DOM changes: the test
 * never reloads, and reads what a person watching would have seen.
 *
 * Screenshots of the main page and of a scan's page are written to
 * test-output/ (git-ignored).
 */
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApiGate, type ApiGate, type Hold } from "../support/api-gate.ts";
import { runVega, stopProcess } from "../support/cli.ts";
import { startTestServer, TEST_JWT_SECRET, type TestServer } from "../support/server.ts";
import { submitScan } from "../support/uploads.ts";
import { fakeAwsAccessKeyIds, startWorkerProcess, waitForScanStatus, within, type WorkerProcess } from "../support/worker-process.ts";
import { watchSubscriptions } from "../support/ws.ts";
import { buildZip } from "../support/zips.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const OUTPUT_DIR = path.join(import.meta.dirname, "..", "..", "test-output");
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`dashboard tests skipped: ${CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)`);

interface Seen {
  id: string;
  status: string;
  fraction: number;
}

/** Records, on the page, every (status, progress) a scan row showed, as the DOM changed. */
function recordScanRows(page: Page) {
  return page.evaluate(() => {
    const seen: Seen[] = [];
    const last = new Map<string, string>();
    const note = () => {
      for (const row of document.querySelectorAll<HTMLElement>("#scans tr[data-scan-id]")) {
        const id = row.dataset.scanId!;
        const status = row.dataset.status!;
        const fraction = Number(row.querySelector<HTMLElement>(".progress")?.dataset.fraction ?? "0");
        const key = `${status} ${fraction}`;
        if (last.get(id) === key) continue;
        last.set(id, key);
        seen.push({ id, status, fraction });
      }
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    note();
    (window as unknown as { seenScanRows: Seen[] }).seenScanRows = seen;
  });
}

const seenRows = (page: Page, scanId: string) =>
  page.evaluate((id) => (window as unknown as { seenScanRows: Seen[] }).seenScanRows.filter((row) => row.id === id), scanId);

const row = (page: Page, scanId: string) => page.locator(`#scans tr[data-scan-id="${scanId}"]`);

/** Each status once, in the order shown. */
const statusSequence = (rows: Seen[]) => rows.map((seen) => seen.status).filter((status, index, all) => status !== all[index - 1]);

describe.skipIf(!haveChromium)("the dashboard in Chromium", () => {
  let server: TestServer;
  let gate: ApiGate;
  let worker: WorkerProcess;
  let browser: Browser;
  let operatorContext: BrowserContext;
  let page: Page;
  let operator: string;
  let alice: string;
  const holds: Hold[] = [];
  /** Every URL any page asked for (HTTP and WebSocket), across contexts. */
  const requested: string[] = [];

  const hold = (...args: Parameters<ApiGate["hold"]>) => {
    const held = gate.hold(...args);
    holds.push(held);
    return held;
  };

  const watchRequests = (target: Page) => {
    target.on("request", (request) => void requested.push(request.url()));
    target.on("websocket", (socket) => void requested.push(socket.url()));
  };

  const submit = async (token: string, files: { name: string; data: string }[], label: string) => {
    const submitted = await submitScan(server, token, await buildZip(files), { label });
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(200);
    return submitted.body.data.submitScan.scan.id as string;
  };

  beforeAll(async () => {
    server = await startTestServer({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "20", VEGA_SCAN_HEARTBEAT_TTL_SECONDS: "60" });
    gate = await startApiGate(server.url);
    operator = await server.token("olivia", { groups: ["vega-ops"] });
    alice = await server.token("alice");
    worker = await startWorkerProcess("dashboard-host", {
      VEGA_API_URL: gate.graphqlUrl,
      VEGA_WORKER_TOKEN: await server.token("dashboard-fleet", { scope: "worker" }),
      VEGA_LAUNCHER: "local",
      VEGA_WORKER_CAPACITY: "2",
      VEGA_WORKER_POLL_INTERVAL_SECONDS: "1",
      VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "2",
      // Passed on to the runners: a progress report every second, one addFindings call per finding.
      VEGA_RUNNER_HEARTBEAT_SECONDS: "1",
      VEGA_RUNNER_FINDINGS_BATCH: "1",
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    operatorContext = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
    page = await operatorContext.newPage();
    watchRequests(page);
    await mkdir(OUTPUT_DIR, { recursive: true });
  }, 120_000);

  afterAll(async () => {
    for (const held of holds) held.drop();
    await browser?.close();
    if (worker) expect(await stopProcess(worker.child, "SIGTERM")).toBe(0);
    await gate?.close();
    await server?.close();
  });

  it("logs an operator in from the address `vega dashboard` prints, keeping the token in sessionStorage and out of the address bar", async () => {
    const port = new URL(server.url).port;
    const printed = await runVega(["dashboard", "--sub", "olivia"], { VEGA_JWT_SECRET: TEST_JWT_SECRET, VEGA_PORT: port, VEGA_DATA_DIR: server.dataDir }, { timeoutMs: 60_000 });
    expect(printed.code, printed.stderr).toBe(0);
    const address = printed.stdout.trim();
    expect(address).toMatch(new RegExp(`^http://localhost:${port}/#token=[\\w-]+\\.[\\w-]+\\.[\\w-]+$`));
    const token = address.split("#token=")[1]!;
    await page.goto(address.replace("localhost", "127.0.0.1"));
    await page.locator("#ops").waitFor();
    expect(page.url()).toBe(`${server.url}/`);
    expect(await page.evaluate(() => sessionStorage.getItem("vega.token"))).toBe(token);
    expect(await page.locator(".who").textContent()).toBe("olivia" + "operator");
    await expect.poll(() => page.locator(".live-state").textContent()).toBe("live");
    await recordScanRows(page);
  });

  it("shows the worker with a heartbeat age that ticks", async () => {
    const workerRow = page.locator(`#workers tr[data-worker-id="${worker.workerId}"]`);
    await workerRow.waitFor();
    await expect.poll(() => workerRow.locator("td").first().textContent()).toBe("dashboard-host");
    expect(await workerRow.locator("td").nth(3).textContent()).toBe("2");
    const heartbeat = workerRow.locator(".heartbeat");
    const first = await heartbeat.textContent();
    // The age is rewritten every second, and reset by each heartbeat event: either way it changes.
    await expect.poll(() => heartbeat.textContent(), { timeout: 30_000 }).not.toBe(first);
    expect(await heartbeat.textContent()).toMatch(/^\d+ s ago$/);
    expect(await workerRow.getAttribute("class")).not.toContain("stale");
  });

  let succeededScanId: string;

  it("follows a scan submitted through the API from QUEUED through RUNNING, its progress bar moving, to SUCCEEDED", async () => {
    // 64 files, a secret in each: the analyzer hands them over in two batches of 32, and each finding is one call.
    const keys = fakeAwsAccessKeyIds(64, 11);
    const filler = "export const value = 42; // nothing to see here\n".repeat(400);
    const files = keys.map((key, index) => ({ name: `src/module-${index}.ts`, data: `const key = "${key}";\n${filler}` }));
    const claim = hold((call) => call.operationName === "ClaimScans");
    await claim.first;
    const watch = watchSubscriptions(server.app.deps.pubsub);
    const scanId = await submit(operator, files, "live-scan");
    succeededScanId = scanId;
    await expect.poll(() => row(page, scanId).getAttribute("data-status")).toBe("QUEUED");
    // The page follows the queued scan's progress before any worker may claim it.
    await within(watch.until("scanProgress"), "the page's scanProgress subscription");
    watch.restore();

    let findings = hold((call) => call.operationName === "AddFindings" && call.variables.scanId === scanId);
    claim.release();
    // Held at the first finding: the runner has gone through its first batch of 32 files of 64.
    await within(findings.first, "the runner's first addFindings", { timeoutMs: 120_000 });
    await expect.poll(() => row(page, scanId).locator(".progress-label").textContent(), { timeout: 30_000 }).toContain("32/64 files");
    expect(await row(page, scanId).getAttribute("data-status")).toBe("RUNNING");
    // Let the 32 findings of the first batch through, one at a time; the next call (the second batch's first) is held.
    for (let finding = 0; finding < 32; finding++) {
      await within(findings.first, `addFindings ${finding + 1}`, { timeoutMs: 60_000 });
      const previous = findings;
      findings = hold((call) => call.operationName === "AddFindings" && call.variables.scanId === scanId);
      previous.release();
    }
    await within(findings.first, "the second batch's first addFindings", { timeoutMs: 60_000 });
    await expect.poll(() => row(page, scanId).locator(".progress-label").textContent(), { timeout: 30_000 }).toContain("64/64 files");
    findings.release();
    await expect.poll(() => row(page, scanId).getAttribute("data-status"), { timeout: 120_000 }).toBe("SUCCEEDED");
    expect((await waitForScanStatus(server.app.deps.prisma, scanId, ["SUCCEEDED"])).status).toBe("SUCCEEDED");

    const seen = await seenRows(page, scanId);
    // STARTING may be too brief to render: the runner's first report moves the scan on.
    expect(statusSequence(seen).filter((status) => status !== "STARTING")).toEqual(["QUEUED", "RUNNING", "SUCCEEDED"]);
    // While RUNNING the bar showed at least the two held points (32 and 64 files of 64), only ever forward.
    const running = [...new Set(seen.filter((s) => s.status === "RUNNING").map((s) => s.fraction))];
    for (let index = 1; index < running.length; index++) expect(running[index]).toBeGreaterThan(running[index - 1]!);
    expect(running.filter((fraction) => fraction > 0 && fraction < 1).length).toBeGreaterThanOrEqual(2);
    expect(seen.at(-1)).toMatchObject({ status: "SUCCEEDED", fraction: 1 });
    // The counters follow (read again after state changes).
    await expect.poll(() => page.locator('.counter[data-status="SUCCEEDED"] .count').textContent()).toBe("1");
    await page.screenshot({ path: path.join(OUTPUT_DIR, "dashboard-main.png"), fullPage: true });
  }, 300_000);

  let cancelledScanId: string;

  it("cancels a queued scan from the page once the operator confirms", async () => {
    const claim = hold((call) => call.operationName === "ClaimScans");
    await claim.first;
    const bob = await server.token("bob");
    const scanId = await submit(bob, [{ name: "README.md", data: "nothing secret\n" }], "bob-scan");
    cancelledScanId = scanId;
    await expect.poll(() => row(page, scanId).getAttribute("data-status")).toBe("QUEUED");
    const questions: string[] = [];
    page.once("dialog", (dialog) => {
      questions.push(dialog.message());
      void dialog.accept();
    });
    await row(page, scanId).getByRole("button", { name: "Cancel" }).click();
    await expect.poll(() => row(page, scanId).getAttribute("data-status")).toBe("CANCELLED");
    expect(questions).toEqual(["Cancel scan bob-scan?"]);
    expect((await server.app.deps.prisma.scan.findUniqueOrThrow({ where: { id: scanId } })).status).toBe("CANCELLED");
    claim.release();
  });

  it("shows one scan's timeline, findings with filters (snippets redacted) and its SARIF download", async () => {
    await row(page, succeededScanId).getByRole("link").click();
    await page.locator("#scan-page").waitFor();
    expect(page.url()).toBe(`${server.url}/#/scans/${succeededScanId}`);
    await expect.poll(() => page.locator("#findings tr.finding").count()).toBe(64);
    const snippets = await page.locator("#findings .snippet").allTextContents();
    const keys = fakeAwsAccessKeyIds(64, 11);
    for (const snippet of snippets) for (const key of keys) expect(snippet).not.toContain(key);
    const timeline = await page.locator("#timeline tr.event").allTextContents();
    expect(timeline.some((text) => text.includes("SUCCEEDED"))).toBe(true);
    // Filtering by a severity no finding has empties the table.
    const severities = new Set(await page.locator("#findings tr.finding td:first-child").allTextContents());
    const absent = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"].find((severity) => !severities.has(severity))!;
    await page.locator(`#findings input[value="${absent}"]`).check();
    await expect.poll(() => page.locator("#findings tr.finding").count()).toBe(0);
    await page.locator(`#findings input[value="${absent}"]`).uncheck();
    await expect.poll(() => page.locator("#findings tr.finding").count()).toBe(64);
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download SARIF" }).click()]);
    const sarif = JSON.parse(await readFile((await download.path())!, "utf8"));
    expect(sarif.version).toBe("2.1.0");
    expect(sarif.runs[0].results).toHaveLength(64);
    await page.screenshot({ path: path.join(OUTPUT_DIR, "dashboard-scan.png"), fullPage: true });
  });

  it("shows a user who is not an operator their own scans and no ops panel, and submits a zip from the page with the API's refusals", async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const userPage = await context.newPage();
    watchRequests(userPage);
    await userPage.goto(`${server.url}/#token=${alice}`);
    await userPage.locator("#scans").waitFor();
    expect(await userPage.locator("#ops").count()).toBe(0);
    expect(await userPage.locator("#scans h2").textContent()).toBe("Your scans");
    // Neither the operator's scan nor bob's is alice's.
    await expect.poll(() => userPage.locator("#scans td.empty").count()).toBe(1);
    expect(await userPage.locator(`tr[data-scan-id="${cancelledScanId}"]`).count()).toBe(0);

    // A file that is not a zip: refused as the API refuses it, with its code.
    await userPage.locator("#submit input[type=file]").setInputFiles({ name: "notes.zip", mimeType: "application/zip", buffer: Buffer.from("not a zip at all") });
    await userPage.getByRole("button", { name: "Submit scan" }).click();
    await expect.poll(() => userPage.locator(".flash-error").textContent()).toMatch(/^ARCHIVE_INVALID: /);

    const zip = await buildZip([{ name: "app.js", data: "console.log('hello');\n" }]);
    await userPage.locator("#submit input[type=file]").setInputFiles({ name: "app.zip", mimeType: "application/zip", buffer: zip });
    await userPage.locator("#submit input[aria-label=Label]").fill("from-the-page");
    await userPage.getByRole("button", { name: "Submit scan" }).click();
    await expect.poll(() => userPage.locator(".flash-ok").textContent()).toMatch(/queued/);
    const submitted = await server.app.deps.prisma.scan.findFirstOrThrow({ where: { label: "from-the-page" } });
    expect(submitted.ownerId).toBe("alice");
    await expect.poll(() => userPage.locator(`#scans tr[data-scan-id="${submitted.id}"]`).count()).toBe(1);
    await expect.poll(() => userPage.locator(`#scans tr[data-scan-id="${submitted.id}"]`).getAttribute("data-status"), { timeout: 120_000 }).toBe("SUCCEEDED");
    await context.close();
  }, 180_000);

  it("serves GraphiQL on GET /graphql from Vega, with the tab's token in its headers", async () => {
    const graphiql = await operatorContext.newPage();
    watchRequests(graphiql);
    // A new tab has its own sessionStorage: log in there first, as the dashboard's GraphiQL link does.
    await graphiql.goto(`${server.url}/#token=${operator}`);
    await graphiql.locator("#ops").waitFor();
    const introspection = graphiql.waitForRequest((request) => request.url() === server.graphqlUrl && request.method() === "POST");
    await graphiql.goto(`${server.url}/graphql`);
    expect(await graphiql.title()).toBe("Vega GraphiQL");
    expect((await introspection).headers().authorization).toBe(`Bearer ${operator}`);
    await graphiql.close();
  });

  it("made no request to any host but Vega's", () => {
    expect(requested.length).toBeGreaterThan(0);
    const origin = new URL(server.url);
    const elsewhere = requested.filter((url) => {
      if (url.startsWith("blob:") || url.startsWith("data:")) return false;
      return new URL(url).host !== origin.host;
    });
    expect(elsewhere).toEqual([]);
  });
});
