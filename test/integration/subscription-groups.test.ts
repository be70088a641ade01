/**
 * The grouped fan-out (api/http/subscription-groups.ts): subscribers of one
 * operation share an execution per event only when their tokens see the same
 * things, and each still receives only what its own token may see.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureUserRow, insertScan } from "../support/fixtures.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { connectWs, type EventStream, type WsConnection } from "../support/ws.ts";

/** No filter: every status change of every scan the caller may see. */
const ALL_CHANGES = `subscription { scanStateChanged { to scan { id workspace { id } } } }`;
const CANCEL = `mutation ($id: ID!) { cancelScan(id: $id) { status } }`;

let server: TestServer;
const connections: WsConnection[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterEach(async () => {
  await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
});
afterAll(() => server?.close());

/** Subscribes on a connection of its own and resolves once the subscriber has joined its group. */
async function subscribed(token: string): Promise<EventStream<{ scanStateChanged: { to: string; scan: { id: string } } }>> {
  const groups = server.app.deps.subscriptionGroups;
  const joined = new Promise<void>((resolve) => {
    const stop = groups.onJoin(() => {
      stop();
      resolve();
    });
  });
  const connection = connectWs(server.wsUrl, token);
  connections.push(connection);
  const events = connection.subscribe(ALL_CHANGES);
  await joined;
  return events;
}

const executions = () => server.app.deps.subscriptionGroups.stats().executions;

describe("grouped subscription fan-out", () => {
  it("executes once per event for subscribers who see the same, and gives each subscriber only what its token may see", async () => {
    const ginaScan = await insertScan(server.app.deps.prisma, { ownerId: "gina" });
    const hankScan = await insertScan(server.app.deps.prisma, { ownerId: "hank" });
    const [gina, hank] = [await server.token("gina"), await server.token("hank")];

    const ginaTab1 = await subscribed(gina);
    const ginaTab2 = await subscribed(await server.token("gina")); // another token of the same person
    const hankTab = await subscribed(hank);
    const opsTab1 = await subscribed(await server.token("ops-olivia", { groups: ["vega-ops"] }));
    const opsTab2 = await subscribed(await server.token("ops-oscar", { groups: ["vega-ops"] })); // another operator
    // gina's two, hank's one, the two operators': three groups of five subscribers.
    expect(server.app.deps.subscriptionGroups.stats()).toMatchObject({ groups: 3, members: 5 });

    const before = executions();
    expect((await server.gql(CANCEL, { id: ginaScan.id }, gina)).body.data.cancelScan.status).toBe("CANCELLED");
    const ginaEvent = { to: "CANCELLED", scan: { id: ginaScan.id, workspace: { id: ginaScan.workspaceId } } };
    for (const tab of [ginaTab1, ginaTab2, opsTab1, opsTab2]) expect((await tab.next()).scanStateChanged).toEqual(ginaEvent);

    expect((await server.gql(CANCEL, { id: hankScan.id }, hank)).body.data.cancelScan.status).toBe("CANCELLED");
    const hankEvent = { to: "CANCELLED", scan: { id: hankScan.id, workspace: { id: hankScan.workspaceId } } };
    // hank's first event is his own scan's: gina's, published before it, never reached him.
    expect((await hankTab.next()).scanStateChanged).toEqual(hankEvent);
    for (const tab of [opsTab1, opsTab2]) expect((await tab.next()).scanStateChanged).toEqual(hankEvent);

    // One more of gina's, as a marker: her tabs get it next, so hank's scan never came between.
    const marker = await insertScan(server.app.deps.prisma, { ownerId: "gina" });
    await server.gql(CANCEL, { id: marker.id }, gina);
    for (const tab of [ginaTab1, ginaTab2]) expect((await tab.next()).scanStateChanged.scan.id).toBe(marker.id);
    for (const tab of [ginaTab1, ginaTab2]) expect(tab.received.map((event) => event.scanStateChanged.scan.id)).toEqual([ginaScan.id, marker.id]);
    expect(hankTab.received.map((event) => event.scanStateChanged.scan.id)).toEqual([hankScan.id]);
    for (const tab of [opsTab1, opsTab2]) await tab.nextMatching((event) => event.scanStateChanged.scan.id === marker.id);

    // Per event, one execution per group that may see it: gina's and the operators' (2), hank's and the
    // operators' (2), gina's and the operators' (2); not one per subscriber (4, 3, 4).
    expect(executions() - before).toBe(6);
    const metrics = await server.app.deps.metrics.registry.getSingleMetricAsString("vega_subscription_executions_total");
    expect(metrics).toMatch(/^vega_subscription_executions_total \d+$/m);
  });

  it("keeps a subscriber who joined a workspace after an earlier subscription of theirs out of that one's group", async () => {
    const irisScan = await insertScan(server.app.deps.prisma, { ownerId: "iris" });
    const jackWorkspace = await ensureUserRow(server.app.deps.prisma, "jack");
    const jackScan = await insertScan(server.app.deps.prisma, { ownerId: "jack", workspaceId: jackWorkspace });
    const iris = await server.token("iris");

    const before = await subscribed(iris);
    await server.app.deps.prisma.membership.create({ data: { workspaceId: jackWorkspace, userId: "iris", role: "MEMBER" } });
    const after = await subscribed(iris);

    await server.gql(CANCEL, { id: jackScan.id }, await server.token("jack"));
    expect((await after.next()).scanStateChanged.scan.id).toBe(jackScan.id);
    await server.gql(CANCEL, { id: irisScan.id }, iris);
    // The earlier subscription saw iris's workspaces as they were when it started: jack's scan is not among them.
    expect((await before.next()).scanStateChanged.scan.id).toBe(irisScan.id);
    expect((await after.next()).scanStateChanged.scan.id).toBe(irisScan.id);
    expect(before.received).toHaveLength(1);
  });
});
