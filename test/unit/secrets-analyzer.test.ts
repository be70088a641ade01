import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SECRET_RULES } from "../../shared/secret-rules.ts";
import { describeSkips, noSkips } from "../../worker/runner/analyzers/skipped.ts";
import { DEFAULT_MAX_FILE_BYTES, scanTree } from "../../worker/runner/analyzers/secrets/analyzer.ts";
import { shannonEntropy } from "../../worker/runner/analyzers/secrets/credibility.ts";
import { scanContent, type SecretFinding } from "../../worker/runner/analyzers/secrets/file-scanner.ts";
import { redactSecret } from "../../worker/runner/analyzers/secrets/redaction.ts";
import { expectedFingerprint, plantedSecrets, plantedSecretsTree } from "../support/planted-secrets.ts";

const fixture = plantedSecrets();

async function writeTree(root: string, files: Record<string, string>): Promise<void> {
  for (const [relativePath, content] of Object.entries(files)) {
    const absolutePath = path.join(root, relativePath);
    await mkdir(path.dirname(absolutePath), { recursive: true });
    await writeFile(absolutePath, content);
  }
}

function locations(findings: SecretFinding[]) {
  return findings.map(({ ruleId, path: findingPath, line }) => ({ ruleId, path: findingPath, line }));
}

const byLocation = (a: { path: string; line: number; ruleId: string }, b: { path: string; line: number; ruleId: string }) =>
  a.path.localeCompare(b.path) || a.line - b.line || a.ruleId.localeCompare(b.ruleId);

describe("the rule catalog", () => {
  it("has at least 15 rules with unique ids, keywords and a capture group each", () => {
    expect(SECRET_RULES.length).toBeGreaterThanOrEqual(15);
    expect(new Set(SECRET_RULES.map((rule) => rule.id)).size).toBe(SECRET_RULES.length);
    for (const rule of SECRET_RULES) {
      expect(rule.keywords.length, rule.id).toBeGreaterThan(0);
      expect(new RegExp(`${rule.pattern.source}|`).exec("")!.length, rule.id).toBeGreaterThan(1);
      if (rule.pattern.flags.includes("i")) {
        for (const keyword of rule.keywords) expect(keyword, rule.id).toBe(keyword.toLowerCase());
      }
    }
  });

  it("has a planted secret for every rule", () => {
    const plantedRules = new Set(fixture.planted.map((secret) => secret.ruleId));
    expect(SECRET_RULES.map((rule) => rule.id).filter((id) => !plantedRules.has(id))).toEqual([]);
  });

  it("keeps every planted secret containing one of its rule's keywords", () => {
    for (const secret of fixture.planted) {
      const rule = SECRET_RULES.find((candidate) => candidate.id === secret.ruleId)!;
      const line = fixture.files[secret.path].split("\n")[secret.line - 1];
      const haystack = rule.pattern.flags.includes("i") ? line.toLowerCase() : line;
      expect(rule.keywords.some((keyword) => haystack.includes(keyword)), rule.id).toBe(true);
    }
  });
});

describe("finds each rule's planted secret", () => {
  it.each(fixture.planted.map((secret) => [`${secret.ruleId} in ${secret.path}`, secret] as const))(
    "%s, at its line and column, redacted",
    (_name, secret) => {
      const findings = scanContent(secret.path, fixture.files[secret.path]);
      const finding = findings.find((candidate) => candidate.ruleId === secret.ruleId && candidate.line === secret.line);
      expect(finding, JSON.stringify(findings.map(({ ruleId, line }) => ({ ruleId, line })))).toBeDefined();
      expect(finding!.column).toBe(secret.column);
      expect(finding!.path).toBe(secret.path);
      expect(finding!.severity).toBe(SECRET_RULES.find((rule) => rule.id === secret.ruleId)!.severity);
      expect(finding!.fingerprint).toBe(expectedFingerprint(secret.ruleId, secret.path, secret.secret));
      for (const text of [finding!.snippet, finding!.message]) {
        expect(text).not.toContain(secret.secret);
        // Not even the secret's second half.
        const firstLine = secret.secret.split("\n")[0];
        expect(text).not.toContain(firstLine.slice(Math.ceil(firstLine.length / 2)));
      }
      expect(finding!.snippet).toContain(redactSecret(secret.secret));
    },
  );

  it("reports one finding per secret in a file, however many rules match its text", () => {
    for (const [filePath, content] of Object.entries(fixture.files)) {
      if (filePath.startsWith("decoys/")) continue;
      const expected = fixture.planted.filter((secret) => secret.path === filePath);
      if (expected.length === 0) continue;
      expect(locations(scanContent(filePath, content)).sort(byLocation), filePath).toEqual(
        expected.map(({ ruleId, line }) => ({ ruleId, path: filePath, line })).sort(byLocation),
      );
    }
  });

  it("gives the same findings for a string and for its UTF-8 bytes", () => {
    const content = fixture.files["docs/déploiement.md"];
    expect(scanContent("docs/déploiement.md", Buffer.from(content, "utf8"))).toEqual(scanContent("docs/déploiement.md", content));
  });

  it("counts columns in UTF-16 units after non-ASCII text and ignores CRLF in snippets", () => {
    const [unicode] = scanContent("docs/déploiement.md", fixture.files["docs/déploiement.md"]);
    expect(unicode.column).toBe("Clé « ".length + 1);
    const [crlf] = scanContent("windows/setup.ps1", fixture.files["windows/setup.ps1"]);
    expect(crlf.line).toBe(2);
    expect(crlf.snippet).toBe('$env:NPM_TOKEN = "npm_****"');
  });

  it("finds a secret in the middle of a long minified line, and cuts the snippet around it", () => {
    const secret = fixture.planted.find((planted) => planted.ruleId === "github-pat")!.secret;
    const before = "var a=1;".repeat(5000);
    const content = `${before}var t="${secret}";${"var b=2;".repeat(5000)}`;
    const [finding] = scanContent("dist/app.min.js", content);
    expect(finding).toMatchObject({ ruleId: "github-pat", line: 1, column: before.length + 'var t="'.length + 1 });
    expect(finding.snippet.length).toBeLessThanOrEqual(202);
    expect(finding.snippet).toContain('var t="ghp_****"');
    expect(finding.snippet).not.toContain(secret);
  });

  it("redacts every occurrence of the secret on the snippet's line", () => {
    const secret = fixture.planted.find((planted) => planted.ruleId === "npm-access-token")!.secret;
    const [finding] = scanContent("Makefile", `publish:\n\tNPM_TOKEN=${secret} npm publish --token ${secret}\n`);
    expect(finding.snippet).toBe("\tNPM_TOKEN=npm_**** npm publish --token npm_****");
  });

  it("shows fewer characters of short secrets", () => {
    expect(redactSecret("ghp_0123456789abcdef")).toBe("ghp_****");
    expect(redactSecret("q8V#zL2m")).toBe("q8****");
  });
});

