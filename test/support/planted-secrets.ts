/**
 * A source tree with one planted secret per rule of the secrets analyzer, plus
 * decoys that must not be reported, for the analyzer's tests and for the
 * end-to-end scan test (which zips `files`, submits them and compares the scan's
 * findings with `expected`).
 *
 * No secret-shaped literal appears in this file: every token is assembled at run
 * time from its public prefix and characters drawn from a seeded generator, so
 * the tree is the same on every call and push protection has nothing to match.
 *
 * What the tree pins down, beyond "every rule fires":
 * - the same token twice in one file is one finding, at its first line;
 *   the same token in another file is another finding;
 * - binary files (a NUL byte), files over 1 MiB, and anything under .git/ or
 *   node_modules/ are not scanned, whatever they contain.
 */
import { createHash } from "node:crypto";

export interface PlantedSecret {
  ruleId: string;
  path: string;
  /** 1-based line and UTF-16 column of the secret's first character. */
  line: number;
  column: number;
  secret: string;
}

export interface Decoy {
  /** Why it must not be reported. */
  reason: string;
  path: string;
  text: string;
}

export interface PlantedSecretsFixture {
  files: Record<string, string>;
  planted: PlantedSecret[];
  decoys: Decoy[];
}

const UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER = "abcdefghijklmnopqrstuvwxyz";
const DIGITS = "0123456789";
const ALPHANUMERIC = UPPER + LOWER + DIGITS;
const BASE32 = `${UPPER}234567`;
const BASE64 = `${ALPHANUMERIC}+/`;
const BASE64URL = `${ALPHANUMERIC}-_`;
const HEX = "0123456789abcdef";
const PASSWORD_CHARACTERS = `${ALPHANUMERIC}!#%&*+-=?@^_~`;

