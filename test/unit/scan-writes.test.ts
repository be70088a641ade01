/**
 * The one door for Scan writes (api/services/scan-state.ts `writeScans`):
 * what a transaction changed is published on scanStateChanged after it
 * commits, in order, and nothing is published for a transaction that rolled
 * back. On an in-memory PGlite (or PostgreSQL with VEGA_TEST_DATABASE_URL).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createVegaPubSub, type ScanStateChangePayload } from "../../api/pubsub.ts";
import { writeScans } from "../../api/services/scan-state.ts";
import { openTestDatabase, type TestDatabase } from "../support/database.ts";

describe("writing scans through the door", () => {
  let db: TestDatabase;
  let workspaceId: string;
  let artifactId: string;
  const published: ScanStateChangePayload[] = [];
  const { pubsub } = createVegaPubSub({ redisUrl: undefined, redisChannelPrefix: "" });
  const publishing = { ...pubsub, publish: ((topic: string, payload: ScanStateChangePayload) => published.push(payload)) as typeof pubsub.publish };

  beforeAll(async () => {
    db = await openTestDatabase();
    const prisma = db.database.prisma;
    await prisma.user.create({ data: { id: "owner", groups: [] } });
    const workspace = await prisma.workspace.create({ data: { name: "team", ownerId: "owner" } });
    workspaceId = workspace.id;
    const artifact = await prisma.artifact.create({
      data: { kind: "SOURCE", workspaceId, ownerId: "owner", storageKey: "sources/unit", sizeBytes: 1n, sha256: "0".repeat(64) },
    });
    artifactId = artifact.id;
    // Migrating a fresh database takes a while on a busy machine.
  }, 180_000);
  afterAll(async () => {
    await db?.close();
  });

  const deps = () => ({ prisma: db.database.prisma, pubsub: publishing });
  const newScan = () => ({ workspaceId, ownerId: "owner", label: null, sourceArtifactId: artifactId });

  it("publishes the creation and a transition of one transaction after it commits, in order", async () => {
    published.length = 0;
    let seenInside = -1;
    const scanId = await writeScans(deps(), async (writes) => {
      const { scan } = await writes.createWithFirstEvent(newScan(), { entries: 1 });
      await writes.transition({ scanId: scan.id, to: "CANCELLED", from: ["QUEUED"] });
      seenInside = published.length;
      return scan.id;
    });
    expect(seenInside).toBe(0);
    expect(published.map(({ scanId: id, from, to }) => ({ id, from, to }))).toEqual([
      { id: scanId, from: null, to: "QUEUED" },
      { id: scanId, from: "QUEUED", to: "CANCELLED" },
    ]);
    const events = await db.database.prisma.scanEvent.findMany({ where: { scanId }, orderBy: { seq: "asc" } });
    expect(events.map((event) => [event.seq, event.code])).toEqual([
      [1, "QUEUED"],
      [2, "CANCELLED"],
    ]);
    expect(events[0].data).toEqual({ from: null, to: "QUEUED", entries: 1 });
  });

  it("publishes nothing, and leaves no scan, when the transaction rolls back", async () => {
    published.length = 0;
    const before = await db.database.prisma.scan.count();
    await expect(
      writeScans(deps(), async (writes) => {
        await writes.createWithFirstEvent(newScan());
        throw new Error("refused after the write");
      }),
    ).rejects.toThrow("refused after the write");
    expect(published).toEqual([]);
    expect(await db.database.prisma.scan.count()).toBe(before);
  });
});
