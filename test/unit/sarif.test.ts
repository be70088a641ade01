/**
 * The SARIF report, validated against the official SARIF 2.1.0 JSON schema.
 *
 * test/fixtures/sarif-schema-2.1.0.json is, byte for byte, the OASIS SARIF TC's
 * schema as published with the 2.1.0 Committee Specification:
 * oasis-tcs/sarif-spec, Documents/CommitteeSpecifications/2.1.0/sarif-schema-2.1.0.json
 * (commit 3682e9ee648f2f3e11ba1fcd47fc390a0b8f9dab), the draft-07 edition whose
 * $id is the Schemata/sarif-schema-2.1.0.json address that github/codeql-action
 * also validates against. Its sha256 is pinned below, so an edit shows.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ValidateFunction } from "ajv";
import { sarifValidator } from "../support/sarif-schema.ts";
import { beforeAll, describe, expect, it } from "vitest";
import {
  artifactUri,
  buildSarif,
  PRIMARY_LOCATION_LINE_HASH,
  SARIF_FINGERPRINT_KEY,
  type SarifFindingInput,
  type SarifLog,
} from "../../api/services/sarif.ts";
import { SECRET_RULES } from "../../shared/secret-rules.ts";
import { scanTree, type SecretFinding } from "../../worker/runner/analyzers/secrets/analyzer.ts";
import { plantedSecrets, plantedSecretsTree } from "../support/planted-secrets.ts";

const SCHEMA_PATH = fileURLToPath(new URL("../fixtures/sarif-schema-2.1.0.json", import.meta.url));
const SCHEMA_SHA256 = "80cd7ffb9b62a4162d541aa9170862dd264f6cce0f04c57f1ac9f2337b808958";

let validate: ValidateFunction;
let scannedFindings: SecretFinding[];

/** The analyzer's findings over a tree written to a temporary directory. */
async function scanFiles(files: Record<string, string>): Promise<SecretFinding[]> {
  const root = await mkdtemp(path.join(os.tmpdir(), "vega-sarif-"));
  try {
    for (const [relativePath, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(root, relativePath)), { recursive: true });
      await writeFile(path.join(root, relativePath), content);
    }
    return (await scanTree(root, { concurrency: 1 })).findings;
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  ({ validate } = sarifValidator());
  scannedFindings = await scanFiles(plantedSecretsTree().files);
});

function expectValid(log: SarifLog): void {
  const valid = validate(JSON.parse(JSON.stringify(log)));
  expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
  expect(valid).toBe(true);
}

const finding = (overrides: Partial<SarifFindingInput> = {}): SarifFindingInput => ({
  ruleId: "github-pat",
  severity: "CRITICAL",
  path: "src/app.ts",
  line: 3,
  column: 17,
  message: "GitHub personal access token found (ghp_****).",
  fingerprint: "f".repeat(64),
  ...overrides,
});

describe("the schema fixture", () => {
  it("is the official draft-07 SARIF 2.1.0 schema, unmodified", () => {
    const text = readFileSync(SCHEMA_PATH);
    expect(createHash("sha256").update(text).digest("hex")).toBe(SCHEMA_SHA256);
    const schema = JSON.parse(text.toString("utf8"));
    expect(schema.$schema).toBe("http://json-schema.org/draft-07/schema#");
    expect(schema.title).toBe("Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema");
    expect(schema.$id).toBe("https://raw.githubusercontent.com/oasis-tcs/sarif-spec/master/Schemata/sarif-schema-2.1.0.json");
  });

  it("rejects a log that breaks it, so the checks below mean something", () => {
    const log = buildSarif({ scanId: "scan-1", findings: [finding()], toolVersion: "0.1.0" }) as unknown as {
      runs: Array<{ results: Array<{ level: string }> }>;
    };
    log.runs[0].results[0].level = "fatal";
    expect(validate(log)).toBe(false);
  });
});