describe("ignores placeholders and look-alikes", () => {
  it.each(fixture.decoys.map((decoy) => [decoy.reason, decoy] as const))("%s", (_reason, decoy) => {
    expect(scanContent(decoy.path, decoy.text)).toEqual([]);
  });

  it("measures entropy in bits per character", () => {
    expect(shannonEntropy("aaaa")).toBe(0);
    expect(shannonEntropy("abcd")).toBe(2);
    expect(shannonEntropy("changeme")).toBeLessThan(3);
  });
});

describe("fingerprints", () => {
  const secret = fixture.planted.find((planted) => planted.ruleId === "stripe-secret-key")!.secret;

  it("are stable across runs and follow sha256(ruleId:path:sha256(secret))", () => {
    const content = `Stripe.api_key = "${secret}"\n`;
    const first = scanContent("billing/stripe.rb", content);
    const second = scanContent("billing/stripe.rb", content);
    expect(first).toHaveLength(1);
    expect(second).toEqual(first);
    expect(first[0].fingerprint).toBe(expectedFingerprint("stripe-secret-key", "billing/stripe.rb", secret));
  });

  it("survive the secret moving to another line", () => {
    const [before] = scanContent("billing/stripe.rb", `Stripe.api_key = "${secret}"\n`);
    const [after] = scanContent("billing/stripe.rb", `# billing\n\n\nStripe.api_key = "${secret}"\n`);
    expect(after.line).toBe(4);
    expect(after.fingerprint).toBe(before.fingerprint);
  });

  it("make the same secret twice in a file one finding at its first line, and in two files two findings", () => {
    const content = `a = "${secret}"\nb = 1\nc = "${secret}"\n`;
    const findings = scanContent("one.py", content);
    expect(locations(findings)).toEqual([{ ruleId: "stripe-secret-key", path: "one.py", line: 1 }]);
    expect(scanContent("two.py", content)[0].fingerprint).not.toBe(findings[0].fingerprint);
  });

  it("differ between two secrets in one file", () => {
    const other = `sk_live_${"Z9y8X7w6V5u4T3s2R1q0P9o8"}`;
    const findings = scanContent("keys.py", `a = "${secret}"\nb = "${other}"\n`);
    expect(findings).toHaveLength(2);
    expect(findings[0].fingerprint).not.toBe(findings[1].fingerprint);
  });
});

