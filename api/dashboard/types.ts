/** The shapes the page reads (a subset of schema.graphql's types). */
export type ScanStatus = "QUEUED" | "STARTING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";

export interface Progress {
  phase: "DOWNLOADING" | "EXTRACTING" | "ANALYZING" | "REPORTING";
  filesDone: number | null;
  filesTotal: number | null;
  bytesDone: string | null;
  bytesTotal: string | null;
  findings: number;
  updatedAt: string;
}

export interface ScanRow {
  id: string;
  status: ScanStatus;
  label: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  errorCode: string | null;
  owner: { id: string };
  workspace: { id: string; name: string };
  progress: Progress | null;
}

export interface Worker {
  id: string;
  name: string;
  host: string;
  version: string;
  capacity: number;
  activeScans: number;
  lastHeartbeatAt: string;
  secondsSinceHeartbeat: number;
  stale: boolean;
  draining: boolean;
}

export interface ClaimsPause {
  paused: boolean;
  reason: string | null;
  by: string | null;
  since: string | null;
}

export interface CleanupRun {
  id: string;
  status: "RUNNING" | "SUCCEEDED" | "FAILED";
  dryRun: boolean;
  trigger: string;
  triggeredBy: string | null;
  startedAt: string;
  finishedAt: string | null;
  bytesFreed: string;
  error: string | null;
  counts: Record<"artifacts" | "orphanFiles" | "sessions" | "uploadTemps" | "workers", number | null>;
}

export interface Viewer {
  id: string;
  isOperator: boolean;
  groups: string[];
  workspaces: { id: string; name: string; personal: boolean }[];
  quota: { activeScans: number; maxActiveScans: number; remaining: number };
}

export const STATUSES: ScanStatus[] = ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
export const ACTIVE: ScanStatus[] = ["QUEUED", "STARTING", "RUNNING"];
export const isActive = (status: ScanStatus) => ACTIVE.includes(status);