describe("buildSarif produces a valid SARIF 2.1.0 log", () => {
  it("for the findings of a scan of the planted tree", () => {
    expect(scannedFindings.length).toBe(plantedSecretsTree().expected.length);
    expectValid(buildSarif({ scanId: "c0ffee00-0000-4000-8000-000000000001", findings: scannedFindings, toolVersion: "0.1.0" }));
  });

  it("for a scan without findings", () => {
    const log = buildSarif({ scanId: "scan-empty", findings: [], toolVersion: "0.1.0" });
    expectValid(log);
    expect(log.runs[0].results).toEqual([]);
    expect(log.runs[0].tool.driver.rules).toHaveLength(SECRET_RULES.length);
  });

  it("for rows without a column or a line, from a rule the catalog no longer has, at awkward paths", () => {
    const findings = [
      finding({ column: null }),
      finding({ line: null, column: null, path: "docs/read me.md" }),
      finding({ ruleId: "legacy-rule", severity: "LOW", path: "src/#weird?/100%.ts" }),
      finding({ path: "docs/déploiement.md", severity: "SOMETHING-NEW" }),
    ];
    const log = buildSarif({ scanId: "scan-2", findings, toolVersion: "0.1.0" });
    expectValid(log);
    const [withoutColumn, withoutLine, legacy, unicode] = log.runs[0].results;
    expect(withoutColumn.locations[0].physicalLocation.region).toEqual({ startLine: 3, endLine: 3 });
    expect(withoutLine.locations[0].physicalLocation.region).toBeUndefined();
    expect(withoutLine.locations[0].physicalLocation.artifactLocation.uri).toBe("docs/read%20me.md");
    expect(legacy.locations[0].physicalLocation.artifactLocation.uri).toBe("src/%23weird%3F/100%25.ts");
    expect(log.runs[0].tool.driver.rules[legacy.ruleIndex].id).toBe("legacy-rule");
    expect(legacy.level).toBe("note");
    expect(unicode.level).toBe("warning");
    expect(decodeURIComponent(unicode.locations[0].physicalLocation.artifactLocation.uri)).toBe("docs/déploiement.md");
  });
});

describe("the fields GitHub code scanning reads", () => {
  let log: SarifLog;

  beforeAll(() => {
    log = buildSarif({ scanId: "scan-42", findings: scannedFindings, toolVersion: "1.2.3" });
  });

  it("names the format, the tool and the run", () => {
    expect(log.version).toBe("2.1.0");
    expect(log.$schema).toBe("https://json.schemastore.org/sarif-2.1.0.json");
    expect(log.runs).toHaveLength(1);
    const { driver } = log.runs[0].tool;
    expect(driver.name).toBe("Vega secrets");
    expect(driver.version).toBe("1.2.3");
    expect(() => new URL(driver.informationUri)).not.toThrow();
    // GitHub's category is what comes before the last slash; it must not change between scans.
    expect(log.runs[0].automationDetails.id).toBe("vega-secrets/scan-42");
    expect(log.runs[0].columnKind).toBe("utf16CodeUnits");
  });

  it("describes every catalog rule with a level, tags and a security-severity", () => {
    const { rules } = log.runs[0].tool.driver;
    expect(new Set(rules.map((rule) => rule.id)).size).toBe(rules.length);
    for (const catalogRule of SECRET_RULES) {
      const rule = rules.find((candidate) => candidate.id === catalogRule.id)!;
      expect(rule.shortDescription.text).toBe(catalogRule.name);
      expect(rule.fullDescription.text).toBe(catalogRule.description);
      expect(rule.helpUri).toBe(catalogRule.helpUri);
      expect(rule.properties.tags).toContain("security");
      const securitySeverity = Number(rule.properties["security-severity"]);
      expect(securitySeverity).toBeGreaterThan(0);
      expect(securitySeverity).toBeLessThanOrEqual(10);
      const expectedLevel = { CRITICAL: "error", HIGH: "error", MEDIUM: "warning", LOW: "note", INFO: "note" }[catalogRule.severity];
      expect(rule.defaultConfiguration.level).toBe(expectedLevel);
      if (catalogRule.severity === "CRITICAL") expect(securitySeverity).toBeGreaterThanOrEqual(9);
      if (catalogRule.severity === "HIGH") expect(securitySeverity).toBeGreaterThanOrEqual(7);
    }
  });

  it("places each result at its finding, with its rule and fingerprint", () => {
    const { results, tool } = log.runs[0];
    expect(results).toHaveLength(scannedFindings.length);
    scannedFindings.forEach((scanned, index) => {
      const result = results[index];
      expect(result.ruleId).toBe(scanned.ruleId);
      expect(tool.driver.rules[result.ruleIndex].id).toBe(scanned.ruleId);
      expect(result.level).toBe({ CRITICAL: "error", HIGH: "error", MEDIUM: "warning", LOW: "note", INFO: "note" }[scanned.severity]);
      expect(result.message.text).toBe(scanned.message);
      expect(result.locations).toEqual([
        {
          physicalLocation: {
            artifactLocation: { uri: artifactUri(scanned.path), uriBaseId: "%SRCROOT%" },
            region: { startLine: scanned.line, startColumn: scanned.column, endLine: scanned.endLine, endColumn: scanned.endColumn },
          },
        },
      ]);
      expect(result.partialFingerprints).toEqual({
        [PRIMARY_LOCATION_LINE_HASH]: `${scanned.fingerprint.slice(0, 16)}:1`,
        [SARIF_FINGERPRINT_KEY]: scanned.fingerprint,
      });
    });
  });

  it("never carries a secret", () => {
    const text = JSON.stringify(log);
    for (const { secret } of plantedSecrets().planted) expect(text).not.toContain(secret.split("\n")[0]);
  });
});

