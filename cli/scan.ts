/**
 * `vega scan submit|list|show` and `vega workers`: the API as a user sees it,
 * over GraphQL only (the typed documents of cli/operations.graphql), at
 * VEGA_API_URL with VEGA_TOKEN, or with a token minted for the local user from
 * the server's key when this machine holds it (the embedded default's
 * VEGA_DATA_DIR/jwt-secret, or VEGA_JWT_SECRET).
 *
 * Results go to stdout (the scan id, tables, a summary); progress and
 * refusals to stderr. Exit 0 on success, 1 when the API refuses or a waited-for
 * scan does not succeed, 2 on a usage error.
 */
import { stat, access, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import os from "node:os";
import path from "node:path";
import { resolveSigningKey, signToken } from "../api/auth.ts";
import type { Config } from "../shared/config.ts";
import { ApiRequestError, createApiClient, type ApiRequest } from "../worker/api-client.ts";
import { helpOf, HelpRequested, parseCommandLine, UsageError } from "./args.ts";
import { COMMANDS } from "./commands.ts";
import { CliScanDocument, CliScansDocument, CliScanSarifDocument, CliSubmitScanDocument, CliWorkersDocument, type CliScanFragment, type ScanStatus } from "./generated/graphql.ts";
import { uploadScan } from "./upload.ts";

const TOKEN_TTL_SECONDS = 3600;
const WAIT_POLL_MS = 1000;
const SHOWN_FINDINGS = 10;
const ENDED: ReadonlySet<ScanStatus> = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const STATUSES: ReadonlySet<string> = new Set(["QUEUED", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]);

/** A refusal by the API, or a scan that did not succeed: printed as `vega: ...`, exit 1. */
export class ClientFailure extends Error {
  override name = "ClientFailure";
}

interface Client {
  graphqlUrl: string;
  token: string;
  request: ApiRequest;
}

function localUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return `uid-${process.getuid?.() ?? "unknown"}`;
  }
}

/**
 * VEGA_TOKEN, or one minted from the server's key. The embedded default's key
 * file is only read, never created here: a key made up by the CLI would sign
 * tokens no server accepts.
 */
async function bearerFor(config: Config, operator: boolean): Promise<string> {
  if (config.userToken) return config.userToken;
  const hasKey = Boolean(config.jwtSecret) || (!config.jwtJwksUrl && !config.databaseUrl && (await exists(path.join(config.dataDir, "jwt-secret"))));
  const key = hasKey ? await resolveSigningKey(config) : undefined;
  if (!key) {
    throw new ClientFailure(
      "no token: set VEGA_TOKEN to a bearer token the API accepts (on the server's machine, `vega token --sub <you>` prints one)",
    );
  }
  const group = config.opsGroups[0];
  return signToken(key, { sub: localUser(), groups: operator && group ? [group] : [], ttlSeconds: TOKEN_TTL_SECONDS });
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

async function clientOf(config: Config, options: { operator?: boolean } = {}): Promise<Client> {
  const token = await bearerFor(config, options.operator ?? false);
  const api = createApiClient({ url: config.apiUrl, token: () => token, timeoutMs: 30_000 });
  return { graphqlUrl: config.apiUrl, token, request: asClientFailure(api.request) };
}

/** API errors as the user should read them: the message and its code, no stack. */
function asClientFailure(request: ApiRequest): ApiRequest {
  return async (document, variables, options) => {
    try {
      return await request(document, variables, options);
    } catch (error) {
      if (error instanceof ApiRequestError) throw new ClientFailure(error.message);
      throw error;
    }
  };
}

export async function scan(argv: string[], config: Config): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name.startsWith("-")) {
    if (name === "--help" || name === "-h") throw new HelpRequested(helpOf(COMMANDS.scan));
    throw new UsageError("scan needs a command: submit, list or show (see vega scan --help)");
  }
  try {
    if (name === "submit") return await submit(rest, config);
    if (name === "list") return await list(rest, config);
    if (name === "show") return await show(rest, config);
  } catch (error) {
    return failed(error);
  }
  throw new UsageError(`unknown scan command "${name}" (known: submit, list, show)`);
}

