/**
 * The floors of the house (docs/architecture.md) as data, and a checker that
 * reads every import of every source file under them. Relative imports are
 * resolved to the floor they land on; package imports are checked against the
 * packages a floor must not bring in (the ECS SDK into the API, the database
 * and the GraphQL server into the worker).
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

export interface Floor {
  /** Top-level folder. */
  name: string;
  /** Floors its files may import (itself included). */
  mayImport: string[];
  /** Package names (or prefixes ending in "/") its files must not import. */
  forbiddenPackages: string[];
}

export const FLOORS: Floor[] = [
  { name: "shared", mayImport: ["shared"], forbiddenPackages: ["@aws-sdk/", "@prisma/", "pg", "@electric-sql/pglite", "graphql-yoga", "@pothos/", "graphql-ws"] },
  { name: "api", mayImport: ["shared", "api"], forbiddenPackages: ["@aws-sdk/client-ecs"] },
  {
    name: "worker",
    mayImport: ["shared", "worker"],
    // The runner only fetches the presigned URL the API hands it: no S3 client on this side.
    forbiddenPackages: ["@prisma/", "pg", "@electric-sql/pglite", "graphql-yoga", "@pothos/", "pglite-prisma-adapter", "@aws-sdk/client-s3", "@aws-sdk/s3-request-presigner"],
  },
  { name: "cli", mayImport: ["shared", "api", "worker", "cli"], forbiddenPackages: [] },
];

export interface ImportViolation {
  file: string;
  specifier: string;
  reason: string;
}

const IMPORT_PATTERN = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|(?:^|[\s;(])import\s*\(\s*["']([^"']+)["']\s*\)|^\s*import\s*["']([^"']+)["']/gm;

/** Every import specifier in a TypeScript source (static, re-exports, side-effect and literal dynamic imports). */
export function importSpecifiers(source: string): string[] {
  const withoutComments = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  return [...withoutComments.matchAll(IMPORT_PATTERN)].map((match) => match[1] ?? match[2] ?? match[3]!);
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const files = await Promise.all(
    entries.map(async (entry) => {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) return entry.name === "generated" || entry.name === "node_modules" ? [] : sourceFiles(full);
      return /\.(ts|mts|mjs)$/.test(entry.name) ? [full] : [];
    }),
  );
  return files.flat();
}

function packageName(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

/** The imports under `root` that break the floors' rules; empty when the house stands as drawn. */
export async function importViolations(root: string, floors: Floor[] = FLOORS): Promise<ImportViolation[]> {
  const violations: ImportViolation[] = [];
  const floorNames = new Set(floors.map((floor) => floor.name));
  for (const floor of floors) {
    for (const file of await sourceFiles(path.join(root, floor.name))) {
      const relativeFile = path.relative(root, file);
      for (const specifier of importSpecifiers(await readFile(file, "utf8"))) {
        if (specifier.startsWith(".")) {
          const target = path.relative(root, path.resolve(path.dirname(file), specifier));
          const targetFloor = target.split(path.sep)[0]!;
          if (target.startsWith("..")) violations.push({ file: relativeFile, specifier, reason: "imports from outside the project's floors" });
          else if (floorNames.has(targetFloor) && !floor.mayImport.includes(targetFloor)) {
            violations.push({ file: relativeFile, specifier, reason: `${floor.name}/ may not import ${targetFloor}/` });
          } else if (!floorNames.has(targetFloor) && floor.name !== "cli") {
            violations.push({ file: relativeFile, specifier, reason: `${floor.name}/ may not import ${targetFloor}/ (not a floor)` });
          }
        } else if (!specifier.startsWith("node:")) {
          const name = packageName(specifier);
          const forbidden = floor.forbiddenPackages.find((entry) => (entry.endsWith("/") ? name.startsWith(entry) : name === entry));
          if (forbidden) violations.push({ file: relativeFile, specifier, reason: `${floor.name}/ may not import ${forbidden}` });
        }
      }
    }
  }
  return violations;
}
