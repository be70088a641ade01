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
 * - Levels and `security-severity` come from shared/severity.ts: CRITICAL and
 *   HIGH are `error`, MEDIUM `warning`, LOW and INFO `note`. GitHub ranks security alerts by the rule's `security-severity`
 *   property (critical above 9.0, high 7.0 to 8.9, medium 4.0 to 6.9, low below
 *   4.0), which only counts on rules tagged `security`; INFO rules get none.
 * - Fingerprints: GitHub tracks an alert across uploads by
 *   `partialFingerprints.primaryLocationLineHash` alone (it computes one from the
 *   source when an upload has none, which an upload through the API cannot, as
 *   GitHub then lacks the checkout). Vega sends it, derived from the finding's
 *   own fingerprint (rule, path and a hash of the secret, no line), in GitHub's
 *   `<hash>:<occurrence>` shape: the same secret in the same file is the same
 *   alert in every re-scan, even after it moved within the file. The full
 *   fingerprint stays under `vegaFingerprint/v1` for other consumers.
 * - Regions carry `endLine` and `endColumn` (the column after the secret's last
 *   character, as SARIF defines it); a finding stored by an older runner, which
 *   sent no end, gets `endLine` equal to its start line and no `endColumn`
 *   (SARIF: the region runs to the end of that line).
 * - Rules: `name` is the rule's title in PascalCase ("JSONWebToken" for `jwt`),
 *   never its id respelled (SARIF Multitool flags a name that differs from the
 *   id only by case); `help.text` and `help.markdown` say what to do, which is
 *   what GitHub shows on the alert.
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
import type * as Sarif from "sarif";
import { SECRET_RULES, type SecretRule } from "../../shared/secret-rules.ts";
import { SARIF_LEVEL_BY_SEVERITY, SECURITY_SEVERITY_BY_SEVERITY, sarifLevelOf, type SarifLevel, type Severity } from "../../shared/severity.ts";

export const SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json";
export const SARIF_TOOL_NAME = "Vega secrets";
export const SARIF_FINGERPRINT_KEY = "vegaFingerprint/v1";
/** The one partial fingerprint GitHub code scanning reads to match alerts across uploads. */
export const PRIMARY_LOCATION_LINE_HASH = "primaryLocationLineHash";
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
  endLine?: number | null;
  endColumn?: number | null;
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

/** The SARIF object model of @types/sarif, narrowed where Vega always fills a field, so tests and callers read them without checks. */
export type SarifLog = Omit<Sarif.Log, "runs"> & { runs: [SarifRun] };
export type SarifRun = Omit<Sarif.Run, "tool" | "invocations" | "results"> & {
  tool: { driver: SarifDriver };
  invocations: [SarifInvocation];
  automationDetails: { id: string };
  columnKind: "utf16CodeUnits";
  results: SarifResult[];
};
export type SarifInvocation = Sarif.Invocation;
export type SarifDriver = Omit<Sarif.ToolComponent, "rules"> & { informationUri: string; version: string; rules: SarifRule[] };
export type SarifRule = Sarif.ReportingDescriptor & {
  name: string;
  shortDescription: Sarif.MultiformatMessageString;
  fullDescription: Sarif.MultiformatMessageString;
  help: { text: string; markdown: string };
  defaultConfiguration: { level: SarifLevel };
  properties: { tags: string[]; precision: "high" | "medium"; "security-severity"?: string };
};
export type SarifResult = Omit<Sarif.Result, "locations" | "partialFingerprints"> & {
  ruleId: string;
  ruleIndex: number;
  level: SarifLevel;
  message: { text: string };
  locations: [Sarif.Location & { physicalLocation: SarifPhysicalLocation }];
  partialFingerprints: { [PRIMARY_LOCATION_LINE_HASH]: string; [SARIF_FINGERPRINT_KEY]: string };
};
export type SarifPhysicalLocation = Sarif.PhysicalLocation & {
  artifactLocation: { uri: string; uriBaseId: "%SRCROOT%" };
  region?: Sarif.Region & { startLine: number; endLine: number };
};

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
    name: sarifRuleName(rule.name),
    shortDescription: { text: rule.name },
    fullDescription: { text: rule.description },
    help: describeHelp(rule.name, rule.description, rule.helpUri),
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
    name: `Retired${sarifRuleName(finding.ruleId)}`,
    shortDescription: { text: finding.ruleId },
    fullDescription: { text: `A secret reported by the rule ${finding.ruleId}, which the current rule catalog no longer has.` },
    help: describeHelp(finding.ruleId, "A secret found by a rule that Vega's catalog no longer has.", undefined),
    defaultConfiguration: { level: sarifLevelOf(finding.severity) },
    properties: { tags: RULE_TAGS, precision: "medium" },
  };
}

/**
 * What GitHub shows under "Recommendation" on the alert (markdown), and a plain
 * text twin for viewers without markdown.
 */
function describeHelp(title: string, description: string, helpUri: string | undefined): SarifRule["help"] {
  const steps = [
    "Revoke or rotate the secret at its provider: treat it as leaked from the moment it was committed.",
    "Remove it from the source and from the repository's history (git filter-repo or BFG), then force-push.",
    "Read it at run time from a secret store or the environment instead of the source.",
  ];
  const text = `${description} What to do: ${steps.map((step, index) => `(${index + 1}) ${step}`).join(" ")}${helpUri ? ` See ${helpUri}.` : ""}`;
  const markdown = [
    `## ${title}`,
    "",
    description,
    "",
    "### What to do",
    "",
    ...steps.map((step, index) => `${index + 1}. ${step}`),
    ...(helpUri ? ["", `See [the provider's documentation](${helpUri}).`] : []),
  ].join("\n");
  return { text, markdown };
}

/**
 * GitHub's `primaryLocationLineHash` shape is `<hex>:<occurrence>`; the hash is
 * the first 16 hex digits of the finding's fingerprint (rule, path, secret), and
 * the occurrence is 1, as a scan holds each fingerprint once.
 */
export function primaryLocationLineHash(fingerprint: string): string {
  return `${fingerprint.slice(0, 16)}:1`;
}

function regionOf(finding: SarifFindingInput): SarifPhysicalLocation["region"] {
  if (finding.line == null || finding.line < 1) return undefined;
  const startColumn = finding.column != null && finding.column >= 1 ? finding.column : undefined;
  const hasEnd = finding.endLine != null && finding.endColumn != null && finding.endColumn >= 1 && finding.endLine >= finding.line;
  if (!hasEnd) return { startLine: finding.line, ...(startColumn ? { startColumn } : {}), endLine: finding.line };
  return { startLine: finding.line, ...(startColumn ? { startColumn } : {}), endLine: finding.endLine!, endColumn: finding.endColumn! };
}

function toResult(finding: SarifFindingInput, ruleIndex: number): SarifResult {
  const region = regionOf(finding);
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
    partialFingerprints: {
      [PRIMARY_LOCATION_LINE_HASH]: primaryLocationLineHash(finding.fingerprint),
      [SARIF_FINGERPRINT_KEY]: finding.fingerprint,
    },
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

/**
 * A rule's SARIF name: its title in PascalCase, acronyms kept ("AWS access key
 * ID" is "AWSAccessKeyID", "JSON Web Token" "JSONWebToken"), so it reads as a
 * name and never as the id respelled.
 */
export function sarifRuleName(title: string): string {
  return title
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((word) => word[0].toUpperCase() + word.slice(1))
    .join("");
}
