/**
 * The layout of docs/architecture.md holds: the API and the worker stand on the
 * shared floor and never import each other; only the CLI joins them.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { importSpecifiers, importViolations } from "../support/import-graph.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

describe("the floors of the house", () => {
  it("has no import that crosses a floor it may not cross", async () => {
    expect(await importViolations(root)).toEqual([]);
  });

  describe("the check itself", () => {
    const dirs: string[] = [];
    afterAll(async () => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));

    async function tree(files: Record<string, string>) {
      const dir = await mkdtemp(path.join(os.tmpdir(), "vega-floors-"));
      dirs.push(dir);
      for (const [name, content] of Object.entries(files)) {
        await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
        await writeFile(path.join(dir, name), content);
      }
      return dir;
    }

    it("reads static, re-exported, side-effect and dynamic imports, not commented ones", () => {
      const source = [
        'import { a } from "./a.ts";',
        'import type { B } from "../b.ts";',
        'export { c } from "./c.ts";',
        'import "./side-effect.ts";',
        'const d = await import("./d.ts");',
        '// import { e } from "./e.ts";',
        '/* import { f } from "./f.ts"; */',
        "import {\n  g,\n  h,\n} from \"./gh.ts\";",
      ].join("\n");
      expect(importSpecifiers(source)).toEqual(["./a.ts", "../b.ts", "./c.ts", "./side-effect.ts", "./d.ts", "./gh.ts"]);
    });

    it("finds the API importing the worker, the worker importing the API, shared importing either, and the ECS SDK in the API", async () => {
      const dir = await tree({
        "api/services/recovery.ts": 'import { createLauncher } from "../../worker/launchers/index.ts";\nimport { ECSClient } from "@aws-sdk/client-ecs";',
        "worker/runner/extract.ts": 'import { archiveInvalid } from "../../api/http/uploads.ts";',
        "shared/config.ts": 'import type { Deps } from "../api/context.ts";',
        "worker/scan-loop.ts": 'import { PrismaClient } from "@prisma/client";',
        "cli/main.ts": 'import "../api/server.ts";\nimport "../worker/scan-loop.ts";',
      });
      expect(await importViolations(dir)).toEqual(
        expect.arrayContaining([
          { file: path.join("api", "services", "recovery.ts"), specifier: "../../worker/launchers/index.ts", reason: "api/ may not import worker/" },
          { file: path.join("api", "services", "recovery.ts"), specifier: "@aws-sdk/client-ecs", reason: "api/ may not import @aws-sdk/client-ecs" },
          { file: path.join("worker", "runner", "extract.ts"), specifier: "../../api/http/uploads.ts", reason: "worker/ may not import api/" },
          { file: path.join("shared", "config.ts"), specifier: "../api/context.ts", reason: "shared/ may not import api/" },
          { file: path.join("worker", "scan-loop.ts"), specifier: "@prisma/client", reason: "worker/ may not import @prisma/" },
        ]),
      );
      expect((await importViolations(dir)).filter((violation) => violation.file.startsWith("cli"))).toEqual([]);
    });
  });
});