export async function workers(argv: string[], config: Config): Promise<number> {
  const { flags } = parseCommandLine(COMMANDS.workers, argv);
  try {
    const client = await clientOf(config, { operator: true });
    const { ops } = await client.request(CliWorkersDocument, {});
    if (flags.json) {
      console.log(JSON.stringify(ops.workers, null, 2));
      return 0;
    }
    if (ops.workers.length === 0) {
      console.log("No workers registered.");
      return 0;
    }
    printTable(
      ["NAME", "HOST", "PID", "VERSION", "SCANS", "STATE", "HEARTBEAT"],
      ops.workers.map((worker) => [
        worker.name,
        worker.host,
        String(worker.pid),
        worker.version,
        `${worker.activeScans}/${worker.capacity}`,
        worker.stale ? "stale" : worker.draining ? "draining" : "live",
        `${worker.secondsSinceHeartbeat}s ago`,
      ]),
    );
    return 0;
  } catch (error) {
    return failed(error);
  }
}

function failed(error: unknown): number {
  if (error instanceof ClientFailure) {
    console.error(`vega: ${error.message}`);
    return 1;
  }
  throw error;
}

async function submit(argv: string[], config: Config): Promise<number> {
  const { flags, positionals } = parseCommandLine(COMMANDS["scan submit"], argv);
  const archive = positionals[0];
  const size = await stat(archive).then(
    (stats) => (stats.isFile() ? stats.size : undefined),
    () => undefined,
  );
  if (size === undefined) throw new UsageError(`${archive} is not a file`);
  const client = await clientOf(config);
  const showProgress = process.stderr.isTTY === true;
  const submitted = await uploadScan({
    graphqlUrl: client.graphqlUrl,
    token: client.token,
    document: CliSubmitScanDocument,
    input: { label: flags.label ?? path.basename(archive), workspaceId: flags.workspace ?? null },
    file: archive,
    size,
    onProgress: showProgress ? (sent) => progressLine(`uploading ${path.basename(archive)}: ${percent(sent, size)} (${bytes(sent)} of ${bytes(size)})`) : undefined,
  });
  if (showProgress) progressLine(null);
  if (!submitted.ok) throw new ClientFailure(`the API refused ${path.basename(archive)}: ${submitted.message} (${submitted.code})`);
  const scanned = submitted.data.submitScan.scan;
  console.log(flags.wait ? `Scan ${scanned.id} submitted (${scanned.status}); following it` : scanned.id);
  if (!flags.wait) return 0;
  return follow(client, scanned.id, showProgress);
}

/**
 * Follows a scan until it ends, by polling it every second: each status and
 * phase change is one line, and on a terminal a progress line is rewritten in
 * place. Exit 0 when it SUCCEEDED.
 */
async function follow(client: Client, scanId: string, showProgress: boolean): Promise<number> {
  let lastState = "";
  for (;;) {
    const { scan: current } = await client.request(CliScanDocument, { id: scanId, findings: SHOWN_FINDINGS });
    const state = describeState(current);
    if (state !== lastState) {
      if (showProgress) progressLine(null);
      console.log(`${timeOfDay()} ${state}`);
      lastState = state;
    }
    if (ENDED.has(current.status)) {
      printSummary(current);
      return current.status === "SUCCEEDED" ? 0 : 1;
    }
    if (showProgress && current.progress) progressLine(describeProgress(current.progress));
    await sleep(WAIT_POLL_MS);
  }
}

type ScanDetails = Awaited<ReturnType<typeof readScan>>;
const readScan = (client: Client, id: string) => client.request(CliScanDocument, { id, findings: SHOWN_FINDINGS }).then((answer) => answer.scan);

function describeState(scanned: CliScanFragment): string {
  const phase = scanned.status === "RUNNING" && scanned.progress ? ` ${scanned.progress.phase}` : "";
  return `${scanned.status}${phase}`;
}

function describeProgress(progress: NonNullable<CliScanFragment["progress"]>): string {
  const files = progress.filesDone == null ? "" : ` ${progress.filesDone}${progress.filesTotal == null ? "" : `/${progress.filesTotal}`} files`;
  const size = progress.bytesDone == null ? "" : ` ${bytes(Number(progress.bytesDone))}${progress.bytesTotal == null ? "" : ` of ${bytes(Number(progress.bytesTotal))}`}`;
  return `  ${progress.phase.toLowerCase()}${files}${size}, ${progress.findings} findings so far`;
}

