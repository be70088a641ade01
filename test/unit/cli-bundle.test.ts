/**
 * `vega` runs from a bundle of its sources (bin/cli-bundle.mjs): reused while
 * no input changed, made again as soon as one did, and each module still finds
 * the files next to its source (import.meta.url is the source's own).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module of bin/, without types
import { freshCliBundle } from "../../bin/cli-bundle.mjs";

const root = fileURLToPath(new URL("../..", import.meta.url));
const run = promisify(execFile);

describe("the bundle vega runs from", () => {
  it("is reused while its inputs are unchanged, and made again when one changes", async () => {
    const first: string = await freshCliBundle();
    expect(await freshCliBundle()).toBe(first);

    // A new mtime is a change (git does not see it): the next start makes a new build from the sources.
    const source = path.join(root, "shared/version.ts");
    const { atime } = await stat(source);
    await utimes(source, atime, new Date());
    const second: string = await freshCliBundle();
    expect(second).not.toBe(first);
    const inputs = JSON.parse(await readFile(path.join(path.dirname(second), "inputs.json"), "utf8")) as Record<string, string>;
    expect(inputs["shared/version.ts"]).toBe(`${(await stat(source)).size}:${(await stat(source)).mtimeMs}`);
    expect(Object.keys(inputs)).toEqual(expect.arrayContaining(["cli/main.ts", "api/server.ts", "worker/worker.ts"]));
    expect(Object.keys(inputs).some((file) => file.includes("node_modules"))).toBe(false);
  });

  it("is made once by processes that start together after a change, and not held up by a lock its dead builder left", async () => {
    const source = path.join(root, "shared/version.ts");
    const cacheDir = path.join(root, "node_modules/.cache/vega-cli");
    const touch = async () => {
      const { atime } = await stat(source);
      await utimes(source, atime, new Date());
    };
    const entryFrom = async () => {
      const { stdout } = await run(process.execPath, ["--input-type=module", "-e", `import(${JSON.stringify(path.join(root, "bin/cli-bundle.mjs"))}).then((m) => m.freshCliBundle()).then((entry) => console.log(entry))`]);
      return stdout.trim();
    };

    await touch();
    const entries = await Promise.all([entryFrom(), entryFrom(), entryFrom()]);
    expect(new Set(entries).size).toBe(1);

    // A builder killed before it could remove its lock: the next start builds at once (waiting on it
    // would take BUILD_LOCK_STALE_MS, two minutes, past the test's timeout).
    await touch();
    const dead = await run(process.execPath, ["-e", "console.log(process.pid)"]);
    await writeFile(path.join(cacheDir, "build.lock"), dead.stdout.trim());
    expect(await entryFrom()).not.toBe(entries[0]);
    await expect(stat(path.join(cacheDir, "build.lock"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("runs a command whose module finds files next to its source, from any directory", async () => {
    const entry: string = await freshCliBundle();
    // The migrations are found relative to api/db/migrate.ts, not to the bundle or the working directory.
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-bundle-"));
    try {
      const { stdout } = await run(process.execPath, [entry, "maintenance", "migrate"], {
        cwd: os.tmpdir(),
        env: { ...process.env, VEGA_DATA_DIR: dataDir, VEGA_LOG_LEVEL: "warn" },
      });
      const migrations = await readdir(path.join(root, "prisma/migrations"), { withFileTypes: true });
      expect(JSON.parse(stdout)).toMatchObject({ ok: true, applied: migrations.filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort() });
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
