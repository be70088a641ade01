/**
 * One scan: its header (status, owner, progress, error), the event timeline,
 * the findings with severity and rule filters, and the SARIF download. Live
 * through scanStateChanged and scanProgress for this scan.
 */
import type { Api } from "./api.ts";
import { age, confirmed, formatBytes, formatTime, h, replaceChildren } from "./dom.ts";
import { CANCEL_SCAN, RETRY_SCAN, SCAN_DETAIL, SCAN_PROGRESS, SCAN_STATE_CHANGED } from "./operations.ts";
import { progressBar } from "./progress.ts";
import { describe, statusBadge } from "./scans.ts";
import { isActive, type Progress, type ScanRow } from "./types.ts";

const SEVERITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"] as const;

interface ScanEvent {
  id: string;
  seq: number;
  kind: string;
  code: string | null;
  message: string;
  createdAt: string;
}
interface Finding {
  id: string;
  severity: string;
  ruleId: string;
  path: string;
  line: number;
  column: number;
  endLine: number | null;
  message: string;
  snippet: string | null;
}
interface ScanDetail extends ScanRow {
  errorMessage: string | null;
  attempts: number;
  taskId: string | null;
  queuedAt: string;
  retryOf: { id: string } | null;
  source: { fileName: string | null; sizeBytes: string; entryCount: number | null };
  findingCounts: Record<"critical" | "high" | "medium" | "low" | "info", number>;
  events: { edges: { node: ScanEvent }[] };
  findings: { edges: { node: Finding }[]; pageInfo: { hasNextPage: boolean } };
}

