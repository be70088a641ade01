/**
 * The operator's panels: the queue at a glance (counters, oldest queued,
 * claims paused), the 24-hour throughput chart, the workers, the diagnostics
 * and the cleanup. Live through workerHeartbeats, claimsPausedChanged and
 * cleanupRunUpdated; the summary is read again when a scan changes state
 * (at most once a second), and everything once a minute, for what has no
 * subscription (diagnostics, the chart's moving window).
 */
import type { Api } from "./api.ts";
import { age, confirmed, formatBytes, formatTime, h, replaceChildren, svg } from "./dom.ts";
import {
  CLAIMS_PAUSED_CHANGED,
  CLEANUP_RUN_UPDATED,
  OPS_HEALTH,
  OPS_OVERVIEW,
  OPS_WORKERS,
  PAUSE_CLAIMS,
  RESUME_CLAIMS,
  TRIGGER_CLEANUP,
  WORKER_HEARTBEATS,
} from "./operations.ts";
import { describe } from "./scans.ts";
import { STATUSES, type ClaimsPause, type CleanupRun, type ScanStatus, type Worker } from "./types.ts";

interface Overview {
  summary: { counts: { status: ScanStatus; count: number }[]; oldestQueuedAgeSeconds: number | null; throughput: Bucket[] };
  claimsPaused: ClaimsPause;
}
interface Bucket {
  bucketStart: string;
  finished: number;
  failed: number;
}
interface Diagnostic {
  code: string;
  severity: "CRITICAL" | "WARNING" | "INFO";
  summary: string;
  action: string;
  subjects: string[];
}
interface Cleanup {
  intervalSeconds: number;
  nextScheduledAt: string | null;
  running: CleanupRun | null;
  lastRun: CleanupRun | null;
}

export interface OpsPanels {
  element: HTMLElement;
  reload(): Promise<void>;
  /** A scan changed state: the counters and the chart are read again, at most once a second. */
  scansChanged(): void;
  dispose(): void;
}

