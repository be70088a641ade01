/**
 * Every `vega` command line, described once: `vega --help` lists them, each
 * command's `--help` prints its own, and the commands parse their flags from
 * the same description (./args.ts). No implementation is imported here, so
 * help costs nothing to load.
 */
import type { CommandSpec } from "./args.ts";

const SETTINGS_NOTE = "Settings come from VEGA_* environment variables; see the README.";
const CLIENT_NOTES = [
  "Talks to the API at VEGA_API_URL (default http://127.0.0.1:4000/graphql) with the bearer token VEGA_TOKEN;",
  "without one, on a machine that holds the server's key (VEGA_JWT_SECRET or the embedded default's", 
  "VEGA_DATA_DIR/jwt-secret), it mints a short-lived token for the local user.",
];
const DRY_RUN = { type: "boolean", description: "say what would be done, change nothing" } as const;

export const COMMANDS = {
  serve: { name: "serve", synopsis: "", summary: "Run the API server alone (HTTP, WebSocket and SSE on VEGA_PORT).", flags: {}, notes: [SETTINGS_NOTE] },
  start: {
    name: "start",
    synopsis: "",
    summary: "One machine: the API plus an embedded worker (what `npm start` runs).",
    flags: {},
    notes: [SETTINGS_NOTE],
  },
  worker: {
    name: "worker",
    synopsis: "",
    summary: "Run a scan worker against VEGA_API_URL with VEGA_WORKER_TOKEN.",
    flags: {},
    notes: [SETTINGS_NOTE],
  },
  runner: {
    name: "runner",
    synopsis: "",
    summary: "Run one scan (VEGA_SCAN_ID with VEGA_RUNNER_TOKEN), as launched by a worker.",
    flags: {},
    notes: [SETTINGS_NOTE],
  },
  token: {
    name: "token",
    synopsis: "--sub ID [--groups a,b] [--scope user|worker|runner] [--scan-id ID] [--attempt N] [--worker-id ID] [--ttl SECONDS]",
    summary: "Print a bearer token signed with the server's key (VEGA_JWT_SECRET, or the embedded default's generated key).",
    flags: {
      sub: { type: "string", value: "ID", description: "the subject: a user id, a worker's or a runner's name" },
      groups: { type: "string", value: "a,b", description: "groups, comma-separated (a group of VEGA_OPS_GROUPS makes an operator)" },
      scope: { type: "string", value: "SCOPE", description: "user (default), worker or runner" },
      "scan-id": { type: "string", value: "ID", description: "the one scan a runner token is bound to (required with --scope runner)" },
      attempt: { type: "string", value: "N", description: "the claim a runner token is bound to, Scan.attempts (required with --scope runner)" },
      "worker-id": { type: "string", value: "ID", description: "the registered worker a worker token speaks for" },
      ttl: { type: "string", value: "SECONDS", description: "lifetime of the token (default 86400)" },
    },
  },
  dashboard: {
    name: "dashboard",
    synopsis: "--sub ID [--ttl SECONDS]",
    summary: "Print the dashboard's address with an operator's token (signed like `vega token`) that logs the browser in.",
    flags: {
      sub: { type: "string", value: "ID", description: "the operator's user id" },
      ttl: { type: "string", value: "SECONDS", description: "lifetime of the token (default 28800, eight hours)" },
    },
    notes: [
      "The token is given the first group of VEGA_OPS_GROUPS. Open the address in a browser on this machine;",
      "the page keeps the token in the tab's sessionStorage and removes it from the address bar.",
    ],
  },
  maintenance: {
    name: "maintenance",
    synopsis: "<job> [flags]",
    summary: "One-shot jobs; each prints one line of JSON on stdout and exits 0 on success. Jobs: migrate, recover-stale, cleanup, prune-artifacts, run-remote.",
    flags: {},
    positionals: { required: ["<job>"], rest: true },
    notes: [
      "On the embedded database, cleanup, prune-artifacts and recover-stale run through the server that holds the data directory, if one does.",
      "`vega maintenance <job> --help` describes each job.",
    ],
  },
  "maintenance migrate": { name: "maintenance migrate", synopsis: "", summary: "Apply pending database migrations.", flags: {} },
  "maintenance recover-stale": {
    name: "maintenance recover-stale",
    synopsis: "[--dry-run]",
    summary: "Stale-scan recovery when no worker runs it: running scans whose task is gone, hung or past the timeout; orphaned claims.",
    flags: { "dry-run": DRY_RUN },
  },
  "maintenance cleanup": {
    name: "maintenance cleanup",
    synopsis: "[--dry-run]",
    summary: "One cleanup run: artifacts, orphaned files, upload temporaries, sessions, workers.",
    flags: { "dry-run": DRY_RUN },
    notes: ["Exit 75 (try later) when another cleanup is in progress."],
  },
  "maintenance prune-artifacts": {
    name: "maintenance prune-artifacts",
    synopsis: "[--dry-run]",
    summary: "The artifact job alone: artifacts of scans finished past the retention.",
    flags: { "dry-run": DRY_RUN },
  },
  "maintenance run-remote": {
    name: "maintenance run-remote",
    synopsis: "<job> [job flags] --env NAME [--cluster C] [--task-definition TD] [--container NAME] [--timeout SECONDS] [--endpoint URL]",
    summary: "Run a maintenance job as the vega-maintenance-NAME ECS task and exit with its exit code.",
    flags: {
      env: { type: "string", value: "NAME", description: "the environment: letters, digits and dashes (required)" },
      cluster: { type: "string", value: "C", description: "the ECS cluster (default vega-NAME)" },
      "task-definition": { type: "string", value: "TD", description: "the task definition (default VEGA_ECS_MAINTENANCE_TASK_DEFINITION-NAME)" },
      container: { type: "string", value: "NAME", description: "the container whose command is overridden (default vega)" },
      timeout: { type: "string", value: "SECONDS", description: "how long to wait for the task (default 3600)" },
      endpoint: { type: "string", value: "URL", description: "an ECS endpoint other than AWS's (tests)" },
    },
    positionals: { required: ["<job>"], rest: true },
  },
  scan: {
    name: "scan",
    synopsis: "<submit|list|show> ...",
    summary: "Submit scans and read them, as a user of the API. `vega scan <command> --help` describes each.",
    flags: {},
    positionals: { required: ["<command>"], rest: true },
    notes: CLIENT_NOTES,
  },
  "scan submit": {
    name: "scan submit",
    synopsis: "PATH.zip [--label L] [--workspace ID] [--wait]",
    summary: "Upload a source archive (streamed, with progress on a terminal) and print the new scan's id; with --wait, follow it until it ends.",
    flags: {
      label: { type: "string", value: "L", description: "a label for the scan (its name in lists)" },
      workspace: { type: "string", value: "ID", description: "the workspace (default: the caller's own)" },
      wait: { type: "boolean", description: "follow the scan live, print its progress and a findings summary" },
    },
    positionals: { required: ["PATH.zip"] },
    notes: [
      "Exit 0 when the scan is accepted (with --wait: when it SUCCEEDED); 1 when the API refuses the archive (its error code is printed)",
      "or the scan FAILED or was CANCELLED; 2 on a usage error.",
      ...CLIENT_NOTES,
    ],
  },
  "scan list": {
    name: "scan list",
    synopsis: "[--status S] [--limit N] [--json]",
    summary: "The caller's most recent scans, newest first.",
    flags: {
      status: { type: "string", value: "S", description: "only scans in this status (QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, CANCELLED)" },
      limit: { type: "string", value: "N", description: "how many (default 20, at most 100)" },
      json: { type: "boolean", description: "print the scans as JSON" },
    },
    notes: CLIENT_NOTES,
  },
  "scan show": {
    name: "scan show",
    synopsis: "ID [--sarif FILE] [--json]",
    summary: "A scan: status, progress, findings by severity and the first findings; with --sarif, its SARIF report written to FILE.",
    flags: {
      sarif: { type: "string", value: "FILE", description: "write the scan's SARIF 2.1.0 log to FILE (- for stdout), for `gh api` or upload-sarif" },
      json: { type: "boolean", description: "print the scan as JSON" },
    },
    positionals: { required: ["ID"] },
    notes: CLIENT_NOTES,
  },
  workers: {
    name: "workers",
    synopsis: "[--json]",
    summary: "The registered workers: capacity, active scans, last heartbeat (an operator's view).",
    flags: { json: { type: "boolean", description: "print the workers as JSON" } },
    notes: CLIENT_NOTES,
  },
} satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;

/** `vega --help`: every command, the maintenance jobs and the scan commands included. */
export function overview(): string {
  const rows = Object.values(COMMANDS)
    .filter((spec) => spec.name !== "maintenance" && spec.name !== "scan")
    .map((spec) => [`${spec.name}${spec.synopsis ? ` ${spec.synopsis}` : ""}`, spec.summary]);
  const lines = rows.flatMap(([left, right]) => (left.length > 34 ? [`  ${left}`, `  ${"".padEnd(34)}${right}`] : [`  ${left.padEnd(34)}${right}`]));
  return [
    "Usage: vega <command> [flags]",
    "",
    ...lines,
    "",
    "`vega <command> --help` describes a command and every flag it takes. Usage errors exit with status 2.",
    SETTINGS_NOTE,
  ].join("\n");
}
