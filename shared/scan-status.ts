/**
 * A scan's statuses and the state machine, read in one glance. The API's
 * scan-state.ts applies it (compare-and-set, event, publication), the schema
 * names the statuses from this list, and the worker and runner read the same
 * lists to tell a finished scan from one still held. The PostgreSQL enum
 * "ScanStatus" (prisma/schema.prisma) holds the same names; test/unit/scan-status.test.ts
 * keeps the two in step.
 */
export const SCAN_STATUSES = ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const;

export type ScanStatusName = (typeof SCAN_STATUSES)[number];

/** From each status, where a scan may go. */
export const scanTransitions: Readonly<Record<ScanStatusName, readonly ScanStatusName[]>> = {
  QUEUED: ["STARTING", "CANCELLED", "FAILED"],
  // STARTING → QUEUED: an orphaned claim (its worker died) goes back to the queue.
  STARTING: ["RUNNING", "QUEUED", "FAILED", "CANCELLED"],
  RUNNING: ["SUCCEEDED", "FAILED", "CANCELLED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
};

/** Statuses a scan can still leave: they count against the active-scan quota and can be cancelled. */
export const activeStatuses: readonly ScanStatusName[] = ["QUEUED", "STARTING", "RUNNING"];
/** Statuses with no way out (terminal): the scan's finishedAt is set when it enters one. */
export const finishedStatuses: readonly ScanStatusName[] = ["SUCCEEDED", "FAILED", "CANCELLED"];
/** Statuses in which a worker holds the scan (its workerId is set) and its runner may report. */
export const claimedStatuses: readonly ScanStatusName[] = ["STARTING", "RUNNING"];

export function canTransition(from: ScanStatusName, to: ScanStatusName): boolean {
  return scanTransitions[from].includes(to);
}

/** Every status that may move to `to`. */
export function legalSources(to: ScanStatusName): ScanStatusName[] {
  return SCAN_STATUSES.filter((status) => canTransition(status, to));
}

export const isFinished = (status: string): boolean => (finishedStatuses as readonly string[]).includes(status);
export const isActive = (status: string): boolean => (activeStatuses as readonly string[]).includes(status);
export const isClaimed = (status: string): boolean => (claimedStatuses as readonly string[]).includes(status);
