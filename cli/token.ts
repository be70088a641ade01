import { resolveSigningKey, signToken, type PrincipalScope } from "../api/auth.ts";
import type { Config } from "../shared/config.ts";
import { parseCommandLine, UsageError } from "./args.ts";
import { COMMANDS } from "./commands.ts";

/** Prints a token the server accepts, signed with VEGA_JWT_SECRET or the embedded default's generated key. */
export async function token(argv: string[], config: Config) {
  const { flags } = parseCommandLine(COMMANDS.token, argv);
  const sub = flags.sub;
  if (!sub) throw new UsageError("token needs --sub <user id>");
  const scope = (flags.scope ?? "user") as PrincipalScope;
  if (!["user", "worker", "runner"].includes(scope)) throw new UsageError(`--scope must be user, worker or runner, not ${scope}`);
  const scanId = flags["scan-id"];
  if (scope === "runner" && !scanId) throw new UsageError("--scope runner needs --scan-id");
  const attemptText = flags.attempt;
  if (scope === "runner" && attemptText === undefined) throw new UsageError("--scope runner needs --attempt (the scan's claim, Scan.attempts)");
  if (attemptText !== undefined && (!/^\d+$/.test(attemptText) || Number(attemptText) === 0)) {
    throw new UsageError(`--attempt must be a positive claim number, not ${attemptText}`);
  }
  const ttlText = flags.ttl ?? "86400";
  if (!/^\d+$/.test(ttlText) || Number(ttlText) === 0) throw new UsageError(`--ttl must be a positive number of seconds, not ${ttlText}`);
  const key = await resolveSigningKey(config);
  if (!key) throw new UsageError("tokens come from the OIDC issuer when VEGA_JWT_JWKS_URL is set; vega cannot sign them");
  const groups = (flags.groups ?? "")
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
      workerId: flags["worker-id"],
      ttlSeconds: Number(ttlText),
    }),
  );
}
