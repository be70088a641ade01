#!/usr/bin/env node
/**
 * `npm run generate` (postinstall, and before `npm test`): the Prisma client and the typed GraphQL
 * documents, made again only when what they are made from changed. Each output directory keeps the
 * digest of its inputs in `.made-from.sha256`; `--force` regenerates regardless. Then the bundle
 * `vega` runs from (bin/cli-bundle.mjs), made here so that a test pass's first processes do not all
 * make it at once.
 *
 * Skipping matters beyond the seconds it saves: CI runs its test passes side by side, and two
 * generators rewriting api/generated/ under a running test pass would break its imports.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freshCliBundle } from "../bin/cli-bundle.mjs";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const STAMP = ".made-from.sha256";
const OUTPUTS = ["api/generated", "worker/generated", "test/generated", "cli/generated"];
const INPUTS = ["prisma/schema.prisma", "prisma.config.ts", "schema.graphql", "codegen.ts", "package-lock.json", "scripts/generate.mjs"];
const DOCUMENT_DIRS = ["worker", "cli", "test"];

/** The operation documents codegen reads (codegen.ts: `<dir>/**\/*.graphql`), outside generated output. */
function documents(dir) {
  const found = [];
  for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const relative = path.join(dir, entry.name);
    if (entry.isDirectory() && entry.name !== "generated" && entry.name !== "node_modules") found.push(...documents(relative));
    else if (entry.isFile() && entry.name.endsWith(".graphql")) found.push(relative);
  }
  return found;
}

function inputDigest() {
  const hash = createHash("sha256");
  for (const file of [...INPUTS, ...DOCUMENT_DIRS.flatMap(documents).sort()]) {
    hash.update(`${file}\0`);
    hash.update(existsSync(path.join(root, file)) ? readFileSync(path.join(root, file)) : "(missing)");
    hash.update("\0");
  }
  return hash.digest("hex");
}

const stampOf = (dir) => {
  const file = path.join(root, dir, STAMP);
  return existsSync(file) ? readFileSync(file, "utf8").trim() : undefined;
};

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

const digest = inputDigest();
if (!process.argv.includes("--force") && OUTPUTS.every((dir) => stampOf(dir) === digest)) {
  console.log("generate: the Prisma client and typed documents are up to date (npm run generate -- --force remakes them)");
} else {
  const bin = (name) => path.join(root, "node_modules", ".bin", name);
  run(bin("prisma"), ["generate", "--no-hints"]);
  run(bin("graphql-codegen"), ["--config", "codegen.ts", "--silent"]);
  for (const dir of OUTPUTS) writeFileSync(path.join(root, dir, STAMP), `${digest}\n`);
}
await freshCliBundle();
