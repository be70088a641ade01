/** The scan state machine's table and status lists, read directly: no database, no server. */
import { describe, expect, it } from "vitest";
import { activeStatuses, finishedStatuses, scanTransitions } from "../../api/services/scan-state.ts";
import { ScanStatus } from "../../api/generated/prisma/enums.ts";

const allStatuses = Object.values(ScanStatus);
const mayGo = (from: ScanStatus, to: ScanStatus) => scanTransitions[from].includes(to);

describe("the transitions table", () => {
  it("has a row for every status, and names only statuses that exist", () => {
    expect(Object.keys(scanTransitions).sort()).toEqual([...allStatuses].sort());
    for (const targets of Object.values(scanTransitions)) for (const target of targets) expect(allStatuses).toContain(target);
  });

  it("lets a finished scan go nowhere", () => {
    for (const status of finishedStatuses) expect(scanTransitions[status]).toEqual([]);
  });

  it("lets every active scan be cancelled or failed", () => {
    for (const status of activeStatuses) {
      expect(mayGo(status, "CANCELLED")).toBe(true);
      expect(mayGo(status, "FAILED")).toBe(true);
    }
  });

  it("succeeds only from RUNNING, and runs only from STARTING", () => {
    expect(allStatuses.filter((from) => mayGo(from, "SUCCEEDED"))).toEqual(["RUNNING"]);
    expect(allStatuses.filter((from) => mayGo(from, "RUNNING"))).toEqual(["STARTING"]);
  });

  it("queues again only an orphaned claim (STARTING), never a running scan", () => {
    expect(allStatuses.filter((from) => mayGo(from, "QUEUED"))).toEqual(["STARTING"]);
    expect(mayGo("RUNNING", "QUEUED")).toBe(false);
  });

  it("reaches every status from QUEUED", () => {
    const reached = new Set<ScanStatus>(["QUEUED"]);
    for (let grown = true; grown; ) {
      grown = false;
      for (const from of [...reached]) for (const to of scanTransitions[from]) if (!reached.has(to)) grown = Boolean(reached.add(to));
    }
    expect([...reached].sort()).toEqual([...allStatuses].sort());
  });
});

describe("the status lists", () => {
  it("split every status into active and finished, once each", () => {
    expect([...activeStatuses, ...finishedStatuses].sort()).toEqual([...allStatuses].sort());
    expect(activeStatuses.filter((status) => finishedStatuses.includes(status))).toEqual([]);
  });

  it("call active exactly the statuses with a way out", () => {
    expect(allStatuses.filter((status) => scanTransitions[status].length > 0).sort()).toEqual([...activeStatuses].sort());
  });
});
