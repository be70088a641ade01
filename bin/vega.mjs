#!/usr/bin/env node
// The `vega` command. It runs from a bundle of Vega's TypeScript sources that
// esbuild makes again whenever a source changed (./cli-bundle.mjs: a process
// starts with half the CPU it needs through tsx's loader), so there is no
// build step between a clone, an edit and a running service. Where the bundle
// cannot be made (a read-only install), tsx runs the sources directly.
import { setFlagsFromString } from "node:v8";
import { freshCliBundle } from "./cli-bundle.mjs";

// This lets V8's old generation grow to twice what survived a full collection before it marks again, rather than
// by its own factor, which left the API process (~85 MB live on the embedded database) 24–31 MB of room. With so
// little room, the socket reads of a 1 GiB upload (16,000 buffers of 64 KiB, each dead a moment later) set off a
// full marking of the heap every 60–100 ms, 25–35 per GiB (`--trace-incremental-marking`; with 40 MB of room or
// more it did not happen), on a machine whose two cores the upload already fills. Measured side by side (two
// `vega serve`, uploads interleaved): V8's four background threads used 0.8–1.2 s of CPU per GiB without this
// and ~0.1 s with it; the whole process 3.2 s against 2.2 s (medians). The cost is memory: up to one live heap
// more before a collection. V8 reads the flag at each collection, so setting it first holds for the process.
setFlagsFromString("--heap-growing-percent=100");

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
