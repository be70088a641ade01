/**
 * The SARIF report of a scan's secret findings: a SARIF 2.1.0 log that GitHub
 * code scanning accepts (`gh api .../code-scanning/sarifs`, or the
 * upload-sarif action), and that any SARIF viewer opens.
 *
 * Decisions worth knowing:
 * - `tool.driver.rules` lists the whole secret rule catalog, not only the rules
 *   with results: a result's `ruleIndex` is then the same in every report, and a
 *   report without findings still says which rules ran. A finding whose rule is
 *   no longer in the catalog (a row stored by an older runner) gets a minimal
 *   rule appended, so that every result resolves.
 * - Levels and `security-severity` come from shared/severity.ts (CRITICAL and
 *   HIGH are `error`, MEDIUM `warning`, LOW and INFO `note`). GitHub ranks
 *   security alerts by the rule's `security-severity`, which only counts on
 *   rules tagged `security`; INFO rules get none.
 * - `partialFingerprints["vegaFingerprint/v1"]` is the finding's own fingerprint
 *   (rule, path and secret hash, no line): GitHub matches alerts across uploads
 *   by it, so a secret that moves within its file stays one alert.
 * - `automationDetails.id` is `vega-secrets/<scanId>`: "vega-secrets" is the
 *   category (stable, so new uploads replace the previous analysis) and the scan
 *   id identifies the run.
 * - `invocations[0].executionSuccessful` says whether the scan completed: a
 *   FAILED scan's report holds the findings sent before it failed, with the
 *   error as a notification, so that a consumer does not read its missing
 *   results as fixed alerts. Scans still running have no report (scans.ts).
 * - Locations are relative to `%SRCROOT%` (the archive's root), each path
 *   segment percent-encoded, as artifactLocation.uri is a URI reference; columns
 *   are UTF-16 code units, said explicitly with `columnKind`.
 */
import { SECRET_RULES, type SecretRule } from "../../shared/secret-rules.ts";
import { SARIF_LEVEL_BY_SEVERITY, SECURITY_SEVERITY_BY_SEVERITY, sarifLevelOf, type SarifLevel, type Severity } from "../../shared/severity.ts";

export const SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json";
export const SARIF_TOOL_NAME = "Vega secrets";
export const SARIF_FINGERPRINT_KEY = "vegaFingerprint/v1";
export const SARIF_CATEGORY = "vega-secrets";
/**
 * Where the driver's documentation lives: a reserved name (RFC 2606) until Vega
 * has a public documentation address; a deployment with one passes its own.
 */
export const DEFAULT_INFORMATION_URI = "https://vega.invalid/docs/secrets";

export type { SarifLevel };

/** A stored finding, as the Finding table and the analyzer hold it. */
export interface SarifFindingInput {
  ruleId: string;
  severity: Severity | string;
  path: string;
  line?: number | null;
  column?: number | null;
  message: string;
  fingerprint: string;
}

/** How the scan ended: completed, or failed with its error (its findings are then partial). */
export type SarifExecution = { successful: true } | { successful: false; errorCode: string; errorMessage: string };

export interface BuildSarifInput {
  scanId: string;
  findings: SarifFindingInput[];
  toolVersion: string;
  informationUri?: string;
  execution?: SarifExecution;
}

export interface SarifLog {
  $schema: string;
  version: "2.1.0";
  runs: SarifRun[];
}

export interface SarifRun {
  tool: { driver: SarifDriver };
  invocations: SarifInvocation[];
  automationDetails: { id: string };
  columnKind: "utf16CodeUnits";
  results: SarifResult[];
}

export interface SarifInvocation {
  executionSuccessful: boolean;
  toolExecutionNotifications?: Array<{ level: "error"; message: { text: string }; descriptor: { id: string } }>;
}

export interface SarifDriver {
  name: string;
  informationUri: string;
  version: string;
  rules: SarifRule[];
}

export interface SarifRule {
  id: string;
  name: string;
  shortDescription: { text: string };
  fullDescription: { text: string };
  help: { text: string };
  helpUri?: string;
  defaultConfiguration: { level: SarifLevel };
  properties: { tags: string[]; precision: "high" | "medium"; "security-severity"?: string };
}

export interface SarifResult {
  ruleId: string;
  ruleIndex: number;
  level: SarifLevel;
  message: { text: string };
  locations: Array<{
    physicalLocation: {
      artifactLocation: { uri: string; uriBaseId: "%SRCROOT%" };
      region?: { startLine: number; startColumn?: number };
    };
  }>;
  partialFingerprints: Record<string, string>;
}

