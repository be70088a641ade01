/**
 * The secret rule catalog: pure data, read by the scanner (secrets.ts) and by
 * the SARIF report (api/services/sarif.ts).
 *
 * How a rule is applied (the contract every entry below relies on):
 *
 * - `keywords` are cheap ASCII literals of two bytes or more, at least one of
 *   which appears inside every match of `pattern` (gitleaks' `keywords`). The
 *   scanner searches the file for all keywords in one pass and runs a rule's
 *   regex only on the line around a hit, so a rule whose keywords are missing
 *   costs nothing. Keywords are matched case-sensitively, unless the pattern has
 *   the `i` flag: then they are written in lower case and matched
 *   case-insensitively.
 * - `pattern` has at least one capture group; the secret is the first group that
 *   took part in the match. Its position gives the finding's line and column, its
 *   hash gives the fingerprint, and it is what the snippet redacts.
 * - `entropy` (generic rules): the minimum Shannon entropy, in bits per
 *   character, of the secret. It separates `password = "hunter2hunter2"` from
 *   `password = "q8V#zL2m!rT0"`.
 * - `allowlist` and `stopwords` discard placeholders: a secret matching any
 *   allowlist regex, or containing any stopword (case-insensitive), is not a
 *   finding.
 * - `spansLines`: the match may cross line breaks (a PEM block). Such a rule's
 *   match must start with its keyword: the scanner tries it at each keyword hit,
 *   over the bytes that follow, instead of over the hit's line.
 * - The order of the catalog is a priority: when two rules match overlapping
 *   text, only the earlier one is reported, so the specific rules come first and
 *   the generic assignment rules last (`token = "ghp_…"` is a GitHub token, not a
 *   generic secret).
 *
 * Patterns are written for linear-time matching: no nested unbounded
 * quantifiers, character classes that cannot overlap the literal that follows
 * them, and bounded repetition where a class could run on.
 */

import type { Severity } from "./severity.ts";

/** A rule's severity: one of the finding severities of shared/severity.ts. */
export type SecretSeverity = Severity;

export interface SecretRule {
  id: string;
  name: string;
  description: string;
  severity: SecretSeverity;
  keywords: string[];
  pattern: RegExp;
  entropy?: number;
  helpUri?: string;
  allowlist?: RegExp[];
  stopwords?: string[];
  spansLines?: boolean;
}

/**
 * Values that stand for a secret rather than being one: environment and
 * template references, angle-bracket placeholders, one character repeated, the
 * word "password" itself.
 */
