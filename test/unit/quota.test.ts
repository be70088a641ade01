/**
 * The active-scan quota (api/services/quota.ts) on an in-memory database, no
 * server: which scans count, where the limit starts, and that the binding
 * check holds under concurrent submissions.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorCodeOf } from "../../shared/errors.ts";
import { activeScanQuota, checkActiveScanQuota, withActiveScanQuota } from "../../api/services/quota.ts";
import type { Viewer } from "../../api/context.ts";
import { openTestDatabase, type TestDatabase } from "../support/database.ts";
import { insertScan } from "../support/fixtures.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await openTestDatabase();
});
afterAll(() => db?.close());

const limit = (maxActiveScansPerUser: number) => ({ maxActiveScansPerUser });
const quotaDeps = (maxActiveScansPerUser: number) => ({ prisma: db.database.prisma, config: limit(maxActiveScansPerUser) });
/** A person's viewer, as authenticate() builds it for a user token. */
const person = (id: string): Viewer => ({ principal: { sub: id, groups: [], scope: "user" }, isOperator: false, user: { id, personalWorkspaceId: `${id}-personal` } });
const refusal = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => errorCodeOf(error));

describe("the active-scan quota", () => {
  it("counts QUEUED, STARTING and RUNNING scans, not finished ones, and never answers a negative remainder", async () => {
    const prisma = db.database.prisma;
    for (const status of ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const) {
      await insertScan(prisma, { ownerId: "quinn", status, events: 0 });
    }
    expect(await activeScanQuota(quotaDeps(5), "quinn")).toEqual({ limit: 5, active: 3, remaining: 2 });
    expect(await activeScanQuota(quotaDeps(2), "quinn")).toEqual({ limit: 2, active: 3, remaining: 0 });
    expect(await activeScanQuota(quotaDeps(2), "nobody")).toEqual({ limit: 2, active: 0, remaining: 2 });
  });

  it("refuses with QUOTA_EXCEEDED at the limit, not one below it", async () => {
    const prisma = db.database.prisma;
    await insertScan(prisma, { ownerId: "rita", status: "QUEUED", events: 0 });
    await insertScan(prisma, { ownerId: "rita", status: "RUNNING", events: 0 });
    expect(await refusal(checkActiveScanQuota(quotaDeps(3), person("rita")))).toBeUndefined();
    expect(await refusal(checkActiveScanQuota(quotaDeps(2), person("rita")))).toBe("QUOTA_EXCEEDED");
  });

  it("lets exactly the limit's worth of concurrent submissions through", async () => {
    const prisma = db.database.prisma;
    const template = await insertScan(prisma, { ownerId: "sam", status: "SUCCEEDED", events: 0 });
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, () =>
        refusal(
          withActiveScanQuota(prisma, limit(3), "sam", (tx) =>
            tx.scan.create({ data: { ownerId: "sam", workspaceId: template.workspaceId, sourceArtifactId: template.sourceArtifactId, status: "QUEUED" } }),
          ),
        ),
      ),
    );
    expect(outcomes.filter((code) => code === undefined)).toHaveLength(3);
    expect(outcomes.filter((code) => code === "QUOTA_EXCEEDED")).toHaveLength(5);
    expect((await activeScanQuota(quotaDeps(3), "sam")).active).toBe(3);
  });
});
