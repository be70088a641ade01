import { resolveSigningKey, signToken } from "../api/auth.ts";
import type { Config } from "../shared/config.ts";
import { parseCommandLine, UsageError } from "./args.ts";
import { COMMANDS } from "./commands.ts";

/**
 * Prints the dashboard's address with an operator's token in its fragment
 * (`/#token=…`): the browser never sends a fragment to the server, and the page
 * moves the token into the tab's sessionStorage and out of the address bar.
 */
export async function dashboard(argv: string[], config: Config) {
  const { flags } = parseCommandLine(COMMANDS.dashboard, argv);
  const sub = flags.sub;
  if (!sub) throw new UsageError("dashboard needs --sub <user id>");
  const ttlText = flags.ttl ?? "28800";
  if (!/^\d+$/.test(ttlText) || Number(ttlText) === 0) throw new UsageError(`--ttl must be a positive number of seconds, not ${ttlText}`);
  const [operatorGroup] = config.opsGroups;
  if (!operatorGroup) throw new UsageError("VEGA_OPS_GROUPS is empty: no token can make an operator");
  const key = await resolveSigningKey(config);
  if (!key) throw new UsageError("tokens come from the OIDC issuer when VEGA_JWT_JWKS_URL is set; paste one of its tokens into the dashboard instead");
  const token = await signToken(key, { sub, groups: [operatorGroup], scope: "user", ttlSeconds: Number(ttlText) });
  // The API listens on every address by default: the operator opens it on this machine.
  const host = config.host === "0.0.0.0" || config.host === "::" ? "localhost" : config.host.includes(":") ? `[${config.host}]` : config.host;
  console.log(`http://${host}:${config.port}/#token=${token}`);
}