export function createScanPage(api: Api, scanId: string, report: (message: string, error?: boolean) => void) {
  const header = h("div", { class: "scan-header" });
  const timeline = h("tbody");
  const findingsBody = h("tbody");
  const findingsNote = h("p", { class: "muted" });
  const filters = { severity: new Set<string>(), ruleId: "" };
  let scan: ScanDetail | undefined;

  const severityBoxes = SEVERITIES.map((severity) =>
    h(
      "label",
      { class: `severity-filter sev-${severity.toLowerCase()}` },
      h("input", {
        type: "checkbox",
        value: severity,
        onchange: (event: Event) => {
          const box = event.target as HTMLInputElement;
          if (box.checked) filters.severity.add(severity);
          else filters.severity.delete(severity);
          void load();
        },
      }),
      ` ${severity}`,
    ),
  );
  const ruleInput = h("input", { type: "search", placeholder: "rule id", "aria-label": "Rule", onchange: () => ((filters.ruleId = ruleInput.value.trim()), void load()) });

  const element = h(
    "div",
    { id: "scan-page" },
    h("p", {}, h("a", { href: "#/" }, "← All scans")),
    h("section", { class: "panel" }, header),
    h(
      "section",
      { class: "panel timeline", id: "timeline" },
      h("h2", {}, "Timeline"),
      h("table", {}, h("thead", {}, h("tr", {}, ["#", "When", "Kind", "Code", "Message"].map((title) => h("th", {}, title)))), timeline),
    ),
    h(
      "section",
      { class: "panel findings", id: "findings" },
      h("h2", {}, "Findings"),
      h("div", { class: "toolbar" }, severityBoxes, h("label", {}, "Rule ", ruleInput), h("button", { onclick: () => void downloadSarif() }, "Download SARIF")),
      h("table", {}, h("thead", {}, h("tr", {}, ["Severity", "Rule", "Path", "Line", "Snippet (redacted)"].map((title) => h("th", {}, title)))), findingsBody),
      findingsNote,
    ),
  );

  function renderHeader() {
    if (!scan) return;
    const s = scan;
    const counts = s.findingCounts;
    replaceChildren(
      header,
      h("h2", {}, "Scan ", h("span", { class: "mono" }, s.label ?? s.id), " ", statusBadge(s.status)),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Id"),
        h("dd", { class: "mono" }, s.id),
        h("dt", {}, "Owner"),
        h("dd", {}, s.owner.id),
        h("dt", {}, "Workspace"),
        h("dd", {}, s.workspace.name),
        h("dt", {}, "Archive"),
        h("dd", {}, `${s.source.fileName ?? "?"}, ${formatBytes(Number(s.source.sizeBytes))}${s.source.entryCount !== null ? `, ${s.source.entryCount} entries` : ""}`),
        h("dt", {}, "Queued"),
        h("dd", {}, formatTime(s.queuedAt), " (", age(Date.parse(s.createdAt)), " ago)"),
        h("dt", {}, "Started"),
        h("dd", {}, formatTime(s.startedAt)),
        h("dt", {}, "Finished"),
        h("dd", {}, formatTime(s.finishedAt)),
        h("dt", {}, "Attempts"),
        h("dd", {}, s.attempts, s.taskId ? ` · task ${s.taskId}` : ""),
        s.retryOf ? h("dt", {}, "Retry of") : null,
        s.retryOf ? h("dd", {}, h("a", { href: `#/scans/${s.retryOf.id}` }, s.retryOf.id)) : null,
        h("dt", {}, "Findings"),
        h("dd", {}, SEVERITIES.map((severity) => h("span", { class: `count-chip sev-${severity.toLowerCase()}` }, `${severity.toLowerCase()} ${counts[severity.toLowerCase() as keyof typeof counts]}`))),
      ),
      h("div", { class: "progress-cell wide" }, progressBar(s.status, s.progress)),
      s.errorCode ? h("p", { class: "error-box" }, h("strong", {}, s.errorCode), `: ${s.errorMessage ?? ""}`) : null,
      h(
        "div",
        { class: "toolbar" },
        isActive(s.status) ? h("button", { class: "danger", onclick: () => void act("cancel") }, "Cancel scan") : null,
        s.status === "FAILED" || s.status === "CANCELLED" ? h("button", { onclick: () => void act("retry") }, "Retry scan") : null,
      ),
    );
  }

  function renderTimeline(events: ScanEvent[]) {
    replaceChildren(
      timeline,
      events.map((event) =>
        h("tr", { class: `event kind-${event.kind.toLowerCase()}` }, h("td", {}, event.seq), h("td", {}, formatTime(event.createdAt)), h("td", {}, event.kind), h("td", { class: "mono" }, event.code ?? ""), h("td", {}, event.message)),
      ),
    );
  }

  function renderFindings(detail: ScanDetail) {
    const findings = detail.findings.edges.map(({ node }) => node);
    replaceChildren(
      findingsBody,
      findings.length
        ? findings.map((finding) =>
            h(
              "tr",
              { class: "finding" },
              h("td", {}, h("span", { class: `tag sev-${finding.severity.toLowerCase()}` }, finding.severity)),
              h("td", { class: "mono" }, finding.ruleId),
              h("td", { class: "mono path" }, finding.path),
              h("td", {}, finding.endLine && finding.endLine !== finding.line ? `${finding.line}–${finding.endLine}` : finding.line),
              h("td", {}, h("code", { class: "snippet" }, finding.snippet ?? "")),
            ),
          )
        : h("tr", {}, h("td", { colspan: "5", class: "empty" }, isActive(detail.status) ? "No findings yet." : "No findings.")),
    );
    findingsNote.textContent = detail.findings.pageInfo.hasNextPage ? "The first 100 findings are shown; the SARIF download has them all." : "";
  }

  async function load() {
    try {
      const { scan: detail } = await api.request<{ scan: ScanDetail }>(SCAN_DETAIL, {
        id: scanId,
        severity: filters.severity.size ? [...filters.severity] : null,
        ruleId: filters.ruleId || null,
      });
      scan = detail;
      renderHeader();
      renderTimeline(detail.events.edges.map(({ node }) => node));
      renderFindings(detail);
    } catch (error) {
      replaceChildren(header, h("p", { class: "error-box" }, describe(error)));
    }
  }

  async function act(action: "cancel" | "retry") {
    if (!scan) return;
    if (!confirmed(action === "cancel" ? `Cancel scan ${scan.label ?? scan.id}?` : `Queue a new scan of this archive?`)) return;
    try {
      if (action === "cancel") await api.request(CANCEL_SCAN, { id: scan.id });
      else {
        const { retryScan } = await api.request<{ retryScan: ScanRow }>(RETRY_SCAN, { id: scan.id });
        location.hash = `#/scans/${retryScan.id}`;
        return;
      }
      await load();
    } catch (error) {
      report(describe(error), true);
    }
  }

  async function downloadSarif() {
    try {
      const blob = await api.sarif(scanId);
      const link = h("a", { href: URL.createObjectURL(blob), download: `vega-${scanId}.sarif` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    } catch (error) {
      report(describe(error), true);
    }
  }

  const subscriptions = [
    api.subscribe(SCAN_STATE_CHANGED, { scanId }, () => void load()),
    api.subscribe<{ scanProgress: { progress: Progress } }>(SCAN_PROGRESS, { scanId }, ({ scanProgress }) => {
      if (!scan) return;
      scan.progress = scanProgress.progress;
      if (scan.status === "STARTING") scan.status = "RUNNING";
      renderHeader();
    }),
  ];

  void load();
  return {
    element,
    reload: load,
    dispose() {
      for (const unsubscribe of subscriptions) unsubscribe();
    },
  };
}