/**
 * One test per requirement of GitHub's SARIF support page ("SARIF support for
 * code scanning": the properties it reads, and its upload limits) and of SARIF
 * Multitool's analysis rules that the issue named.
 */
describe("GitHub code scanning's requirements", () => {
  let log: SarifLog;

  beforeAll(() => {
    log = buildSarif({ scanId: "scan-gh", findings: scannedFindings, toolVersion: "1.2.3" });
  });

  it("every result has partialFingerprints.primaryLocationLineHash, in GitHub's <hash>:<occurrence> shape", () => {
    for (const result of log.runs[0].results) {
      expect(result.partialFingerprints[PRIMARY_LOCATION_LINE_HASH]).toMatch(/^[0-9a-f]{16}:[1-9][0-9]*$/);
    }
    const hashes = log.runs[0].results.map((result) => result.partialFingerprints[PRIMARY_LOCATION_LINE_HASH]);
    expect(new Set(hashes).size).toBe(hashes.length);
  });

  it("primaryLocationLineHash is the same in a re-scan of the same code, and after the secret moved down its file", async () => {
    const files = plantedSecretsTree().files;
    const rescanned = await scanFiles(files);
    const shifted = await scanFiles(Object.fromEntries(Object.entries(files).map(([name, text]) => [name, `// a new header line\n\n${text}`])));
    const hashesOf = (findings: SecretFinding[]) =>
      new Map(
        buildSarif({ scanId: "again", findings, toolVersion: "1.2.3" }).runs[0].results.map((result) => [
          `${result.ruleId} ${result.locations[0].physicalLocation.artifactLocation.uri}`,
          result.partialFingerprints[PRIMARY_LOCATION_LINE_HASH],
        ]),
      );
    const first = hashesOf(scannedFindings);
    expect(hashesOf(rescanned)).toEqual(first);
    expect(hashesOf(shifted)).toEqual(first);
    // The lines did move: the hash does not depend on them.
    expect(shifted.map((found) => found.line)).not.toEqual(scannedFindings.map((found) => found.line));
  });

  it("every region has endLine and endColumn, ending where the secret ends", () => {
    const { planted } = plantedSecrets();
    for (const result of log.runs[0].results) {
      const region = result.locations[0].physicalLocation.region!;
      expect(region.endLine).toBeGreaterThanOrEqual(region.startLine);
      expect(region.endColumn).toBeGreaterThanOrEqual(1);
      if (region.endLine === region.startLine) expect(region.endColumn).toBeGreaterThan(region.startColumn!);
    }
    // A secret on one line: the end column is the one after its last character.
    const githubToken = planted.find((secret) => secret.ruleId === "github-pat")!;
    const githubResult = log.runs[0].results.find(
      (result) => result.ruleId === "github-pat" && decodeURIComponent(result.locations[0].physicalLocation.artifactLocation.uri) === githubToken.path,
    )!;
    expect(githubResult.locations[0].physicalLocation.region).toMatchObject({
      startLine: githubToken.line,
      startColumn: githubToken.column,
      endLine: githubToken.line,
      endColumn: githubToken.column + githubToken.secret.length,
    });
    // A PEM block ends lines later, after its END line.
    const privateKey = planted.find((secret) => secret.ruleId === "private-key")!;
    const keyRegion = log.runs[0].results.find((result) => result.ruleId === "private-key")!.locations[0].physicalLocation.region!;
    const keyLines = privateKey.secret.split("\n");
    expect(keyRegion.endLine).toBe(privateKey.line + keyLines.length - 1);
    expect(keyRegion.endColumn).toBe(keyLines[keyLines.length - 1].length + 1);
  });

  it("every rule has help.text and help.markdown that say what to do", () => {
    for (const rule of log.runs[0].tool.driver.rules) {
      expect(rule.help.text.length).toBeGreaterThan(40);
      expect(rule.help.text).toMatch(/Revoke or rotate/);
      expect(rule.help.markdown).toMatch(/^## /);
      expect(rule.help.markdown).toMatch(/### What to do\n\n1\. Revoke or rotate/);
      const catalogRule = SECRET_RULES.find((candidate) => candidate.id === rule.id)!;
      if (catalogRule.helpUri) expect(rule.help.markdown).toContain(`](${catalogRule.helpUri})`);
    }
  });

  it("no rule's name is its id respelled: names differ from ids beyond case (SARIF Multitool's warning), and are distinct PascalCase identifiers", () => {
    const rules = log.runs[0].tool.driver.rules;
    for (const rule of rules) {
      expect(rule.name).toMatch(/^[A-Z][A-Za-z0-9]*$/);
      expect(rule.name.toLowerCase()).not.toBe(rule.id.toLowerCase());
    }
    expect(new Set(rules.map((rule) => rule.name)).size).toBe(rules.length);
    expect(rules.find((rule) => rule.id === "jwt")!.name).toBe("JSONWebToken");
    const retired = buildSarif({ scanId: "s", findings: [finding({ ruleId: "legacy" })], toolVersion: "1" }).runs[0].tool.driver.rules.at(-1)!;
    expect(retired.name.toLowerCase()).not.toBe(retired.id.toLowerCase());
  });

  it("invocations say whether the scan completed: executionSuccessful, and the error of a failed one as a notification", () => {
    expect(log.runs[0].invocations).toEqual([{ executionSuccessful: true }]);
    const failed = buildSarif({
      scanId: "scan-failed",
      findings: [finding()],
      toolVersion: "1.2.3",
      execution: { successful: false, errorCode: "RUNNER_HUNG", errorMessage: "The runner stopped reporting" },
    });
    expectValid(failed);
    expect(failed.runs[0].invocations).toEqual([
      {
        executionSuccessful: false,
        toolExecutionNotifications: [{ level: "error", message: { text: "The runner stopped reporting" }, descriptor: { id: "RUNNER_HUNG" } }],
      },
    ]);
  });

  it("stays within GitHub's upload limits: one run, at most 20 tags a rule, one location a result, relative URIs", () => {
    expect(log.runs).toHaveLength(1);
    for (const rule of log.runs[0].tool.driver.rules) expect(rule.properties.tags.length).toBeLessThanOrEqual(20);
    for (const result of log.runs[0].results) {
      expect(result.locations).toHaveLength(1);
      const { uri, uriBaseId } = result.locations[0].physicalLocation.artifactLocation;
      expect(uriBaseId).toBe("%SRCROOT%");
      expect(uri).not.toMatch(/^\/|^[a-z]+:/i);
    }
  });

  it("a finding stored without an end (an older runner's) still gets endLine, and a valid log", () => {
    const old = buildSarif({ scanId: "old", findings: [finding({ endLine: null, endColumn: null })], toolVersion: "1" });
    expectValid(old);
    expect(old.runs[0].results[0].locations[0].physicalLocation.region).toEqual({ startLine: 3, startColumn: 17, endLine: 3 });
  });
});