export function createOpsPanels(api: Api, report: (message: string, error?: boolean) => void): OpsPanels {
  const counters = h("div", { class: "counters" });
  const claims = h("div", { class: "claims" });
  const chart = h("div", { class: "chart" });
  const workersBody = h("tbody");
  const diagnostics = h("div", { class: "diagnostics" });
  const cleanup = h("div", { class: "cleanup-status" });
  const workers = new Map<string, { worker: Worker; heartbeatAt: number }>();
  let dryRun: CleanupRun | undefined;

  const element = h(
    "div",
    { id: "ops" },
    h("section", { class: "panel overview" }, h("h2", {}, "Queue"), counters, claims),
    h("section", { class: "panel throughput" }, h("h2", {}, "Throughput, last 24 hours"), chart),
    h(
      "section",
      { class: "panel workers", id: "workers" },
      h("h2", {}, "Workers"),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Name", "Host", "Version", "Capacity", "Active scans", "Last heartbeat", "State"].map((title) => h("th", {}, title)))),
        workersBody,
      ),
    ),
    h("section", { class: "panel diagnostics-panel", id: "diagnostics" }, h("h2", {}, "Diagnostics"), diagnostics),
    h("section", { class: "panel cleanup", id: "cleanup" }, h("h2", {}, "Cleanup"), cleanup),
  );

  function renderOverview({ summary, claimsPaused }: Overview) {
    const counts = new Map(summary.counts.map(({ status, count }) => [status, count]));
    replaceChildren(
      counters,
      STATUSES.map((status) =>
        h("div", { class: `counter counter-${status.toLowerCase()}`, "data-status": status }, h("span", { class: "count" }, counts.get(status) ?? 0), h("span", { class: "counter-label" }, status)),
      ),
      h(
        "div",
        { class: "counter oldest" },
        summary.oldestQueuedAgeSeconds === null ? h("span", { class: "count" }, "—") : h("span", { class: "count" }, age(api.now() - summary.oldestQueuedAgeSeconds * 1000)),
        h("span", { class: "counter-label" }, "oldest queued"),
      ),
    );
    renderClaims(claimsPaused);
    renderChart(summary.throughput);
  }

  function renderClaims(pause: ClaimsPause) {
    replaceChildren(
      claims,
      pause.paused
        ? [
            h("span", { class: "claims-state paused" }, "Claims paused"),
            h("span", { class: "muted" }, ` by ${pause.by ?? "?"} ${pause.since ? `since ${formatTime(pause.since)}` : ""}: ${pause.reason ?? ""}`),
            h("button", { onclick: () => void setPaused(false) }, "Resume claims"),
          ]
        : [h("span", { class: "claims-state" }, "Workers are claiming scans"), h("button", { class: "danger", onclick: () => void setPaused(true) }, "Pause claims")],
    );
  }

  async function setPaused(paused: boolean) {
    try {
      if (paused) {
        const reason = window.prompt("Pause claims: why? (shown to other operators)");
        if (!reason) return;
        renderClaims((await api.request<{ pauseClaims: ClaimsPause }>(PAUSE_CLAIMS, { reason })).pauseClaims);
      } else {
        if (!confirmed("Let workers claim queued scans again?")) return;
        renderClaims((await api.request<{ resumeClaims: ClaimsPause }>(RESUME_CLAIMS)).resumeClaims);
      }
    } catch (error) {
      report(describe(error), true);
    }
  }

  /** Finished and failed scans per five minutes, as SVG bars the page draws itself. */
  function renderChart(buckets: Bucket[]) {
    const width = 864; // 3 px per bucket
    const height = 120;
    const peak = Math.max(1, ...buckets.map((bucket) => bucket.finished));
    const barWidth = width / Math.max(1, buckets.length);
    const bars = buckets.flatMap((bucket, index) => {
      const x = index * barWidth;
      const finishedHeight = (bucket.finished / peak) * (height - 14);
      const failedHeight = (bucket.failed / peak) * (height - 14);
      const title = `${formatTime(bucket.bucketStart)}: ${bucket.finished} finished, ${bucket.failed} failed`;
      return bucket.finished === 0
        ? []
        : [
            svg("rect", { class: "bar-finished", x: x.toFixed(1), y: (height - finishedHeight).toFixed(1), width: Math.max(1, barWidth - 0.5).toFixed(1), height: finishedHeight.toFixed(1) }, svg("title", {}, title)),
            svg("rect", { class: "bar-failed", x: x.toFixed(1), y: (height - failedHeight).toFixed(1), width: Math.max(1, barWidth - 0.5).toFixed(1), height: failedHeight.toFixed(1) }),
          ];
    });
    const totalFinished = buckets.reduce((sum, bucket) => sum + bucket.finished, 0);
    const totalFailed = buckets.reduce((sum, bucket) => sum + bucket.failed, 0);
    replaceChildren(
      chart,
      h("div", { class: "chart-legend" }, h("span", { class: "key finished" }), ` finished ${totalFinished}  `, h("span", { class: "key failed" }), ` of which failed ${totalFailed}  `, h("span", { class: "muted" }, `· peak ${peak} per 5 min`)),
      svg(
        "svg",
        { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "chart-svg", role: "img", "aria-label": `${totalFinished} scans finished in the last 24 hours, ${totalFailed} failed` },
        svg("line", { class: "axis", x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }),
        ...bars,
      ),
      h("div", { class: "chart-axis" }, h("span", {}, "24 h ago"), h("span", {}, "12 h ago"), h("span", {}, "now")),
    );
  }

  function renderWorkers() {
    const list = [...workers.values()].sort((a, b) => a.worker.name.localeCompare(b.worker.name));
    replaceChildren(
      workersBody,
      list.length
        ? list.map(({ worker, heartbeatAt }) =>
            h(
              "tr",
              { "data-worker-id": worker.id, class: worker.stale ? "stale" : "" },
              h("td", {}, worker.name),
              h("td", {}, worker.host),
              h("td", {}, worker.version),
              h("td", {}, worker.capacity),
              h("td", {}, worker.activeScans),
              h("td", { class: "heartbeat" }, age(heartbeatAt), " ago"),
              h("td", {}, worker.stale ? h("span", { class: "tag stale-tag" }, "stale") : worker.draining ? h("span", { class: "tag draining-tag" }, "draining") : h("span", { class: "tag live-tag" }, "live")),
            ),
          )
        : h("tr", {}, h("td", { colspan: "7", class: "empty" }, "No worker registered. Start one with `npx vega worker`, or `npm start` runs one.")),
    );
  }

  function keepWorker(worker: Worker) {
    // secondsSinceHeartbeat is the server's count when it answered: the age ticks on from there.
    workers.set(worker.id, { worker, heartbeatAt: api.now() - worker.secondsSinceHeartbeat * 1000 });
  }

  function renderDiagnostics(list: Diagnostic[]) {
    replaceChildren(
      diagnostics,
      list.length === 0
        ? h("p", { class: "healthy" }, "All checks pass.")
        : h(
            "ul",
            {},
            list.map((diagnostic) =>
              h(
                "li",
                { class: `diagnostic severity-${diagnostic.severity.toLowerCase()}` },
                h("span", { class: "tag" }, diagnostic.severity),
                h("strong", {}, ` ${diagnostic.code} `),
                h("span", {}, diagnostic.summary),
                h("div", { class: "action" }, "What to do: ", diagnostic.action),
                diagnostic.subjects.length ? h("div", { class: "muted subjects" }, diagnostic.subjects.slice(0, 8).join(", "), diagnostic.subjects.length > 8 ? ` and ${diagnostic.subjects.length - 8} more` : "") : null,
              ),
            ),
          ),
    );
  }

  const countsText = (run: CleanupRun) =>
    Object.entries(run.counts)
      .filter(([, count]) => count !== null)
      .map(([job, count]) => `${job} ${count}`)
      .join(", ");

  function renderCleanup(status: Cleanup) {
    const { running, lastRun } = status;
    const canRunForReal = dryRun && dryRun.status === "SUCCEEDED" && !running;
    replaceChildren(
      cleanup,
      h(
        "dl",
        {},
        h("dt", {}, "Schedule"),
        h("dd", {}, status.intervalSeconds ? `every ${Math.round(status.intervalSeconds / 60)} min, next ${formatTime(status.nextScheduledAt)}` : "not scheduled (VEGA_CLEANUP_INTERVAL_SECONDS=0)"),
        h("dt", {}, "In progress"),
        h("dd", {}, running ? `${running.dryRun ? "dry run" : "run"} started ${formatTime(running.startedAt)} by ${running.triggeredBy ?? running.trigger}` : "none"),
        h("dt", {}, "Last run"),
        h(
          "dd",
          { class: "last-run" },
          lastRun ? `${lastRun.status}${lastRun.dryRun ? " (dry run)" : ""} at ${formatTime(lastRun.finishedAt)}: ${countsText(lastRun)}; ${formatBytes(Number(lastRun.bytesFreed))} ${lastRun.dryRun ? "would be " : ""}freed${lastRun.error ? `; ${lastRun.error}` : ""}` : "never",
        ),
        dryRun ? h("dt", {}, "Dry run") : null,
        dryRun ? h("dd", { class: "dry-run" }, dryRun.status === "RUNNING" ? "running…" : `${dryRun.status}: would remove ${countsText(dryRun)}, ${formatBytes(Number(dryRun.bytesFreed))}`) : null,
      ),
      h(
        "div",
        { class: "toolbar" },
        h("button", { disabled: Boolean(running), onclick: () => void trigger(true) }, "Dry run"),
        h("button", { class: "danger", disabled: !canRunForReal, title: canRunForReal ? "" : "Run a dry run first", onclick: () => void trigger(false) }, "Run cleanup"),
      ),
    );
  }

  let cleanupStatus: Cleanup | undefined;

  async function trigger(asDryRun: boolean) {
    if (!asDryRun && !confirmed(`Run cleanup now? The dry run said it would remove: ${dryRun ? countsText(dryRun) : "?"}.`)) return;
    try {
      const { triggerCleanup } = await api.request<{ triggerCleanup: CleanupRun }>(TRIGGER_CLEANUP, { dryRun: asDryRun });
      if (asDryRun) dryRun = triggerCleanup;
      else dryRun = undefined;
      await loadHealth();
    } catch (error) {
      report(describe(error), true);
    }
  }

  async function loadOverview() {
    renderOverview((await api.request<{ ops: Overview }>(OPS_OVERVIEW)).ops);
  }

  async function loadWorkers() {
    const { ops } = await api.request<{ ops: { workers: Worker[] } }>(OPS_WORKERS);
    workers.clear();
    for (const worker of ops.workers) keepWorker(worker);
    renderWorkers();
  }

  async function loadHealth() {
    const { ops } = await api.request<{ ops: { diagnostics: Diagnostic[]; cleanup: Cleanup } }>(OPS_HEALTH);
    renderDiagnostics(ops.diagnostics);
    cleanupStatus = ops.cleanup;
    renderCleanup(ops.cleanup);
  }

  const subscriptions = [
    api.subscribe<{ workerHeartbeats: { kind: string; worker: Worker } }>(WORKER_HEARTBEATS, {}, ({ workerHeartbeats }) => {
      const { kind, worker } = workerHeartbeats;
      if (kind === "DEREGISTERED") workers.delete(worker.id);
      else keepWorker(worker);
      renderWorkers();
    }),
    api.subscribe<{ claimsPausedChanged: ClaimsPause }>(CLAIMS_PAUSED_CHANGED, {}, ({ claimsPausedChanged }) => renderClaims(claimsPausedChanged)),
    api.subscribe<{ cleanupRunUpdated: CleanupRun }>(CLEANUP_RUN_UPDATED, {}, ({ cleanupRunUpdated }) => {
      if (dryRun?.id === cleanupRunUpdated.id) dryRun = cleanupRunUpdated;
      void loadHealth().catch(() => cleanupStatus && renderCleanup(cleanupStatus));
    }),
  ];

  let summaryTimer: number | undefined;
  const minuteTimer = window.setInterval(() => void panels.reload(), 60_000);

  const panels: OpsPanels = {
    element,
    async reload() {
      try {
        await Promise.all([loadOverview(), loadWorkers(), loadHealth()]);
      } catch (error) {
        report(describe(error), true);
      }
    },
    scansChanged() {
      summaryTimer ??= window.setTimeout(() => {
        summaryTimer = undefined;
        void loadOverview().catch((error: unknown) => report(describe(error), true));
      }, 1000);
    },
    dispose() {
      for (const unsubscribe of subscriptions) unsubscribe();
      window.clearInterval(minuteTimer);
      if (summaryTimer) window.clearTimeout(summaryTimer);
    },
  };
  return panels;
}