/** mulberry32: small, seeded, the same sequence on every platform. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

function base64url(value: string): string {
  return Buffer.from(value, "utf8").toString("base64url");
}

/** The planted tree with each secret's exact position, and the decoys. */
export function plantedSecrets(): PlantedSecretsFixture {
  const random = seededRandom(0x5ec2e75);
  const draw = (alphabet: string, length: number) =>
    Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join("");

  const tokens = {
    awsAccessKeyId: `AKIA${draw(BASE32, 16)}`,
    awsSecretAccessKey: draw(`${ALPHANUMERIC}/+`, 40),
    githubPat: `ghp_${draw(ALPHANUMERIC, 36)}`,
    githubFineGrainedPat: `github_pat_${draw(ALPHANUMERIC, 22)}_${draw(ALPHANUMERIC, 59)}`,
    githubOauth: `gho_${draw(ALPHANUMERIC, 36)}`,
    githubApp: `ghs_${draw(ALPHANUMERIC, 36)}`,
    githubRefresh: `ghr_${draw(ALPHANUMERIC, 36)}`,
    gitlabPat: `glpat-${draw(`${ALPHANUMERIC}_-`, 20)}`,
    slackBot: `xoxb-${draw(DIGITS, 12)}-${draw(DIGITS, 13)}-${draw(ALPHANUMERIC, 24)}`,
    slackWebhook: `https://hooks.slack.com/services/T${draw(UPPER + DIGITS, 10)}/B${draw(UPPER + DIGITS, 10)}/${draw(ALPHANUMERIC, 24)}`,
    stripeSecret: `sk_live_${draw(ALPHANUMERIC, 32)}`,
    stripeRestricted: `rk_live_${draw(ALPHANUMERIC, 32)}`,
    googleApiKey: `AIza${draw(BASE64URL, 35)}`,
    npm: `npm_${draw(ALPHANUMERIC, 36)}`,
    openai: `sk-proj-${draw(BASE64URL, 40)}T3BlbkFJ${draw(BASE64URL, 40)}`,
    anthropic: `sk-ant-api03-${draw(BASE64URL, 93)}AA`,
    twilio: `SK${draw(HEX, 32)}`,
    sendgrid: `SG.${draw(BASE64URL, 22)}.${draw(BASE64URL, 43)}`,
    azureAccountKey: `${draw(BASE64, 86)}==`,
    pypi: `pypi-AgEIcHlwaS5vcmc${draw(BASE64URL, 64)}`,
    shopify: `shpat_${draw(HEX, 32)}`,
    databasePassword: draw(ALPHANUMERIC, 18),
    jwt: [
      base64url(JSON.stringify({ alg: "HS256", typ: "JWT" })),
      base64url(JSON.stringify({ sub: `user-${draw(DIGITS, 6)}`, iat: 1718000000, role: "admin" })),
      draw(BASE64URL, 43),
    ].join("."),
    password: draw(PASSWORD_CHARACTERS, 16),
    apiKey: draw(ALPHANUMERIC, 32),
  };
  const privateKeyLines = [
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    ...Array.from({ length: 12 }, () => draw(BASE64, 70)),
    `${draw(BASE64, 20)}==`,
    "-----END OPENSSH PRIVATE KEY-----",
  ];
  const privateKey = privateKeyLines.join("\n");

  const files: Record<string, string> = {
    "config/aws.env": [
      "# Credentials of the deploy job",
      "AWS_REGION=eu-west-1",
      `AWS_ACCESS_KEY_ID=${tokens.awsAccessKeyId}`,
      `AWS_SECRET_ACCESS_KEY=${tokens.awsSecretAccessKey}`,
      "",
    ].join("\n"),
    "src/integrations/github.ts": [
      'import { Octokit } from "@octokit/rest";',
      "",
      "// Temporary, until the vault integration lands.",
      `export const GITHUB_TOKEN = "${tokens.githubPat}";`,
      `export const OAUTH_TOKEN = "${tokens.githubOauth}";`,
      `const installationToken = '${tokens.githubApp}';`,
      `const refreshToken = \`${tokens.githubRefresh}\`;`,
      `export const releaseToken = "${tokens.githubFineGrainedPat}";`,
      "",
      "export function client(): Octokit {",
      "  return new Octokit({ auth: GITHUB_TOKEN, userAgent: installationToken + refreshToken });",
      "}",
      "",
      "// The same token, pasted again: still one finding, at its first line.",
      `const BACKUP_TOKEN = "${tokens.githubPat}";`,
      "",
    ].join("\n"),
    "scripts/release.sh": [
      "#!/bin/sh",
      "set -eu",
      `export GH_TOKEN=${tokens.githubPat}`,
      'gh release create "$1" dist/*',
      "",
    ].join("\n"),
    "deploy/.gitlab-ci.yml": [
      "variables:",
      '  DOCKER_DRIVER: "overlay2"',
      `  GITLAB_TOKEN: "${tokens.gitlabPat}"`,
      "",
    ].join("\n"),
    "ops/slack.py": [
      "import requests",
      "",
      `SLACK_BOT_TOKEN = "${tokens.slackBot}"`,
      `ALERTS_WEBHOOK = "${tokens.slackWebhook}"`,
      "",
      "def notify(text):",
      '    requests.post(ALERTS_WEBHOOK, json={"text": text}, timeout=5)',
      "",
    ].join("\n"),
    "billing/stripe.rb": [
      "require 'stripe'",
      "",
      `Stripe.api_key = "${tokens.stripeSecret}"`,
      `REPORTING_KEY = '${tokens.stripeRestricted}'`,
      "",
    ].join("\n"),
    "web/src/firebase.js": [
      "export const firebaseConfig = {",
      `  apiKey: "${tokens.googleApiKey}",`,
      '  authDomain: "vega-demo.firebaseapp.com",',
      "};",
      "",
    ].join("\n"),
    ".npmrc": [`//registry.npmjs.org/:_authToken=${tokens.npm}`, "always-auth=true", ""].join("\n"),
    "infra/tls.tf": [
      'resource "tls_private_key" "deploy" { algorithm = "ED25519" }',
      "",
      "locals {",
      "  deploy_key = <<EOT",
      ...privateKeyLines,
      "EOT",
      "}",
      "",
    ].join("\n"),
    "services/assistant.ts": [
      'import OpenAI from "openai";',
      "",
      `const openai = new OpenAI({ apiKey: "${tokens.openai}" });`,
      "",
    ].join("\n"),
    ".env.production": [
      "NODE_ENV=production",
      `ANTHROPIC_API_KEY=${tokens.anthropic}`,
      `SENDGRID_API_KEY=${tokens.sendgrid}`,
      "",
    ].join("\n"),
    "notifications/sms.py": ["from twilio.rest import Client", "", `TWILIO_API_KEY = "${tokens.twilio}"`, ""].join("\n"),
    "api/appsettings.json": [
      "{",
      '  "ConnectionStrings": {',
      `    "Storage": "DefaultEndpointsProtocol=https;AccountName=vegastore;AccountKey=${tokens.azureAccountKey};EndpointSuffix=core.windows.net"`,
      "  }",
      "}",
      "",
    ].join("\n"),
    ".pypirc": ["[pypi]", "username = __token__", `password = ${tokens.pypi}`, ""].join("\n"),
    "k8s/shop.yaml": [
      "apiVersion: v1",
      "kind: ConfigMap",
      "data:",
      `  SHOPIFY_ACCESS_TOKEN: ${tokens.shopify}`,
      "",
    ].join("\n"),
    "docker-compose.yml": [
      "services:",
      "  api:",
      "    environment:",
      `      DATABASE_URL: postgres://vega:${tokens.databasePassword}@db:5432/vega`,
      "      REDIS_URL: redis://default:${REDIS_PASSWORD}@cache:6379",
      "",
    ].join("\n"),
    "clients/api.http": [
      "GET https://api.vega.test/v1/scans",
      `Authorization: Bearer ${tokens.jwt}`,
      "Accept: application/json",
      "",
    ].join("\n"),
    "backend/settings.py": [
      "DEBUG = False",
      'DATABASE_USER = "vega"',
      `DATABASE_PASSWORD = "${tokens.password}"`,
      "",
    ].join("\n"),
    "config/production.yaml": ["analytics:", "  endpoint: https://analytics.vega.test", `  api_key: "${tokens.apiKey}"`, ""].join("\n"),
    // Unicode before the secret: the column counts UTF-16 units, not bytes.
    "docs/déploiement.md": ["# Déploiement", "", `Clé « ${tokens.githubOauth} » — à révoquer.`, ""].join("\n"),
    // Windows line endings.
    "windows/setup.ps1": ["$ErrorActionPreference = 'Stop'", `$env:NPM_TOKEN = "${tokens.npm}"`, ""].join("\r\n"),
  };

  const decoys: Decoy[] = [
    { reason: "a placeholder password", path: "decoys/placeholders.py", text: 'password = "changeme"' },
    { reason: "an environment reference", path: "decoys/placeholders.py", text: 'password: "${PASSWORD}"' },
    { reason: "an angle-bracket placeholder", path: "decoys/placeholders.py", text: 'api_key = "<your-key-here>"' },
    { reason: "a templated value", path: "decoys/placeholders.py", text: "client_secret: {{ .Values.clientSecret }}" },
    { reason: "a low-entropy secret", path: "decoys/placeholders.py", text: 'secret = "aaaaaaaabbbbbbbb"' },
    { reason: "a low-entropy token", path: "decoys/placeholders.py", text: 'token = "abcabcabcabcabcabc"' },
    { reason: "a numeric setting", path: "decoys/placeholders.py", text: "PASSWORD_MIN_LENGTH = 12345678" },
    { reason: "a call, not a literal", path: "decoys/code.ts", text: "const password = getPassword(user);" },
    { reason: "a type annotation", path: "decoys/code.ts", text: "  passwordHash: PasswordHash;" },
    { reason: "an environment read", path: "decoys/code.ts", text: "const apiKey = process.env.API_KEY ?? '';" },
    { reason: "a slug", path: "decoys/code.ts", text: 'const tokenKind = "refresh-2024";' },
    { reason: "a sentence", path: "decoys/code.ts", text: 'throw new Error("password must be at least 12 characters");' },
    { reason: "an identifier with a digit", path: "decoys/code.ts", text: "exports.CreateOAuth2TokenCommand = CreateOAuth2TokenCommand;" },
    { reason: "a header name", path: "decoys/code.ts", text: 'const SESSION_TOKEN_QUERY_PARAM = "X-Amz-Security-Token";' },
    { reason: "AKIA with too few characters", path: "decoys/aws.txt", text: `key_id = AKIA${draw(BASE32, 12)}` },
    { reason: "AKIA with too many characters", path: "decoys/aws.txt", text: `key_id = AKIA${draw(BASE32, 20)}` },
    { reason: "AWS's documented example key", path: "decoys/aws.txt", text: "aws_access_key_id = AKIAIOSFODNN7EXAMPLE" },
    {
      reason: "a JWT-looking string with two parts",
      path: "decoys/tokens.txt",
      text: `header = ${base64url(JSON.stringify({ alg: "none" }))}.${base64url(JSON.stringify({ sub: "demo-user" }))}`,
    },
    {
      reason: "three parts whose payload is not a JSON object",
      path: "decoys/tokens.txt",
      text: `value = ${base64url(JSON.stringify({ alg: "HS256" }))}.${draw(ALPHANUMERIC, 20)}.${draw(ALPHANUMERIC, 20)}`,
    },
    { reason: "a GitHub prefix with too few characters", path: "decoys/tokens.txt", text: `ghp_${draw(ALPHANUMERIC, 20)}` },
    { reason: "a Stripe test key (test mode only)", path: "decoys/tokens.txt", text: `const stripeTestKey = "sk_test_${draw(ALPHANUMERIC, 24)}";` },
    { reason: "a Slack-looking word", path: "decoys/tokens.txt", text: "see xoxb-token-format in the docs" },
    { reason: "a connection string without a password", path: "decoys/urls.txt", text: "DATABASE_URL=postgres://user@db.internal:5432/app" },
    { reason: "a connection string without user info", path: "decoys/urls.txt", text: "postgresql://localhost:5432/app?sslmode=disable" },
    { reason: "a connection string with a placeholder", path: "decoys/urls.txt", text: "mongodb+srv://vega:${MONGO_PASSWORD}@cluster0.example.net/app" },
    { reason: "a local development default", path: "decoys/urls.txt", text: "amqp://guest:guest@localhost:5672/" },
    {
      reason: "PEM markers held as constants by a parser",
      path: "decoys/pem.ts",
      text: 'const BEGIN = "-----BEGIN RSA PRIVATE KEY-----";\nconst END = "-----END RSA PRIVATE KEY-----";',
    },
  ];
  for (const decoy of decoys) files[decoy.path] = `${files[decoy.path] ?? ""}${decoy.text}\n`;

  // Not scanned, whatever they hold.
  files["assets/logo.bin"] = `\u0089PNG\r\n\u001a\n\u0000\u0000\u0000\rIHDR${tokens.githubPat}\u0000`;
  files["vendor/bundle.min.js"] = `${"var a=1;".repeat(140_000)}\nconst k="${tokens.stripeSecret}";\n`;
  files["node_modules/leftpad/index.js"] = `module.exports = "${tokens.githubPat}";\n`;
  files[".git/config"] = `[remote "origin"]\n\turl = https://x-access-token:${tokens.githubPat}@github.com/vega/vega.git\n`;

  const planted: PlantedSecret[] = [];
  const plant = (ruleId: string, path: string, secret: string, occurrence = 0) => {
    const content = files[path];
    let offset = -1;
    for (let seen = 0; seen <= occurrence; seen++) offset = content.indexOf(secret, offset + 1);
    if (offset === -1) throw new Error(`planted secret for ${ruleId} missing from ${path}`);
    const before = content.slice(0, offset);
    const line = before.split("\n").length;
    const column = offset - (before.lastIndexOf("\n") + 1) + 1;
    planted.push({ ruleId, path, line, column, secret });
  };
  plant("aws-access-key-id", "config/aws.env", tokens.awsAccessKeyId);
  plant("aws-secret-access-key", "config/aws.env", tokens.awsSecretAccessKey);
  plant("github-pat", "src/integrations/github.ts", tokens.githubPat);
  plant("github-oauth-token", "src/integrations/github.ts", tokens.githubOauth);
  plant("github-app-token", "src/integrations/github.ts", tokens.githubApp);
  plant("github-refresh-token", "src/integrations/github.ts", tokens.githubRefresh);
  plant("github-fine-grained-pat", "src/integrations/github.ts", tokens.githubFineGrainedPat);
  plant("github-pat", "scripts/release.sh", tokens.githubPat);
  plant("gitlab-pat", "deploy/.gitlab-ci.yml", tokens.gitlabPat);
  plant("slack-token", "ops/slack.py", tokens.slackBot);
  plant("slack-webhook-url", "ops/slack.py", tokens.slackWebhook);
  plant("stripe-secret-key", "billing/stripe.rb", tokens.stripeSecret);
  plant("stripe-restricted-key", "billing/stripe.rb", tokens.stripeRestricted);
  plant("google-api-key", "web/src/firebase.js", tokens.googleApiKey);
  plant("npm-access-token", ".npmrc", tokens.npm);
  plant("private-key", "infra/tls.tf", privateKey);
  plant("openai-api-key", "services/assistant.ts", tokens.openai);
  plant("anthropic-api-key", ".env.production", tokens.anthropic);
  plant("twilio-api-key", "notifications/sms.py", tokens.twilio);
  plant("sendgrid-api-key", ".env.production", tokens.sendgrid);
  plant("azure-storage-account-key", "api/appsettings.json", tokens.azureAccountKey);
  plant("pypi-upload-token", ".pypirc", tokens.pypi);
  plant("shopify-access-token", "k8s/shop.yaml", tokens.shopify);
  plant("connection-string-password", "docker-compose.yml", tokens.databasePassword);
  plant("jwt", "clients/api.http", tokens.jwt);
  plant("generic-password", "backend/settings.py", tokens.password);
  plant("generic-api-key", "config/production.yaml", tokens.apiKey);
  plant("github-oauth-token", "docs/déploiement.md", tokens.githubOauth);
  plant("npm-access-token", "windows/setup.ps1", tokens.npm);

  return { files, planted, decoys };
}

/** The planted tree and the findings a scan of it must report: exactly these, no others. */
export function plantedSecretsTree(): { files: Record<string, string>; expected: Array<{ ruleId: string; path: string; line: number }> } {
  const { files, planted } = plantedSecrets();
  return { files, expected: planted.map(({ ruleId, path, line }) => ({ ruleId, path, line })) };
}

/** The analyzer's fingerprint recipe, restated independently for the tests. */
export function expectedFingerprint(ruleId: string, path: string, secret: string): string {
  const secretHash = createHash("sha256").update(secret).digest("hex");
  return createHash("sha256").update(`${ruleId}:${path}:${secretHash}`).digest("hex");
}