describe("scans a tree", () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "vega-secrets-"));
    await writeTree(root, plantedSecretsTree().files);
    await symlink(path.join(root, ".npmrc"), path.join(root, "linked-npmrc"));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("reports exactly the planted secrets, with relative forward-slash paths", async () => {
    const { expected } = plantedSecretsTree();
    const summary = await scanTree(root);
    expect(locations(summary.findings).sort(byLocation)).toEqual([...expected].sort(byLocation));
    expect(summary.findings.every((finding) => !finding.path.startsWith("/") && !finding.path.includes("\\"))).toBe(true);
  });

  it("skips binary files, files over the size limit, symbolic links, .git and node_modules", async () => {
    const { files } = plantedSecretsTree();
    const regularFiles = Object.keys(files).filter((file) => !file.startsWith(".git/") && !file.startsWith("node_modules/"));
    const summary = await scanTree(root);
    // logo.bin (binary), bundle.min.js (over 1 MiB), linked-npmrc (a link).
    expect(summary.filesSkipped).toBe(3);
    // Each reason counted apart; the directories not entered too.
    expect(summary.skipped).toEqual({
      vendoredDirectories: 1,
      versionControlDirectories: 1,
      binaryFiles: 1,
      oversizedFiles: 1,
      symbolicLinks: 1,
      unreadableFiles: 0,
    });
    expect(describeSkips(summary.skipped)).toBe(
      "1 vendored directory, 1 version-control directory, 1 binary file, 1 file over the size limit, 1 symbolic link",
    );
    expect(summary.filesScanned).toBe(regularFiles.length - 2);
    expect(files["vendor/bundle.min.js"].length).toBeGreaterThan(DEFAULT_MAX_FILE_BYTES);
    const expectedBytes = regularFiles
      .filter((file) => file !== "assets/logo.bin" && file !== "vendor/bundle.min.js")
      .reduce((total, file) => total + Buffer.byteLength(files[file]), 0);
    expect(summary.bytesScanned).toBe(expectedBytes);
  });

  it("honours a lower size limit", async () => {
    const summary = await scanTree(root, { maxFileBytes: 100 });
    const small = Object.entries(plantedSecretsTree().files).filter(
      ([file, content]) => Buffer.byteLength(content) <= 100 && !file.startsWith(".git/") && !file.startsWith("node_modules/") && file !== "assets/logo.bin",
    );
    expect(summary.filesScanned).toBe(small.length);
    expect(summary.findings.every((finding) => small.some(([file]) => file === finding.path))).toBe(true);
  });

  it("finds the same on worker threads as in-process", async () => {
    const inProcess = await scanTree(root, { concurrency: 1 });
    const onWorkers = await scanTree(root, { concurrency: 2, scanOnCallingThread: false });
    expect(onWorkers).toEqual(inProcess);
  }, 30_000);

  it("shares many files among several workers and the calling thread", async () => {
    const many = await mkdtemp(path.join(os.tmpdir(), "vega-secrets-many-"));
    try {
      const tokens = fixture.planted.filter((planted) => planted.ruleId === "github-pat" || planted.ruleId === "npm-access-token");
      const files: Record<string, string> = {};
      for (let index = 0; index < 200; index++) {
        files[`pkg${index % 7}/file${index}.ts`] = `// file ${index}
export const value = ${index};
${index % 10 === 0 ? `const token = "${tokens[index % tokens.length].secret}";
` : ""}`;
      }
      await writeTree(many, files);
      const inProcess = await scanTree(many, { concurrency: 1 });
      expect(inProcess.findings).toHaveLength(20);
      expect(await scanTree(many, { concurrency: 3, scanOnCallingThread: false })).toEqual(inProcess);
      expect(await scanTree(many, { concurrency: 2, startWorkersAfterMs: 0 })).toEqual(inProcess);
    } finally {
      await rm(many, { recursive: true, force: true });
    }
  }, 30_000);

  it("fingerprints identically across two scans", async () => {
    const first = await scanTree(root);
    const second = await scanTree(root);
    expect(second.findings.map((finding) => finding.fingerprint)).toEqual(first.findings.map((finding) => finding.fingerprint));
  });

  it("scans nested directories and an empty tree", async () => {
    const nested = await mkdtemp(path.join(os.tmpdir(), "vega-secrets-nested-"));
    try {
      expect(await scanTree(nested)).toEqual({ findings: [], filesScanned: 0, filesSkipped: 0, skipped: noSkips(), bytesScanned: 0 });
      const secret = fixture.planted.find((planted) => planted.ruleId === "gitlab-pat")!.secret;
      await writeTree(nested, { "a/b/c/d/e/deep.env": `\nGITLAB_TOKEN=${secret}\n`, "a/empty.txt": "" });
      const summary = await scanTree(nested);
      expect(locations(summary.findings)).toEqual([{ ruleId: "gitlab-pat", path: "a/b/c/d/e/deep.env", line: 2 }]);
      expect(summary.filesScanned).toBe(2);
    } finally {
      await rm(nested, { recursive: true, force: true });
    }
  });
});

describe("a scan of a dependency tree says what it did not read", () => {
  it("counts vendored directories, nested ones each, and a tree of nothing but dependencies is not '0 skipped'", async () => {
    const tree = await mkdtemp(path.join(os.tmpdir(), "vega-secrets-vendored-"));
    try {
      await writeTree(tree, {
        "node_modules/a/index.js": "module.exports = 1;\n",
        "packages/web/node_modules/b/index.js": "module.exports = 2;\n",
        ".hg/store/data": "x",
        "big.txt": "x".repeat(200),
      });
      const summary = await scanTree(tree, { maxFileBytes: 100 });
      expect(summary.filesScanned).toBe(0);
      expect(summary.skipped).toMatchObject({ vendoredDirectories: 2, versionControlDirectories: 1, oversizedFiles: 1 });
      expect(describeSkips(summary.skipped)).toBe("2 vendored directories, 1 version-control directory, 1 file over the size limit");
    } finally {
      await rm(tree, { recursive: true, force: true });
    }
  });
});
