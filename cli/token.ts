import { resolveSigningKey, signToken, type PrincipalScope } from "../api/auth.ts";
import type { Config } from "../shared/config.ts";
import { parseArgs, rejectUnknownFlags, stringFlag, UsageError } from "./args.ts";

/** Prints a token the server accepts, signed with VEGA_JWT_SECRET or the embedded default's generated key. */
export async function token(argv: string[], config: Config) {
  const args = parseArgs(argv);
  rejectUnknownFlags(args, ["sub", "groups", "scope", "scan-id", "attempt", "worker-id", "ttl"]);
  const sub = stringFlag(args, "sub");
  if (!sub) throw new UsageError("token needs --sub <user id>");
  const scope = (stringFlag(args, "scope") ?? "user") as PrincipalScope;
  if (!["user", "worker", "runner"].includes(scope)) throw new UsageError(`--scope must be user, worker or runner, not ${scope}`);
  const scanId = stringFlag(args, "scan-id");
  if (scope === "runner" && !scanId) throw new UsageError("--scope runner needs --scan-id");
  const attemptText = stringFlag(args, "attempt");
  if (scope === "runner" && attemptText === undefined) throw new UsageError("--scope runner needs --attempt (the scan's claim, Scan.attempts)");
  if (attemptText !== undefined && (!/^\d+$/.test(attemptText) || Number(attemptText) === 0)) {
    throw new UsageError(`--attempt must be a positive claim number, not ${attemptText}`);
  }
  const ttlText = stringFlag(args, "ttl") ?? "86400";
  if (!/^\d+$/.test(ttlText) || Number(ttlText) === 0) throw new UsageError(`--ttl must be a positive number of seconds, not ${ttlText}`);
  const key = await resolveSigningKey(config);
  if (!key) throw new UsageError("tokens come from the OIDC issuer when VEGA_JWT_JWKS_URL is set; vega cannot sign them");
  const groups = (stringFlag(args, "groups") ?? "")
    .split(",")
    .map((group) => group.trim())
    .filter(Boolean);
  console.log(
    await signToken(key, {
      sub,
      groups,
      scope,
      scanId,
      attempt: attemptText === undefined ? undefined : Number(attemptText),
      workerId: stringFlag(args, "worker-id"),
      ttlSeconds: Number(ttlText),
    }),
  );
}
