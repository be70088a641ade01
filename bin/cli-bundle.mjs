/**
 * The bundle `vega` runs from: Vega's own TypeScript (cli/main.ts and all it
 * imports) made into ES modules by esbuild, one chunk per dynamic import so a
 * command loads only what it uses, node_modules left outside. Made again
 * whenever one of its input files changed (size or mtime), so there is still
 * no build step to remember: an edit is picked up by the next `vega` (an edit
 * of this file or of package-lock.json too).
 *
 * Why: tsx's loader hooks every import, those of node_modules too, on a thread
 * of its own. Measured on this project, a `vega serve` start cost 5.5 s of CPU
 * through tsx and 3.2 s from the bundle; `vega runner` (one per scan) 1.0 s
 * and 0.4 s; `vega maintenance cleanup` 4.2 s and 2.6 s.
 *
 * Layout, under node_modules/.cache/vega-cli/: one directory per build (its
 * chunks and `inputs.json`, the files it was made from with their sizes and
 * mtimes) and `latest`, the name of the newest, replaced atomically. Processes
 * that build at the same moment each write their own directory; a running
 * process keeps reading its own (the three newest are kept).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const cacheDir = path.join(root, "node_modules", ".cache", "vega-cli");
const latestFile = path.join(cacheDir, "latest");
const ENTRY = "cli/main.ts";
const BUILDS_KEPT = 3;
/** Besides the sources: how they are bundled (this file) and with which esbuild (the lockfile). */
const TOOL_INPUTS = ["bin/cli-bundle.mjs", "package-lock.json"];

/** Size and mtime of a file, or undefined when it is gone. */
function signature(file) {
  try {
    const stats = statSync(path.join(root, file));
    return `${stats.size}:${stats.mtimeMs}`;
  } catch {
    return undefined;
  }
}

/** The newest build's entry module, if every file it was made from is unchanged. */
function currentBuild() {
  try {
    const build = path.join(cacheDir, readFileSync(latestFile, "utf8").trim());
    const inputs = JSON.parse(readFileSync(path.join(build, "inputs.json"), "utf8"));
    return Object.entries(inputs).every(([file, known]) => signature(file) === known) ? path.join(build, "main.js") : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Each module keeps its own `import.meta.url` (and with it `__dirname` in the Prisma client): the
 * sources find the migrations, the dashboard, package.json and bin/vega.mjs relative to themselves.
 */
const keepModuleUrls = {
  name: "keep-module-urls",
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, (args) => ({
      contents: readFileSync(args.path, "utf8").replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)),
      loader: "ts",
    }));
  },
};

async function buildBundle() {
  const { build } = await import("esbuild");
  mkdirSync(cacheDir, { recursive: true });
  const name = randomUUID();
  const outdir = path.join(cacheDir, name);
  const result = await build({
    absWorkingDir: root,
    entryPoints: { main: ENTRY },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    outdir,
    sourcemap: "linked",
    metafile: true,
    logLevel: "silent",
    plugins: [keepModuleUrls],
  });
  const inputs = Object.fromEntries([...Object.keys(result.metafile.inputs), ...TOOL_INPUTS].map((file) => [file, signature(file)]));
  writeFileSync(path.join(outdir, "inputs.json"), JSON.stringify(inputs));
  const pointer = `${latestFile}.${name}`;
  writeFileSync(pointer, name);
  renameSync(pointer, latestFile);
  pruneOldBuilds();
  return path.join(outdir, "main.js");
}

function pruneOldBuilds() {
  const builds = readdirSync(cacheDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => ({ dir: path.join(cacheDir, entry.name), mtime: statSync(path.join(cacheDir, entry.name)).mtimeMs }))
    .sort((a, b) => b.mtime - a.mtime);
  for (const { dir } of builds.slice(BUILDS_KEPT)) rmSync(dir, { recursive: true, force: true });
}

/** The entry module of an up-to-date bundle, made now if needed; rejects when it cannot be made. */
export async function freshCliBundle() {
  return currentBuild() ?? (await buildBundle());
}