export const PLACEHOLDER_ALLOWLIST: RegExp[] = [
  /\$\{[^}]*\}/, // ${DB_PASSWORD}, template literals
  /^\$[A-Za-z_][A-Za-z0-9_]*$/, // $PASSWORD
  /^\$\(.*\)$/, // $(cat secret)
  /\{\{.*\}\}/, // {{ .Values.password }}
  /^<[^>]*>$/, // <your-key-here>
  /^%\(?[A-Za-z_]*\)?s$/, // %s, %(password)s
  /^(?:process\.env|os\.environ|ENV\[|env\()/,
  /^(.)\1+$/, // "********", "xxxxxxxx"
  /^(?:password|passwd|secret|changeme|change_me|default|example|sample|placeholder|redacted|dummy|none|null|undefined|true|false)$/i,
];

/**
 * Values that, after `password:` or `token =`, are code or configuration rather
 * than a literal secret: a bare identifier or type name, a number, a slug, a
 * URL, a path. A password made only of letters is missed; an entropy rule cannot tell
 * it from a type name.
 */
export const CODE_VALUE_ALLOWLIST: RegExp[] = [
  /^[A-Za-z_]+$/,
  /^[0-9._-]+$/,
  /^[a-z]+[-_.][0-9]+$/, // a slug or version: "build-42", "node_18"
  /^(?:[a-z][a-z0-9+.-]*:)?\/\//, // a URL
  /^\.{0,2}\//, // a path
];

export const PLACEHOLDER_STOPWORDS: string[] = [
  "example",
  "placeholder",
  "changeme",
  "change_me",
  "change-me",
  "your_",
  "your-",
  "yourkey",
  "yoursecret",
  "xxxx",
  "****",
  "dummy",
  "redacted",
  "replace_me",
  "replaceme",
  "insert_",
];

/**
 * Words of code, for the generic rules only: a value containing one is an
 * identifier or a header name (`CreateOAuth2TokenCommand`,
 * "X-Amz-Security-Token"). Words have five letters or more, so that a random
 * 40-character secret contains one of them with a chance of about one in
 * 15,000 (gitleaks' generic rule keeps a much longer list of this kind).
 */
export const CODE_WORD_STOPWORDS: string[] = [
  "access", "account", "action", "admin", "bearer", "buffer", "cache", "client", "command", "config", "context",
  "create", "credential", "default", "delete", "error", "event", "field", "handler", "header", "input", "issuer",
  "label", "login", "message", "method", "model", "option", "output", "param", "password", "policy", "provider",
  "query", "refresh", "request", "reset", "response", "result", "secret", "security", "service", "session",
  "string", "token", "update", "value",
];

const ASSIGNMENT = String.raw`["']?[ \t]{0,5}(?:=|:=|:|=>)[ \t]{0,5}`;
// A quoted value (any quote style, no whitespace or backslash inside) or an
// unquoted one that ends where the statement does; an unquoted value followed by
// `.` or `(` is an expression, not a literal.
const GENERIC_VALUE = String.raw`(?:"([^"\s\\]{8,128})"|'([^'\s\\]{8,128})'|\x60([^\x60\s\\]{8,128})\x60|([A-Za-z0-9+/=_!@#$%^&*~?-]{8,128})(?![^\s,;)\]}]))`;

export const SECRET_RULES: SecretRule[] = [
  {
    id: "aws-access-key-id",
    name: "AWS access key ID",
    description:
      "An AWS access key ID (AKIA… for long-term IAM user keys, ASIA… for temporary STS credentials). Paired with its secret access key it grants the key owner's AWS permissions. Deactivate the key in IAM and create a new one.",
    severity: "CRITICAL",
    keywords: ["AKIA", "ASIA", "ABIA", "ACCA"],
    pattern: /\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?![A-Za-z0-9])/,
    // AWS's documentation uses keys ending in EXAMPLE.
    allowlist: [/EXAMPLE$/],
    helpUri: "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html",
  },
  {
    id: "aws-secret-access-key",
    name: "AWS secret access key",
    description:
      "A 40-character AWS secret access key assigned to an aws_secret_access_key / secretAccessKey setting. Deactivate the access key it belongs to and create a new one.",
    severity: "CRITICAL",
    keywords: ["secret"],
    pattern: new RegExp(
      String.raw`(?:aws[_.-]?secret[_.-]?(?:access[_.-]?)?key|secret[_.-]?access[_.-]?key)` +
        ASSIGNMENT +
        String.raw`["'\x60]?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])`,
      "i",
    ),
    allowlist: [/EXAMPLEKEY$/, ...PLACEHOLDER_ALLOWLIST],
    stopwords: PLACEHOLDER_STOPWORDS,
    helpUri: "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html",
  },
  {
    id: "github-pat",
    name: "GitHub personal access token",
    description: "A classic GitHub personal access token (ghp_). Revoke it in the owner's developer settings.",
    severity: "CRITICAL",
    keywords: ["ghp_"],
    pattern: /\b(ghp_[A-Za-z0-9]{36})(?![A-Za-z0-9])/,
    helpUri: "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/token-expiration-and-revocation",
  },
  {
    id: "github-fine-grained-pat",
    name: "GitHub fine-grained personal access token",
    description: "A fine-grained GitHub personal access token (github_pat_). Revoke it in the owner's developer settings.",
    severity: "CRITICAL",
    keywords: ["github_pat_"],
    pattern: /\b(github_pat_[A-Za-z0-9_]{82})(?![A-Za-z0-9_])/,
    helpUri: "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/token-expiration-and-revocation",
  },
  {
    id: "github-oauth-token",
    name: "GitHub OAuth access token",
    description: "A GitHub OAuth app user access token (gho_). Revoke the authorization of the OAuth app.",
    severity: "HIGH",
    keywords: ["gho_"],
    pattern: /\b(gho_[A-Za-z0-9]{36})(?![A-Za-z0-9])/,
    helpUri: "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/token-expiration-and-revocation",
  },
  {
    id: "github-app-token",
    name: "GitHub App token",
    description:
      "A GitHub App user-to-server (ghu_) or installation (ghs_) access token. Revoke it through the GitHub App API or let it expire, and find how it leaked.",
    severity: "HIGH",
    keywords: ["ghu_", "ghs_"],
    pattern: /\b((?:ghu|ghs)_[A-Za-z0-9]{36})(?![A-Za-z0-9])/,
    helpUri: "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/token-expiration-and-revocation",
  },
  {
    id: "github-refresh-token",
    name: "GitHub refresh token",
    description: "A GitHub App refresh token (ghr_), which mints new user access tokens. Revoke the app authorization.",
    severity: "HIGH",
    keywords: ["ghr_"],
    pattern: /\b(ghr_[A-Za-z0-9]{36})(?![A-Za-z0-9])/,
    helpUri: "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/token-expiration-and-revocation",
  },
  {
    id: "gitlab-pat",
    name: "GitLab personal access token",
    description: "A GitLab personal, project or group access token (glpat-). Revoke it in GitLab's access token settings.",
    severity: "CRITICAL",
    keywords: ["glpat-"],
    pattern: /\b(glpat-[A-Za-z0-9_-]{20,255})/,
    helpUri: "https://docs.gitlab.com/ee/user/profile/personal_access_tokens.html",
  },
  {
    id: "slack-token",
    name: "Slack token",
    description:
      "A Slack bot (xoxb-), user (xoxp-), app or workspace token. Revoke it in the Slack app's OAuth settings.",
    severity: "HIGH",
    keywords: ["xox"],
    pattern: /\b(xox[abposr]-(?:[0-9]{8,14}-){1,3}[A-Za-z0-9]{24,64})(?![A-Za-z0-9])/,
    helpUri: "https://api.slack.com/authentication/token-types",
  },
  {
    id: "slack-webhook-url",
    name: "Slack incoming webhook URL",
    description: "A Slack incoming webhook URL: anyone holding it can post to the channel. Regenerate the webhook.",
    severity: "MEDIUM",
    keywords: ["hooks.slack.com"],
    pattern: /(https:\/\/hooks\.slack\.com\/(?:services|workflows|triggers)\/[A-Za-z0-9+/]{43,56})(?![A-Za-z0-9+/])/,
    helpUri: "https://api.slack.com/messaging/webhooks",
  },
  {
    id: "stripe-secret-key",
    name: "Stripe live secret key",
    description: "A Stripe live-mode secret API key (sk_live_): full access to the account's payments. Roll it in the Stripe dashboard.",
    severity: "CRITICAL",
    keywords: ["sk_live_"],
    pattern: /\b(sk_live_[A-Za-z0-9]{24,247})(?![A-Za-z0-9])/,
    helpUri: "https://docs.stripe.com/keys",
  },
  {
    id: "stripe-restricted-key",
    name: "Stripe live restricted key",
    description: "A Stripe live-mode restricted API key (rk_live_). Roll it in the Stripe dashboard.",
    severity: "HIGH",
    keywords: ["rk_live_"],
    pattern: /\b(rk_live_[A-Za-z0-9]{24,247})(?![A-Za-z0-9])/,
    helpUri: "https://docs.stripe.com/keys",
  },
  {
    id: "google-api-key",
    name: "Google API key",
    description: "A Google Cloud / Firebase API key (AIza…). Restrict or regenerate it in the Google Cloud console.",
    severity: "HIGH",
    keywords: ["AIza"],
    pattern: /\b(AIza[A-Za-z0-9_-]{35})(?![A-Za-z0-9_-])/,
    helpUri: "https://cloud.google.com/docs/authentication/api-keys",
  },
  {
    id: "npm-access-token",
    name: "npm access token",
    description: "An npm access token (npm_), which can publish packages as its owner. Revoke it with `npm token revoke`.",
    severity: "HIGH",
    keywords: ["npm_"],
    pattern: /\b(npm_[A-Za-z0-9]{36})(?![A-Za-z0-9])/,
    helpUri: "https://docs.npmjs.com/revoking-access-tokens",
  },
  {
    id: "private-key",
    name: "Private key",
    description:
      "A PEM private key block (RSA, EC, DSA, OpenSSH, PKCS#8, PGP…). Replace the key pair and revoke any certificate issued for it.",
    severity: "CRITICAL",
    keywords: ["-----BEGIN"],
    // The body must look like a key (base64, PEM headers, escaped newlines) so
    // that a PEM parser holding the BEGIN and END lines as constants is not one.
    pattern:
      /(-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s\\:,.-]{64,16384}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----)/,
    spansLines: true,
  },
  {
    id: "openai-api-key",
    name: "OpenAI API key",
    description: "An OpenAI API key (sk-…T3BlbkFJ…). Revoke it in the OpenAI platform's API key settings.",
    severity: "HIGH",
    keywords: ["T3BlbkFJ"],
    pattern: /\b(sk-[A-Za-z0-9_-]{20,200}T3BlbkFJ[A-Za-z0-9_-]{20,200})(?![A-Za-z0-9_-])/,
    helpUri: "https://platform.openai.com/api-keys",
  },
  {
    id: "anthropic-api-key",
    name: "Anthropic API key",
    description: "An Anthropic API key (sk-ant-api03-…). Revoke it in the Anthropic console.",
    severity: "HIGH",
    keywords: ["sk-ant-"],
    pattern: /\b(sk-ant-(?:api03|admin01)-[A-Za-z0-9_-]{93}AA)(?![A-Za-z0-9_-])/,
  },
  {
    id: "twilio-api-key",
    name: "Twilio API key",
    description: "A Twilio API key SID (SK followed by 32 hex digits). Delete the key in the Twilio console.",
    severity: "HIGH",
    keywords: ["SK"],
    pattern: /\b(SK[0-9a-fA-F]{32})(?![A-Za-z0-9])/,
    helpUri: "https://www.twilio.com/docs/iam/api-keys",
  },
  {
    id: "sendgrid-api-key",
    name: "SendGrid API key",
    description: "A SendGrid API key (SG.…), which can send mail as the account. Delete it in the SendGrid settings.",
    severity: "HIGH",
    keywords: ["SG."],
    pattern: /\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])/,
    helpUri: "https://www.twilio.com/docs/sendgrid/ui/account-and-settings/api-keys",
  },
  {
    id: "azure-storage-account-key",
    name: "Azure storage account key",
    description:
      "An Azure storage account key in a connection string (AccountKey=…): full access to the storage account. Rotate the account key.",
    severity: "CRITICAL",
    keywords: ["accountkey="],
    pattern: /AccountKey=([A-Za-z0-9+/]{86}==)/i,
    helpUri: "https://learn.microsoft.com/en-us/azure/storage/common/storage-account-keys-manage",
  },
  {
    id: "pypi-upload-token",
    name: "PyPI upload token",
    description: "A PyPI API token (pypi-AgEIcHlwaS5vcmc…), which can upload releases. Remove it in the PyPI account settings.",
    severity: "HIGH",
    keywords: ["pypi-AgEIcHlwaS5vcmc"],
    pattern: /\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,1000})(?![A-Za-z0-9_-])/,
    helpUri: "https://pypi.org/help/#apitoken",
  },
  {
    id: "shopify-access-token",
    name: "Shopify access token",
    description: "A Shopify admin, custom app, private app or shared secret token (shpat_, shpca_, shppa_, shpss_). Rotate it in the Shopify admin.",
    severity: "HIGH",
    keywords: ["shpat_", "shpca_", "shppa_", "shpss_"],
    pattern: /\b(shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})(?![A-Za-z0-9])/,
  },
  {
    id: "connection-string-password",
    name: "Password in a connection string",
    description:
      "A database or broker URL (PostgreSQL, MySQL/MariaDB, MongoDB, Redis, AMQP, SQL Server) with a password in its user-info part. Change the password and read the URL from the environment or a secret store.",
    severity: "HIGH",
    keywords: ["postgres", "mysql", "mariadb", "mongodb", "redis", "amqp", "mssql", "sqlserver"],
    pattern:
      /\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver):\/\/[^\s:@/'"\x60]{0,128}:([^\s@/?#'"\x60]{1,256})@[A-Za-z0-9[_.-]/i,
    // Default credentials of local development containers are not leaks.
    allowlist: [...PLACEHOLDER_ALLOWLIST, /^(?:pass|pwd|user|admin|root|test|guest|postgres|mysql|redis|mongo|rabbitmq)$/i],
    stopwords: PLACEHOLDER_STOPWORDS,
  },
  {
    id: "jwt",
    name: "JSON Web Token",
    description:
      "A signed JSON Web Token (three base64url parts, header and payload JSON objects). Until it expires it authenticates as its subject; find where it was issued and revoke the session or rotate the signing key.",
    severity: "MEDIUM",
    keywords: ["eyJ"],
    pattern: /\b(eyJ[A-Za-z0-9_-]{10,4096}\.eyJ[A-Za-z0-9_-]{10,8192}\.[A-Za-z0-9_-]{10,4096})(?![A-Za-z0-9_-])/,
    helpUri: "https://datatracker.ietf.org/doc/html/rfc7519",
  },
  {
    id: "generic-password",
    name: "Hard-coded password",
    description:
      "A password, passwd, passphrase or pwd setting assigned a literal value that looks random. Move it to the environment or a secret store, and change it.",
    severity: "MEDIUM",
    keywords: ["password", "passwd", "passphrase", "pwd"],
    pattern: new RegExp(String.raw`(?:password|passwd|passphrase|pwd)[A-Za-z0-9_.-]{0,30}` + ASSIGNMENT + GENERIC_VALUE, "i"),
    entropy: 3,
    allowlist: [...PLACEHOLDER_ALLOWLIST, ...CODE_VALUE_ALLOWLIST],
    stopwords: [...PLACEHOLDER_STOPWORDS, ...CODE_WORD_STOPWORDS],
  },
  {
    id: "generic-api-key",
    name: "Hard-coded secret or API key",
    description:
      "A secret, token, API key or access key setting assigned a literal high-entropy value. Move it to the environment or a secret store, and rotate it.",
    severity: "MEDIUM",
    keywords: ["secret", "token", "apikey", "api_key", "api-key", "accesskey", "access_key", "access-key"],
    pattern: new RegExp(
      String.raw`(?:secret|token|api[_-]?key|access[_-]?key)[A-Za-z0-9_.-]{0,30}` + ASSIGNMENT + GENERIC_VALUE,
      "i",
    ),
    entropy: 3.5,
    allowlist: [...PLACEHOLDER_ALLOWLIST, ...CODE_VALUE_ALLOWLIST],
    stopwords: [...PLACEHOLDER_STOPWORDS, ...CODE_WORD_STOPWORDS],
  },
];
