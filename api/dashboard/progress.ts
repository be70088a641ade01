/**
 * One bar for a scan's whole run: each phase of the runner's reports fills
 * its share (downloading and extracting are short, analysis is most of the
 * work), so the bar only moves forward as the phases follow each other.
 */
import { h } from "./dom.ts";
import type { Progress, ScanStatus } from "./types.ts";

const PHASE_SPAN: Record<Progress["phase"], [number, number]> = {
  DOWNLOADING: [0, 0.05],
  EXTRACTING: [0.05, 0.15],
  ANALYZING: [0.15, 0.95],
  REPORTING: [0.95, 1],
};

function phaseFraction(progress: Progress): number {
  const files = progress.filesTotal ? (progress.filesDone ?? 0) / progress.filesTotal : undefined;
  const bytes = progress.bytesTotal && Number(progress.bytesTotal) > 0 ? Number(progress.bytesDone ?? 0) / Number(progress.bytesTotal) : undefined;
  const fraction = progress.phase === "DOWNLOADING" ? (bytes ?? files) : (files ?? bytes);
  return Math.min(1, Math.max(0, fraction ?? 0));
}

export function overallFraction(status: ScanStatus, progress: Progress | null): number {
  if (status === "SUCCEEDED") return 1;
  if (!progress) return 0;
  const [start, end] = PHASE_SPAN[progress.phase];
  return start + (end - start) * phaseFraction(progress);
}

export function progressBar(status: ScanStatus, progress: Progress | null): HTMLElement {
  const fraction = overallFraction(status, progress);
  const percent = Math.round(fraction * 100);
  const detail = progress
    ? `${progress.phase.toLowerCase()}${progress.filesTotal ? ` ${progress.filesDone ?? 0}/${progress.filesTotal} files` : ""}, ${progress.findings} findings`
    : status === "QUEUED"
      ? "waiting for a worker"
      : "";
  const fill = h("div", { class: "progress-fill" });
  // Through the CSSOM: the page's CSP refuses style attributes in markup.
  fill.style.width = `${percent}%`;
  return h(
    "div",
    { class: `progress ${status.toLowerCase()}`, title: detail, "data-fraction": fraction.toFixed(4) },
    h("div", { class: "progress-track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(percent) }, fill),
    h("span", { class: "progress-label" }, status === "SUCCEEDED" || status === "FAILED" || status === "CANCELLED" ? `${percent}%` : detail ? `${percent}% · ${detail}` : `${percent}%`),
  );
}
