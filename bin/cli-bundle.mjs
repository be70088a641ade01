/**
 * The bundle `vega` runs from: Vega's own TypeScript (cli/main.ts and all it
 * imports) and the plain JavaScript packages it uses, made into ES modules by
 * esbuild, one chunk per dynamic import so a command loads only what it uses.
 * Made again whenever one of Vega's source files changed (size or mtime), so
 * there is still no build step to remember: an edit is picked up by the next
 * `vega` (an edit of this file or of package-lock.json, which stands for
 * every package, too).
 *
 * Why: tsx's loader hooks every import, those of node_modules too, on a thread
 * of its own. Measured on this project, a `vega serve` start cost 5.5 s of CPU
 * through tsx and 3.2 s from a bundle of Vega's sources alone; `vega runner`
 * (one per scan) 1.0 s and 0.4 s; `vega maintenance cleanup` 4.2 s and 2.6 s.
 * Node then still resolved, read and compiled some 1,300 files of packages
 * (and read 180 source maps) at each start: with those packages in the
 * bundle, a `vega serve` start fell from 1.85 to 1.60 s of CPU and a
 * `maintenance cleanup` from 2.0 to 1.8 s (side by side, this machine).
 *
 * Layout, under node_modules/.cache/vega-cli/: one directory per build (its
 * chunks and `inputs.json`, the files it was made from with their sizes and
 * mtimes), `latest`, the name of the newest, replaced atomically, and while a
 * build runs `build.lock` with its builder's pid. A running process keeps
 * reading its own build (the three newest are kept).
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

/**
 * Packages left outside the bundle, loaded from node_modules as before: those that find files
 * next to their own modules (PGlite its WebAssembly and data files, the Prisma client its engine
 * and schema through `__dirname`, ioredis its package.json, pino its transport workers by path),
 * and the tools (esbuild, prisma, tsx), which the commands do not import at start.
 */
const EXTERNAL_PACKAGES = ["@electric-sql/pglite", "@prisma/*", ".prisma/*", "prisma", "ioredis", "pino", "pino-pretty", "thread-stream", "esbuild", "tsx"];

/** CommonJS packages inside an ES module bundle call `require` for Node's built-in modules. */
const REQUIRE_BANNER = 'import { createRequire as vegaCreateRequire } from "node:module"; const require = vegaCreateRequire(import.meta.url);';

/** Called with the build lock held (which made the cache directory). */
async function buildBundle() {
  const { build } = await import("esbuild");
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
    external: EXTERNAL_PACKAGES,
    banner: { js: REQUIRE_BANNER },
    outdir,
    sourcemap: "linked",
    metafile: true,
    logLevel: "silent",
    plugins: [keepModuleUrls],
  });
  // The packages' files are not checked one by one at each start: package-lock.json stands for them.
  const sources = Object.keys(result.metafile.inputs).filter((file) => !file.startsWith("node_modules/"));
  const inputs = Object.fromEntries([...sources, ...TOOL_INPUTS].map((file) => [file, signature(file)]));
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

/** A build taking longer than this is taken to have died with its process: its lock is taken over. */
const BUILD_LOCK_STALE_MS = 120_000;

/**
 * The entry module of an up-to-date bundle, made now if needed; rejects when it cannot be made.
 * One process builds at a time (a lock file beside the builds): the others that start meanwhile
 * (a test run starts several at once, after every edit) wait for its build instead of each making
 * their own, which cost a few seconds of CPU apiece.
 */
export async function freshCliBundle() {
  for (;;) {
    const current = currentBuild();
    if (current) return current;
    const unlock = takeBuildLock();
    if (unlock) {
      try {
        return currentBuild() ?? (await buildBundle());
      } finally {
        unlock();
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Takes the build lock, answering its release; undefined while another live build holds it. */
function takeBuildLock() {
  const lock = path.join(cacheDir, "build.lock");
  mkdirSync(cacheDir, { recursive: true });
  try {
    writeFileSync(lock, String(process.pid), { flag: "wx" });
  } catch (error) {
    if (error.code !== "EEXIST") throw error;
    let holder;
    try {
      holder = { pid: Number(readFileSync(lock, "utf8")), age: Date.now() - statSync(lock).mtimeMs };
    } catch {
      return undefined; // Released just now: the next round finds the build, or takes the lock.
    }
    // A holder killed mid-build (a signal before the command's handlers exist) leaves its lock behind.
    if (isAlive(holder.pid) && holder.age < BUILD_LOCK_STALE_MS) return undefined;
    // Not atomic: two processes taking over the same dead lock at once may both build. Harmless, as
    // before there was a lock: each build has a directory of its own and `latest` is renamed into place.
    rmSync(lock, { force: true });
    return takeBuildLock();
  }
  return () => rmSync(lock, { force: true });
}

function isAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === "EPERM";
  }
}
