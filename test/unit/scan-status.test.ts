/**
 * The scan state machine (shared/scan-status.ts): its status names are the
 * database's, and its lists (active, finished, claimed) say what the
 * transitions table says.
 */
import { describe, expect, it } from "vitest";
import { ScanStatus } from "../../api/generated/prisma/enums.ts";
import {
  SCAN_STATUSES,
  activeStatuses,
  canTransition,
  claimedStatuses,
  finishedStatuses,
  legalSources,
  scanTransitions,
  type ScanStatusName,
} from "../../shared/scan-status.ts";
import { enumValuesInMigrations } from "../support/enum-migrations.ts";

/** Every status reachable from `from` by legal transitions, `from` excluded. */
function reachableFrom(from: ScanStatusName): Set<ScanStatusName> {
  const seen = new Set<ScanStatusName>();
  const queue = [...scanTransitions[from]];
  while (queue.length > 0) {
    const next = queue.shift()!;
    if (seen.has(next)) continue;
    seen.add(next);
    queue.push(...scanTransitions[next]);
  }
  return seen;
}

describe("the status lists agree with the transitions table", () => {
  it("names every status once, as the table's keys", () => {
    expect(new Set(SCAN_STATUSES).size).toBe(SCAN_STATUSES.length);
    expect(Object.keys(scanTransitions).sort()).toEqual([...SCAN_STATUSES].sort());
    for (const targets of Object.values(scanTransitions)) for (const to of targets) expect(SCAN_STATUSES).toContain(to);
  });

  it("calls finished exactly the statuses with no way out, and active exactly the others", () => {
    expect([...finishedStatuses].sort()).toEqual(SCAN_STATUSES.filter((status) => scanTransitions[status].length === 0).sort());
    expect([...activeStatuses].sort()).toEqual(SCAN_STATUSES.filter((status) => scanTransitions[status].length > 0).sort());
  });

  it("lets every active scan be cancelled and reach a finished status", () => {
    for (const status of activeStatuses) {
      expect(canTransition(status, "CANCELLED"), `${status} → CANCELLED`).toBe(true);
      expect([...reachableFrom(status)].some((next) => finishedStatuses.includes(next)), `${status} reaches an end`).toBe(true);
    }
  });

  it("calls claimed the active statuses after a claim: entered from QUEUED by STARTING, and what STARTING leads to", () => {
    expect(claimedStatuses.every((status) => activeStatuses.includes(status))).toBe(true);
    expect(claimedStatuses).not.toContain("QUEUED");
    expect([...claimedStatuses].sort()).toEqual(activeStatuses.filter((status) => status !== "QUEUED" && reachableFrom("QUEUED").has(status)).sort());
  });

  it("never leaves a finished status and never enters QUEUED except from STARTING (an orphaned claim)", () => {
    for (const status of finishedStatuses) expect(scanTransitions[status]).toEqual([]);
    expect(legalSources("QUEUED")).toEqual(["STARTING"]);
  });
});

describe("the status names are the database's", () => {
  it("match the generated Prisma enum and the PostgreSQL enum the migrations create, in order", () => {
    expect(Object.values(ScanStatus)).toEqual([...SCAN_STATUSES]);
    expect(enumValuesInMigrations("ScanStatus")).toEqual([...SCAN_STATUSES]);
  });
});
