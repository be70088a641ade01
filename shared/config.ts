/**
 * The only reader of process.env. Every VEGA_* setting is declared once in
 * `settings` below (name, default, parser, meaning); `loadConfig` reads them all,
 * and an invalid value stops the process with a message naming the variable.
 * The README's settings table lists the same entries (a test keeps them in step).
 */
import os from "node:os";
import path from "node:path";

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Parser<T> = (raw: string, name: string) => T;

const nonNegativeInteger: Parser<number> = (raw, name) => {
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${name}=${JSON.stringify(raw)} is not a non-negative integer`);
  const value = Number(raw.trim());
  if (!Number.isSafeInteger(value)) throw new ConfigError(`${name}=${JSON.stringify(raw)} is too large`);
  return value;
};

const positiveInteger: Parser<number> = (raw, name) => {
  const value = nonNegativeInteger(raw, name);
  if (value === 0) throw new ConfigError(`${name}=${JSON.stringify(raw)} must be at least 1`);
  return value;
};

/** 0 asks the system for a free port (tests, or a second instance beside the first). */
const tcpPort: Parser<number> = (raw, name) => {
  const value = nonNegativeInteger(raw, name);
  if (value > 65535) throw new ConfigError(`${name}=${JSON.stringify(raw)} is not a TCP port (1-65535, or 0 for any free port)`);
  return value;
};

const text: Parser<string> = (raw) => raw;

const optionalText: Parser<string | undefined> = (raw) => (raw.trim() === "" ? undefined : raw.trim());

const list: Parser<string[]> = (raw) =>
  raw
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");

const boolean: Parser<boolean> = (raw, name) => {
  const value = raw.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new ConfigError(`${name}=${JSON.stringify(raw)} is not a boolean (true/false)`);
};

const oneOf =
  <T extends string>(...choices: T[]): Parser<T> =>
  (raw, name) => {
    if ((choices as string[]).includes(raw.trim())) return raw.trim() as T;
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is not one of ${choices.join(", ")}`);
  };

const databaseUrl: Parser<string | undefined> = (raw, name) => {
  const value = raw.trim();
  if (value === "") return undefined;
  if (!/^postgres(ql)?:\/\//.test(value)) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} must be a postgres:// or postgresql:// URL (unset for embedded PGlite)`);
  }
  return value;
};

