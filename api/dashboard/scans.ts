/**
 * The scans panel: the newest 50 scans (every scan for an operator, through
 * Ops.scans and its filter; the caller's own otherwise), kept live by
 * scanStateChanged, with a scanProgress subscription for each scan in progress.
 */
import type { Api, ApiError } from "./api.ts";
import { age, confirmed, h, replaceChildren } from "./dom.ts";
import { CANCEL_SCAN, CANCEL_SCANS, MY_SCANS, OPS_SCANS, RETRY_SCAN, SCAN_PROGRESS, SCAN_STATE_CHANGED, SUBMIT_SCAN } from "./operations.ts";
import { progressBar } from "./progress.ts";
import { ACTIVE, isActive, STATUSES, type Progress, type ScanRow, type ScanStatus, type Viewer } from "./types.ts";

export interface ScansPanel {
  element: HTMLElement;
  reload(): Promise<void>;
  /** A scan's row changed elsewhere (the scan page, a submission). */
  upsert(scan: ScanRow): void;
  dispose(): void;
}

export function statusBadge(status: ScanStatus) {
  return h("span", { class: `status status-${status.toLowerCase()}` }, status);
}

export function scanLink(scan: Pick<ScanRow, "id" | "label">) {
  return h("a", { href: `#/scans/${scan.id}`, class: "scan-link" }, scan.label || scan.id.slice(0, 8));
}

export function createScansPanel(api: Api, viewer: Viewer, report: (message: string, error?: boolean) => void, onChange: () => void): ScansPanel {
  const rows = new Map<string, ScanRow>();
  const progressSubscriptions = new Map<string, () => void>();
  const filter = { status: "" as "" | ScanStatus, userId: "" };

  const tbody = h("tbody");
  const statusSelect = h(
    "select",
    { "aria-label": "Status", onchange: () => ((filter.status = statusSelect.value as ScanStatus | ""), void panel.reload()) },
    h("option", { value: "" }, "every status"),
    STATUSES.map((status) => h("option", { value: status }, status)),
  );
  const userInput = h("input", { type: "search", placeholder: "user id", "aria-label": "User", onchange: () => ((filter.userId = userInput.value.trim()), void panel.reload()) });
  const bulkCancel = h("button", { class: "danger", onclick: () => void cancelMatching() }, "Cancel matching active scans");

  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("label", {}, "Status ", statusSelect),
    viewer.isOperator ? h("label", {}, "User ", userInput) : null,
    viewer.isOperator ? bulkCancel : null,
  );

  const element = h(
    "section",
    { class: "panel scans", id: "scans" },
    h("h2", {}, viewer.isOperator ? "Scans" : "Your scans"),
    toolbar,
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["Scan", "Status", viewer.isOperator ? "Owner" : null, "Workspace", "Age", "Progress", "Error", ""].filter((t) => t !== null).map((title) => h("th", {}, title)))),
      tbody,
    ),
  );

  const matches = (scan: ScanRow) => (!filter.status || scan.status === filter.status || rows.has(scan.id)) && (!filter.userId || scan.owner.id === filter.userId);

  function render() {
    const ordered = [...rows.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt)).slice(0, 50);
    replaceChildren(tbody, ordered.length ? ordered.map(row) : h("tr", {}, h("td", { colspan: "8", class: "empty" }, "No scans yet.")));
  }

  function row(scan: ScanRow) {
    return h(
      "tr",
      { "data-scan-id": scan.id, "data-status": scan.status },
      h("td", {}, scanLink(scan)),
      h("td", { class: "status-cell" }, statusBadge(scan.status)),
      viewer.isOperator ? h("td", { class: "owner" }, scan.owner.id) : null,
      h("td", {}, scan.workspace.name),
      h("td", {}, age(Date.parse(scan.createdAt))),
      h("td", { class: "progress-cell" }, progressBar(scan.status, scan.progress)),
      h("td", { class: "error-code" }, scan.errorCode ?? ""),
      h("td", { class: "actions" }, actions(scan)),
    );
  }

  function actions(scan: ScanRow) {
    if (isActive(scan.status)) return h("button", { class: "danger small", onclick: () => void cancel(scan) }, "Cancel");
    if (scan.status === "FAILED" || scan.status === "CANCELLED") return h("button", { class: "small", onclick: () => void retry(scan) }, "Retry");
    return null;
  }

  async function cancel(scan: ScanRow) {
    if (!confirmed(`Cancel scan ${scan.label ?? scan.id}?`)) return;
    try {
      panel.upsert((await api.request<{ cancelScan: ScanRow }>(CANCEL_SCAN, { id: scan.id })).cancelScan);
      report(`Scan ${scan.id} cancelled.`);
    } catch (error) {
      report(describe(error), true);
    }
  }

  async function retry(scan: ScanRow) {
    if (!confirmed(`Queue a new scan of ${scan.label ?? scan.id}'s archive?`)) return;
    try {
      panel.upsert((await api.request<{ retryScan: ScanRow }>(RETRY_SCAN, { id: scan.id })).retryScan);
      report(`Retry of ${scan.id} queued.`);
    } catch (error) {
      report(describe(error), true);
    }
  }

  async function cancelMatching() {
    const statuses = filter.status ? [filter.status].filter((status) => ACTIVE.includes(status)) : ACTIVE;
    if (statuses.length === 0) return report("Only queued, starting and running scans can be cancelled.", true);
    const scope = [statuses.join(", "), filter.userId ? `of ${filter.userId}` : "of every user"].join(" ");
    if (!confirmed(`Cancel every ${scope} scan (up to 1000)?`)) return;
    try {
      const filterInput = { status: statuses, ...(filter.userId ? { userId: filter.userId } : {}) };
      const { cancelScans } = await api.request<{ cancelScans: { cancelled: number } }>(CANCEL_SCANS, { filter: filterInput });
      report(`${cancelScans.cancelled} scans cancelled.`);
      await panel.reload();
    } catch (error) {
      report(describe(error), true);
    }
  }

  /** Watches the progress of each scan a runner works on, and of those only. */
  function followProgress() {
    for (const [id, unsubscribe] of progressSubscriptions) {
      const scan = rows.get(id);
      if (!scan || !isActive(scan.status)) {
        unsubscribe();
        progressSubscriptions.delete(id);
      }
    }
    for (const scan of rows.values()) {
      if (!isActive(scan.status) || progressSubscriptions.has(scan.id)) continue;
      progressSubscriptions.set(
        scan.id,
        api.subscribe<{ scanProgress: { scanId: string; progress: Progress } }>(SCAN_PROGRESS, { scanId: scan.id }, ({ scanProgress }) => {
          const known = rows.get(scanProgress.scanId);
          if (!known) return;
          known.progress = scanProgress.progress;
          // A runner's first report moves its scan to RUNNING (its state event follows).
          if (known.status === "STARTING") known.status = "RUNNING";
          replaceRow(known);
        }),
      );
    }
  }

  function replaceRow(scan: ScanRow) {
    const current = tbody.querySelector(`tr[data-scan-id="${CSS.escape(scan.id)}"]`);
    if (current) current.replaceWith(row(scan));
    else render();
  }

  const stateSubscription = api.subscribe<{ scanStateChanged: { scan: ScanRow } }>(SCAN_STATE_CHANGED, {}, ({ scanStateChanged }) => {
    const { scan } = scanStateChanged;
    if (!rows.has(scan.id) && !matches(scan)) return onChange();
    panel.upsert(scan);
    onChange();
  });

  const panel: ScansPanel = {
    element,
    async reload() {
      try {
        const scans = viewer.isOperator
          ? (
              await api.request<{ ops: { scans: { edges: { node: ScanRow }[] } } }>(OPS_SCANS, {
                filter: { ...(filter.status ? { status: [filter.status] } : {}), ...(filter.userId ? { userId: filter.userId } : {}) },
              })
            ).ops.scans
          : (await api.request<{ scans: { edges: { node: ScanRow }[] } }>(MY_SCANS, { status: filter.status ? [filter.status] : null })).scans;
        rows.clear();
        for (const { node } of scans.edges) rows.set(node.id, node);
        render();
        followProgress();
      } catch (error) {
        report(describe(error), true);
      }
    },
    upsert(scan) {
      const known = rows.get(scan.id);
      // A state event can overtake a progress report: keep the newer progress.
      if (known?.progress && scan.progress && known.progress.updatedAt > scan.progress.updatedAt) scan.progress = known.progress;
      rows.set(scan.id, scan);
      replaceRow(scan);
      followProgress();
    },
    dispose() {
      stateSubscription();
      for (const unsubscribe of progressSubscriptions.values()) unsubscribe();
      progressSubscriptions.clear();
    },
  };
  return panel;
}

