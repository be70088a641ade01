/**
 * A pass-through HTTP proxy in front of the test API server. A worker given
 * the gate's URL as VEGA_API_URL speaks to the API through it, and so do the
 * runners it starts (they get the worker's API URL). A test can hold chosen
 * GraphQL operations in flight, so that a race with real processes happens in a
 * known order: cancel a scan while the worker's reportScanStarted waits, or
 * while a runner waits on its addFindings.
 *
 * Everything else (artifact downloads, registration, heartbeats) passes
 * through untouched.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface GraphQLCall {
  /** The operation's name as written in the document (`mutation ReportScanStarted(...)`). */
  operationName: string | undefined;
  variables: Record<string, any>;
}

export interface Hold {
  /** Resolves with the first call held. */
  readonly first: Promise<GraphQLCall>;
  /** The calls held so far (released or dropped ones included). */
  readonly held: readonly GraphQLCall[];
  /** Sends the held calls on, and lets later ones through. */
  release(): void;
  /** Closes the connections of the held calls (their clients see a network error), and lets later ones through. */
  drop(): void;
}

export interface ApiGate {
  /** The gate's base URL (artifact downloads use it too). */
  url: string;
  graphqlUrl: string;
  /** Every GraphQL call seen, in arrival order. */
  readonly calls: readonly GraphQLCall[];
  /** Holds the calls `match` accepts, after letting the first `skip` of them through, until release() or drop(). */
  hold(match: (call: GraphQLCall) => boolean, options?: { skip?: number }): Hold;
  close(): Promise<void>;
}

const operationNameOf = (query: unknown): string | undefined =>
  typeof query === "string" ? /^\s*(?:query|mutation|subscription)\s+([A-Za-z_][A-Za-z0-9_]*)/.exec(query)?.[1] : undefined;

interface Pending {
  call: GraphQLCall;
  forward(): void;
  drop(): void;
}

interface ActiveHold {
  match: (call: GraphQLCall) => boolean;
  skip: number;
  open: boolean;
  pending: Pending[];
  held: GraphQLCall[];
  onFirst: (call: GraphQLCall) => void;
}

export async function startApiGate(targetBaseUrl: string): Promise<ApiGate> {
  const target = new URL(targetBaseUrl);
  const agent = new http.Agent({ keepAlive: true });
  const calls: GraphQLCall[] = [];
  const holds: ActiveHold[] = [];

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const forward = () => {
        const headers = { ...req.headers, host: target.host };
        const upstream = http.request(
          { host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        upstream.on("error", () => res.destroy());
        upstream.end(body);
      };
      const drop = () => req.socket.destroy();

      let call: GraphQLCall | undefined;
      if (req.method === "POST" && String(req.headers["content-type"] ?? "").startsWith("application/json")) {
        try {
          const parsed = JSON.parse(body.toString("utf8")) as { query?: unknown; variables?: Record<string, any> };
          call = { operationName: operationNameOf(parsed.query), variables: parsed.variables ?? {} };
          calls.push(call);
        } catch {
          // Not GraphQL: passed on as it is.
        }
      }
      const hold = call && holds.find((candidate) => candidate.open && candidate.match(call!) && candidate.skip-- <= 0);
      if (!call || !hold) return forward();
      hold.held.push(call);
      hold.pending.push({ call, forward, drop });
      if (hold.held.length === 1) hold.onFirst(call);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  const settle = (hold: ActiveHold, how: "forward" | "drop") => {
    hold.open = false;
    holds.splice(holds.indexOf(hold), 1);
    for (const pending of hold.pending.splice(0)) pending[how]();
  };

  return {
    url,
    graphqlUrl: `${url}/graphql`,
    calls,
    hold(match, { skip = 0 } = {}) {
      let onFirst!: (call: GraphQLCall) => void;
      const first = new Promise<GraphQLCall>((resolve) => (onFirst = resolve));
      const hold: ActiveHold = { match, skip, open: true, pending: [], held: [], onFirst };
      holds.push(hold);
      return {
        first,
        held: hold.held,
        release: () => hold.open && settle(hold, "forward"),
        drop: () => hold.open && settle(hold, "drop"),
      };
    },
    async close() {
      for (const hold of [...holds]) settle(hold, "drop");
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
      agent.destroy();
    },
  };
}