const url: Parser<string | undefined> = (raw, name) => {
  const value = raw.trim();
  if (value === "") return undefined;
  try {
    new URL(value);
  } catch {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is not a URL`);
  }
  return value;
};

/** Browser origins (`https://app.example.com`): each exactly an origin, so that comparing with a request's Origin header is exact. */
const channelPrefix: Parser<string> = (raw, name) => {
  if (/^[\x21-\x7e]{0,64}$/.test(raw)) return raw;
  throw new ConfigError(`${name}=${JSON.stringify(raw)} is not a channel prefix (up to 64 printable characters, no spaces)`);
};

const origins: Parser<string[]> = (raw, name) => {
  const values = list(raw, name);
  for (const value of values) {
    let origin: string | undefined;
    try {
      origin = new URL(value).origin;
    } catch {
      origin = undefined;
    }
    if (origin !== value) {
      throw new ConfigError(`${name}: ${JSON.stringify(value)} is not an origin (scheme://host[:port], no path or trailing slash)`);
    }
  }
  return values;
};

/** Where the artifact store keeps archives: the local directory, or an S3 bucket and key prefix. */
export type ArtifactStoreLocation = { kind: "local" } | { kind: "s3"; bucket: string; prefix: string };

const artifactStoreLocation: Parser<ArtifactStoreLocation> = (raw, name) => {
  const value = raw.trim();
  if (value === "local") return { kind: "local" };
  // Bucket names: 3-63 characters of lower-case letters, digits, dots and hyphens (S3's naming rules).
  const match = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(value);
  if (!match) throw new ConfigError(`${name}=${JSON.stringify(raw)} is neither \`local\` nor an s3://bucket/prefix URL`);
  const prefix = (match[2] ?? "").replace(/^\/+|\/+$/g, "");
  return { kind: "s3", bucket: match[1], prefix: prefix === "" ? "" : `${prefix}/` };
};

interface Setting<T> {
  env: string;
  default: string;
  parse: Parser<T>;
  description: string;
}

const setting = <T>(env: string, defaultValue: string, parse: Parser<T>, description: string): Setting<T> => ({
  env,
  default: defaultValue,
  parse,
  description,
});

/** Every setting, in the order the README lists them. */
export const settings = {
  // Limits (the seed's table)
  maxActiveScansPerUser: setting("VEGA_MAX_ACTIVE_SCANS_PER_USER", "4", positiveInteger, "queued + starting + running scans of one user"),
  maxSessionsPerWorkspace: setting("VEGA_MAX_SESSIONS_PER_WORKSPACE", "20", positiveInteger, "open sessions in one workspace"),
  maxSourceBytes: setting("VEGA_MAX_SOURCE_BYTES", "2147483648", positiveInteger, "size of an uploaded source archive"),
  maxArchiveEntries: setting("VEGA_MAX_ARCHIVE_ENTRIES", "50000", positiveInteger, "entries (files and directories) in an archive"),
  maxArchiveUncompressedBytes: setting("VEGA_MAX_ARCHIVE_UNCOMPRESSED_BYTES", "5368709120", positiveInteger, "extracted size of an archive"),
  maxCompressionRatio: setting("VEGA_MAX_ARCHIVE_COMPRESSION_RATIO", "1000", positiveInteger, "declared uncompressed/compressed ratio of one entry (zip bomb bound)"),
  workerHeartbeatIntervalSeconds: setting("VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS", "15", positiveInteger, "how often a worker heartbeats"),
  workerHeartbeatTtlSeconds: setting("VEGA_WORKER_HEARTBEAT_TTL_SECONDS", "60", positiveInteger, "when a worker counts as stale"),
  scanRunningStaleSeconds: setting("VEGA_SCAN_RUNNING_STALE_SECONDS", "21600", positiveInteger, "when a running scan is checked for a dead task"),
  scanHeartbeatTtlSeconds: setting(
    "VEGA_SCAN_HEARTBEAT_TTL_SECONDS",
    "120",
    positiveInteger,
    "a running scan whose runner has not reported for this long is stopped (RUNNER_HUNG) or, its task gone, failed (RUNNER_EXITED)",
  ),
  scanTimeoutSeconds: setting("VEGA_SCAN_TIMEOUT_SECONDS", "3600", positiveInteger, "a scan running longer than this is stopped and failed (SCAN_TIMEOUT)"),
  sessionTtlSeconds: setting("VEGA_SESSION_TTL_SECONDS", "86400", positiveInteger, "how long a session stays open without being closed"),

  // API server
  host: setting("VEGA_HOST", "0.0.0.0", text, "address the API listens on"),
  port: setting("VEGA_PORT", "4000", tcpPort, "port the API listens on (HTTP, WebSocket and SSE on /graphql); 0: any free port"),
  dataDir: setting("VEGA_DATA_DIR", "./data", text, "embedded database, generated token secret and (by default) artifacts"),
  artifactDir: setting("VEGA_ARTIFACT_DIR", "", optionalText, "artifact store directory (default: <VEGA_DATA_DIR>/artifacts)"),
  artifactStore: setting(
    "VEGA_ARTIFACT_STORE",
    "local",
    artifactStoreLocation,
    "where archives are kept: `local` (the artifact directory) or `s3://bucket/prefix` (uploads still stream through the artifact directory's tmp/)",
  ),
  s3ForcePathStyle: setting("VEGA_S3_FORCE_PATH_STYLE", "false", boolean, "address the S3 bucket in the path (`endpoint/bucket/key`), for S3-compatible servers that need it"),
  s3EndpointUrl: setting("AWS_ENDPOINT_URL_S3", "", url, "S3 endpoint of a non-AWS (S3-compatible) server; unset: AWS's own, from the region"),
  artifactUrlTtlSeconds: setting("VEGA_ARTIFACT_URL_TTL_SECONDS", "900", positiveInteger, "lifetime of the presigned S3 URL a runner downloads its archive from (it needs it only to start the download)"),
  databaseUrl: setting("VEGA_DATABASE_URL", "", databaseUrl, "PostgreSQL URL; unset: embedded PGlite under VEGA_DATA_DIR"),
  databasePoolSize: setting("VEGA_DATABASE_POOL_SIZE", "10", positiveInteger, "PostgreSQL connections per process"),
  redisUrl: setting("VEGA_REDIS_URL", "", url, "Redis URL for subscriptions across API replicas; unset: in-memory"),
  redisChannelPrefix: setting("VEGA_REDIS_CHANNEL_PREFIX", "", channelPrefix, "prefix of Vega's Redis channel names, so that several deployments can share one Redis (Redis channels are not scoped by database number)"),
  logLevel: setting("VEGA_LOG_LEVEL", "info", oneOf("fatal", "error", "warn", "info", "debug", "trace", "silent"), "pino log level"),
  logFormat: setting("VEGA_LOG_FORMAT", "auto", oneOf("auto", "json", "pretty"), "logs on stderr: auto is readable lines on a terminal and JSON otherwise"),
  maxRequestBytes: setting("VEGA_MAX_REQUEST_BYTES", "1048576", positiveInteger, "body size of a non-upload request, and of a WebSocket frame"),
  uploadIdleSeconds: setting("VEGA_UPLOAD_IDLE_SECONDS", "60", positiveInteger, "an upload (or any request body) that sends no byte for this long is cut with 408 and discarded"),
  corsOrigins: setting("VEGA_CORS_ORIGINS", "", origins, "browser origins allowed to call the API from another origin, comma-separated (unset: none; same-origin pages need none)"),
  graphqlMaxDepth: setting("VEGA_GRAPHQL_MAX_DEPTH", "12", positiveInteger, "query depth"),
  graphqlMaxAliases: setting("VEGA_GRAPHQL_MAX_ALIASES", "30", positiveInteger, "aliases in one operation"),
  graphqlMaxTokens: setting("VEGA_GRAPHQL_MAX_TOKENS", "2000", positiveInteger, "tokens in one document"),
  graphqlMaxCost: setting("VEGA_GRAPHQL_MAX_COST", "50000", positiveInteger, "graphql-armor cost of one operation"),
  graphqlMaxDirectives: setting("VEGA_GRAPHQL_MAX_DIRECTIVES", "50", positiveInteger, "directives in one operation"),
  workerSweepIntervalSeconds: setting("VEGA_WORKER_SWEEP_INTERVAL_SECONDS", "5", positiveInteger, "how often the API looks for workers that turned stale"),

  // Authentication
  jwtSecret: setting("VEGA_JWT_SECRET", "", optionalText, "HS256 key for bearer tokens; unset on the embedded default: generated in VEGA_DATA_DIR"),
  jwtJwksUrl: setting("VEGA_JWT_JWKS_URL", "", url, "JWKS of an OIDC/Cognito issuer (RS256/ES256 tokens)"),
  jwtIssuer: setting("VEGA_JWT_ISSUER", "", optionalText, "required `iss` of tokens (with the JWKS)"),
  jwtAudience: setting("VEGA_JWT_AUDIENCE", "", optionalText, "required `aud` of tokens (with the JWKS)"),
  jwtClockSkewSeconds: setting("VEGA_JWT_CLOCK_SKEW_SECONDS", "60", nonNegativeInteger, "tolerated difference between the token issuer's clock and ours (exp, nbf, iat)"),
  opsGroups: setting("VEGA_OPS_GROUPS", "vega-ops", list, "groups whose members have the operator scope"),
  metricsToken: setting(
    "VEGA_METRICS_TOKEN",
    "",
    optionalText,
    "bearer credential that may read GET /metrics (what a Prometheus scrape config sends); operator tokens may too; unset: operators only",
  ),

  // Worker, runner and launchers
  apiUrl: setting("VEGA_API_URL", "http://127.0.0.1:4000/graphql", text, "the API's GraphQL endpoint, for the worker, the runner, `vega scan` and `vega workers`"),
  workerToken: setting("VEGA_WORKER_TOKEN", "", optionalText, "bearer token with vega_scope=worker"),
  userToken: setting(
    "VEGA_TOKEN",
    "",
    optionalText,
    "bearer token of `vega scan` and `vega workers`; unset: one minted for the local user from the server's key, when this machine has it",
  ),
  workerName: setting("VEGA_WORKER_NAME", "", optionalText, "name in the registry (default: host-pid)"),
  workerCapacity: setting("VEGA_WORKER_CAPACITY", "2", positiveInteger, "scans one worker runs at once"),
  workerPollIntervalSeconds: setting("VEGA_WORKER_POLL_INTERVAL_SECONDS", "5", positiveInteger, "how often a worker recovers stale scans and claims queued ones"),
  workerShutdownSeconds: setting("VEGA_WORKER_SHUTDOWN_SECONDS", "10", positiveInteger, "how long a stopping worker waits for its last heartbeat and deregistration"),
  scanMaxAttempts: setting("VEGA_SCAN_MAX_ATTEMPTS", "3", positiveInteger, "claims of one scan before it fails with ATTEMPTS_EXHAUSTED"),
  launcher: setting("VEGA_LAUNCHER", "local", oneOf("local", "ecs"), "how runners start: a child process or an ECS task"),
  runnerTokenTtlSeconds: setting("VEGA_RUNNER_TOKEN_TTL_SECONDS", "86400", positiveInteger, "lifetime of the token handed to a runner"),
  runnerFindingsBatch: setting(
    "VEGA_RUNNER_FINDINGS_BATCH",
    "500",
    positiveInteger,
    "findings per addFindings call from a runner (the API takes at most 1000); fewer are sent at least every 2 s",
  ),
  runnerHeartbeatSeconds: setting("VEGA_RUNNER_HEARTBEAT_SECONDS", "15", positiveInteger, "how often a runner reports its progress (its heartbeat)"),
  scanId: setting("VEGA_SCAN_ID", "", optionalText, "the runner's scan (set by the launcher)"),
  runnerToken: setting("VEGA_RUNNER_TOKEN", "", optionalText, "the runner's token bound to its scan (set by the launcher)"),
  runnerWorkDir: setting("VEGA_RUNNER_WORK_DIR", "", optionalText, "the runner's work directory (set by the local launcher, which removes it when the runner exits); unset: a new one under TMPDIR"),
  ecsCluster: setting("VEGA_ECS_CLUSTER", "", optionalText, "cluster for runner tasks"),
  ecsTaskDefinition: setting("VEGA_ECS_TASK_DEFINITION", "vega-runner", text, "task definition of the runner"),
  ecsContainerName: setting("VEGA_ECS_CONTAINER_NAME", "runner", text, "container in the runner task definition"),
  ecsLaunchType: setting("VEGA_ECS_LAUNCH_TYPE", "FARGATE", oneOf("FARGATE", "EC2", "EXTERNAL"), "launch type when no capacity provider is set"),
  ecsCapacityProviders: setting("VEGA_ECS_CAPACITY_PROVIDERS", "", list, "capacity provider strategy, e.g. FARGATE_SPOT:3,FARGATE:1 (overrides the launch type)"),
  ecsSubnets: setting("VEGA_ECS_SUBNETS", "", list, "awsvpc subnets"),
  ecsSecurityGroups: setting("VEGA_ECS_SECURITY_GROUPS", "", list, "awsvpc security groups"),
  ecsAssignPublicIp: setting("VEGA_ECS_ASSIGN_PUBLIC_IP", "false", boolean, "give runner tasks a public IP"),
  ecsMaintenanceTaskDefinition: setting("VEGA_ECS_MAINTENANCE_TASK_DEFINITION", "vega-maintenance", text, "task definition run by `vega maintenance run-remote`"),

  // Retention and maintenance
  artifactRetentionSeconds: setting("VEGA_ARTIFACT_RETENTION_SECONDS", "604800", nonNegativeInteger, "keep artifacts of finished scans this long"),
  sessionRetentionSeconds: setting("VEGA_SESSION_RETENTION_SECONDS", "604800", nonNegativeInteger, "keep expired or closed sessions this long"),
  workerPruneSeconds: setting("VEGA_WORKER_PRUNE_SECONDS", "86400", nonNegativeInteger, "remove workers stale for this long"),
  cleanupIntervalSeconds: setting("VEGA_CLEANUP_INTERVAL_SECONDS", "3600", nonNegativeInteger, "scheduled cleanup in the API; 0 turns it off"),
  diagnosticsQueuedSeconds: setting("VEGA_DIAGNOSTICS_QUEUED_SECONDS", "300", positiveInteger, "a queued scan older than this with no live worker is reported"),
};

type Settings = typeof settings;
export type Config = { [K in keyof Settings]: Settings[K] extends Setting<infer T> ? T : never } & {
  /** Resolved artifact store directory. */
  artifactStoreDir: string;
  /**
   * Started by npm (`npm start`, `npx vega …`: npm sets npm_lifecycle_event). npm runs the
   * command under `sh -c`, and a signal to npm can end npm and that shell but not Vega, so
   * long-running commands also stop when their parent goes away.
   */
  launchedByNpm: boolean;
};

/**
 * Reads every setting from `env` (process.env at the entry points, a plain
 * object in tests). Collects every invalid value before failing, so one start
 * reports them all.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const values: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, spec] of Object.entries(settings) as [keyof Settings, Setting<unknown>][]) {
    const raw = env[spec.env] ?? spec.default;
    try {
      values[key] = spec.parse(raw, spec.env);
    } catch (error) {
      problems.push(error instanceof Error ? error.message : String(error));
    }
  }
  if (problems.length > 0) throw new ConfigError(`Invalid settings:\n  ${problems.join("\n  ")}`);

  const config = values as Config;
  if (config.workerHeartbeatTtlSeconds <= config.workerHeartbeatIntervalSeconds) {
    throw new ConfigError(
      `VEGA_WORKER_HEARTBEAT_TTL_SECONDS=${config.workerHeartbeatTtlSeconds} must be greater than ` +
        `VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS=${config.workerHeartbeatIntervalSeconds}, or every worker looks stale`,
    );
  }
  if (config.scanHeartbeatTtlSeconds <= config.runnerHeartbeatSeconds) {
    throw new ConfigError(
      `VEGA_SCAN_HEARTBEAT_TTL_SECONDS=${config.scanHeartbeatTtlSeconds} must be greater than ` +
        `VEGA_RUNNER_HEARTBEAT_SECONDS=${config.runnerHeartbeatSeconds}, or every runner looks hung`,
    );
  }
  if (config.ecsAssignPublicIp === undefined) config.ecsAssignPublicIp = false;
  config.dataDir = path.resolve(config.dataDir);
  config.artifactStoreDir = config.artifactDir ? path.resolve(config.artifactDir) : path.join(config.dataDir, "artifacts");
  config.launchedByNpm = Boolean(env.npm_lifecycle_event);
  return config;
}

/** The default worker name: host and pid, unique enough to tell processes apart. */
export const defaultWorkerName = () => `${os.hostname()}-${process.pid}`;