/** The submit form of a user: a zip, an optional label and workspace; refusals shown with their code. */
export function createSubmitPanel(api: Api, viewer: Viewer, report: (message: string, error?: boolean) => void, onSubmitted: (scan: ScanRow) => void) {
  const file = h("input", { type: "file", accept: ".zip,application/zip", required: true, "aria-label": "Source archive (zip)" });
  const label = h("input", { type: "text", placeholder: "label (optional)", maxlength: "200", "aria-label": "Label" });
  const workspace = h(
    "select",
    { "aria-label": "Workspace" },
    viewer.workspaces.map((w) => h("option", { value: w.id, selected: w.personal }, w.personal ? `${w.name} (yours)` : w.name)),
  );
  const submit = h("button", { type: "submit", class: "primary" }, "Submit scan");
  const form = h(
    "form",
    {
      class: "submit-form",
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const chosen = file.files?.[0];
        if (!chosen) return report("Choose a zip archive first.", true);
        submit.disabled = true;
        try {
          const input = { source: null, label: label.value.trim() || null, workspaceId: workspace.value || null };
          const { submitScan } = await api.upload<{ submitScan: { scan: ScanRow } }>(SUBMIT_SCAN, { input }, "input.source", chosen);
          report(`Scan ${submitScan.scan.id} queued.`);
          form.reset();
          onSubmitted(submitScan.scan);
        } catch (error) {
          report(describe(error), true);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("label", {}, "Archive ", file),
    h("label", {}, "Label ", label),
    viewer.workspaces.length > 1 ? h("label", {}, "Workspace ", workspace) : null,
    submit,
    h("span", { class: "quota" }, `${viewer.quota.activeScans} of ${viewer.quota.maxActiveScans} active scans in use`),
  );
  return h("section", { class: "panel submit", id: "submit" }, h("h2", {}, "Submit a scan"), form);
}

/** An API refusal as the CLI shows it: its code, then its message. */
export function describe(error: unknown): string {
  const apiError = error as Partial<ApiError>;
  if (apiError?.code) return `${apiError.code}: ${apiError.message}`;
  return error instanceof Error ? error.message : String(error);
}