function printSummary(scanned: ScanDetails) {
  const counts = scanned.findingCounts;
  const total = counts.critical + counts.high + counts.medium + counts.low + counts.info;
  const bySeverity = `critical ${counts.critical}, high ${counts.high}, medium ${counts.medium}, low ${counts.low}, info ${counts.info}`;
  console.log(`Scan ${scanned.id} ${scanned.status}: ${total} findings (${bySeverity})`);
  const analyzed = scanned.events.edges.map((edge) => edge.node).find((event) => event.code === "ANALYZED");
  if (analyzed) console.log(`  ${analyzed.message}`);
  if (scanned.errorCode) console.log(`  error ${scanned.errorCode}: ${scanned.errorMessage ?? ""}`);
  for (const { node: finding } of scanned.findings.edges) {
    console.log(`  ${finding.severity.padEnd(8)} ${finding.ruleId.padEnd(28)} ${finding.path}:${finding.line}:${finding.column}`);
  }
  if (total > scanned.findings.edges.length) console.log(`  ... and ${total - scanned.findings.edges.length} more (vega scan show ${scanned.id} --sarif FILE)`);
}

async function list(argv: string[], config: Config): Promise<number> {
  const { flags } = parseCommandLine(COMMANDS["scan list"], argv);
  const limit = Number(flags.limit ?? "20");
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new UsageError(`--limit must be a number from 1 to 100, not ${flags.limit}`);
  const status = flags.status?.toUpperCase();
  if (status !== undefined && !STATUSES.has(status)) throw new UsageError(`--status must be one of ${[...STATUSES].join(", ")}, not ${flags.status}`);
  const client = await clientOf(config);
  const { scans } = await client.request(CliScansDocument, { first: limit, status: status ? [status as ScanStatus] : null });
  const nodes = scans.edges.map((edge) => edge.node);
  if (flags.json) {
    console.log(JSON.stringify(nodes, null, 2));
    return 0;
  }
  if (nodes.length === 0) {
    console.log("No scans.");
    return 0;
  }
  printTable(
    ["ID", "STATUS", "CREATED", "FINDINGS", "LABEL"],
    nodes.map((node) => [node.id, node.status, node.createdAt.replace(/\.\d+Z$/, "Z"), String(totalOf(node.findingCounts)), node.label ?? ""]),
  );
  return 0;
}

async function show(argv: string[], config: Config): Promise<number> {
  const { flags, positionals } = parseCommandLine(COMMANDS["scan show"], argv);
  const client = await clientOf(config);
  const scanned = await readScan(client, positionals[0]);
  if (flags.sarif !== undefined) {
    const { scan: withSarif } = await client.request(CliScanSarifDocument, { id: scanned.id });
    const text = `${JSON.stringify(withSarif.sarif, null, 2)}\n`;
    if (flags.sarif === "-") process.stdout.write(text);
    else await writeFile(flags.sarif, text);
    if (flags.sarif !== "-") console.error(`vega: SARIF of scan ${scanned.id} written to ${flags.sarif}`);
    return 0;
  }
  if (flags.json) {
    console.log(JSON.stringify(scanned, null, 2));
    return 0;
  }
  console.log(`Scan ${scanned.id}${scanned.label ? ` (${scanned.label})` : ""}`);
  console.log(`  status    ${scanned.status}${scanned.attempts > 1 ? ` after ${scanned.attempts} attempts` : ""}`);
  console.log(`  created   ${scanned.createdAt}`);
  if (scanned.finishedAt) console.log(`  finished  ${scanned.finishedAt}`);
  if (scanned.progress && !ENDED.has(scanned.status)) console.log(describeProgress(scanned.progress));
  printSummary(scanned);
  return ENDED.has(scanned.status) && scanned.status !== "SUCCEEDED" ? 1 : 0;
}

const totalOf = (counts: CliScanFragment["findingCounts"]) => counts.critical + counts.high + counts.medium + counts.low + counts.info;

function printTable(header: string[], rows: string[][]) {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  for (const row of [header, ...rows]) console.log(row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]))).join("  "));
}

/** One line rewritten in place on a terminal; null clears it. */
function progressLine(text: string | null) {
  process.stderr.write(`\r\x1b[2K${text ?? ""}`);
}

const timeOfDay = () => new Date().toISOString().slice(11, 19);
const percent = (done: number, total: number) => `${total === 0 ? 100 : Math.floor((done / total) * 100)}%`;

function bytes(count: number): string {
  if (count < 1024) return `${count} B`;
  if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KiB`;
  return `${(count / (1024 * 1024)).toFixed(1)} MiB`;
}