/** CWE-798: use of hard-coded credentials; GitHub shows `external/cwe/...` tags as CWE links. */
const RULE_TAGS = ["security", "secret", "external/cwe/cwe-798"];

export function buildSarif({
  scanId,
  findings,
  toolVersion,
  informationUri = DEFAULT_INFORMATION_URI,
  execution = { successful: true },
}: BuildSarifInput): SarifLog {
  const rules = SECRET_RULES.map(describeRule);
  const ruleIndex = new Map(rules.map((rule, index) => [rule.id, index]));
  for (const finding of findings) {
    if (ruleIndex.has(finding.ruleId)) continue;
    ruleIndex.set(finding.ruleId, rules.length);
    rules.push(describeRetiredRule(finding));
  }

  return {
    $schema: SARIF_SCHEMA_URI,
    version: "2.1.0",
    runs: [
      {
        tool: { driver: { name: SARIF_TOOL_NAME, informationUri, version: toolVersion, rules } },
        invocations: [describeInvocation(execution)],
        automationDetails: { id: `${SARIF_CATEGORY}/${scanId}` },
        columnKind: "utf16CodeUnits",
        results: findings.map((finding) => toResult(finding, ruleIndex.get(finding.ruleId)!)),
      },
    ],
  };
}

function describeInvocation(execution: SarifExecution): SarifInvocation {
  if (execution.successful) return { executionSuccessful: true };
  return {
    executionSuccessful: false,
    toolExecutionNotifications: [{ level: "error", message: { text: execution.errorMessage }, descriptor: { id: execution.errorCode } }],
  };
}

function describeRule(rule: SecretRule): SarifRule {
  const securitySeverity = SECURITY_SEVERITY_BY_SEVERITY[rule.severity];
  return {
    id: rule.id,
    name: pascalCase(rule.id),
    shortDescription: { text: rule.name },
    fullDescription: { text: rule.description },
    help: { text: `${rule.description} Then remove the secret from the source and from the repository's history.` },
    ...(rule.helpUri ? { helpUri: rule.helpUri } : {}),
    defaultConfiguration: { level: SARIF_LEVEL_BY_SEVERITY[rule.severity] },
    properties: {
      tags: RULE_TAGS,
      // Entropy-gated rules guess; the others match a documented token format.
      precision: rule.entropy === undefined ? "high" : "medium",
      ...(securitySeverity ? { "security-severity": securitySeverity } : {}),
    },
  };
}

function describeRetiredRule(finding: SarifFindingInput): SarifRule {
  return {
    id: finding.ruleId,
    name: pascalCase(finding.ruleId),
    shortDescription: { text: finding.ruleId },
    fullDescription: { text: `A secret reported by the rule ${finding.ruleId}, which the current rule catalog no longer has.` },
    help: { text: "Revoke or rotate the secret, then remove it from the source and from the repository's history." },
    defaultConfiguration: { level: sarifLevelOf(finding.severity) },
    properties: { tags: RULE_TAGS, precision: "medium" },
  };
}

function toResult(finding: SarifFindingInput, ruleIndex: number): SarifResult {
  const region =
    finding.line != null && finding.line >= 1
      ? { startLine: finding.line, ...(finding.column != null && finding.column >= 1 ? { startColumn: finding.column } : {}) }
      : undefined;
  return {
    ruleId: finding.ruleId,
    ruleIndex,
    level: sarifLevelOf(finding.severity),
    message: { text: finding.message },
    locations: [
      {
        physicalLocation: {
          artifactLocation: { uri: artifactUri(finding.path), uriBaseId: "%SRCROOT%" },
          ...(region ? { region } : {}),
        },
      },
    ],
    partialFingerprints: { [SARIF_FINGERPRINT_KEY]: finding.fingerprint },
  };
}

/** A relative path as a URI reference: each segment percent-encoded, slashes kept. */
export function artifactUri(relativePath: string): string {
  return relativePath
    .replace(/\\/g, "/")
    .replace(/^\/+/, "")
    .split("/")
    .map((segment) => encodeURIComponent(segment))
    .join("/");
}

function pascalCase(id: string): string {
  return id
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((word) => word[0].toUpperCase() + word.slice(1))
    .join("");
}
