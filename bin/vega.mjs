#!/usr/bin/env node
// The `vega` command. It runs from a bundle of Vega's TypeScript sources that
// esbuild makes again whenever a source changed (./cli-bundle.mjs: a process
// starts with half the CPU it needs through tsx's loader), so there is no
// build step between a clone, an edit and a running service. Where the bundle
// cannot be made (a read-only install), tsx runs the sources directly.
import { freshCliBundle } from "./cli-bundle.mjs";

const bundle = await freshCliBundle().catch(() => undefined);
if (bundle) {
  // Stack traces in logs name the TypeScript sources, as they did under tsx.
  process.setSourceMapsEnabled(true);
  await import(bundle);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../cli/main.ts");
}
