/**
 * inspectArchive against Info-ZIP's `unzip -l` on the same 50,000-entry
 * archive, run alternately in one process so that machine noise falls on both
 * alike; the target is inspectArchive within 2× of `unzip -l`. yauzl.open()'s
 * full central directory read is timed too, as the reason inspectArchive does
 * its own reads.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import yauzl from "yauzl";
import { inspectArchive } from "../../api/hardening/archive-inspection.ts";
import { buildZip, manySourceFiles } from "../support/zips.ts";

const ENTRY_COUNT = 50_000;
const REPETITIONS = 7;
// Seconds each: three are enough to show the order of magnitude.
const YAUZL_OPEN_REPETITIONS = 3;
const UNZIP = "/usr/bin/unzip";
const TARGET_RATIO = 2;

export default async function (): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-archive-"));
  try {
    // Stored, not deflated: yazl deflates each file in its own zlib call, which
    // takes minutes for 50,000 files, and inspection never reads the data anyway.
    const zip = await buildZip(manySourceFiles(ENTRY_COUNT), { compress: false });
    const file = path.join(dir, "source.zip");
    await writeFile(file, zip);
    console.log(`archive: ${ENTRY_COUNT} entries, ${(zip.length / 1e6).toFixed(1)} MB, written by yazl`);

    const limits = { maxEntries: ENTRY_COUNT, maxUncompressedBytes: 5 * 1024 ** 3, maxCompressionRatio: 1000 };
    const hasUnzip = existsSync(UNZIP);
    if (!hasUnzip) {
      console.log(`${UNZIP} is missing: install Info-ZIP unzip (apt-get install -y unzip) to compare; comparison skipped`);
    }

    const unzipTimes: number[] = [];
    const inspectionTimes: number[] = [];
    for (let i = 0; i < REPETITIONS; i += 1) {
      if (hasUnzip) unzipTimes.push(await timed(async () => listWithUnzip(file)));
      inspectionTimes.push(await timed(() => inspectArchive(file, limits)));
    }
    const yauzlOpenTimes: number[] = [];
    for (let i = 0; i < YAUZL_OPEN_REPETITIONS; i += 1) yauzlOpenTimes.push(await timed(() => readWithYauzlOpen(file)));

    const inspection = median(inspectionTimes);
    const yauzlOpen = median(yauzlOpenTimes);
    if (hasUnzip) {
      const unzip = median(unzipTimes);
      const ratio = inspection / unzip;
      console.log(`unzip -l (output to /dev/null)    median ${ms(unzip)} of ${REPETITIONS}`);
      console.log(
        `inspectArchive                    median ${ms(inspection)} of ${REPETITIONS}  ` +
          `${ratio.toFixed(2)}× unzip -l (target ≤ ${TARGET_RATIO}×: ${ratio <= TARGET_RATIO ? "met" : "MISSED"})`,
      );
      console.log(
        `yauzl.open, full directory read   median ${ms(yauzlOpen)} of ${YAUZL_OPEN_REPETITIONS}  ` +
          `${(yauzlOpen / unzip).toFixed(1)}× unzip -l`,
      );
    } else {
      console.log(`inspectArchive                    median ${ms(inspection)} of ${REPETITIONS}`);
      console.log(`yauzl.open, full directory read   median ${ms(yauzlOpen)} of ${YAUZL_OPEN_REPETITIONS}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function listWithUnzip(file: string): void {
  const result = spawnSync(UNZIP, ["-l", file], { stdio: "ignore" });
  if (result.status !== 0) throw new Error(`unzip -l exited with ${result.status}`);
}

function readWithYauzlOpen(file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: false }, (error, zipfile) => {
      if (error) return reject(error);
      zipfile.on("entry", () => undefined);
      zipfile.on("error", reject);
      zipfile.on("end", () => resolve());
    });
  });
}

async function timed(run: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await run();
  return performance.now() - start;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function ms(milliseconds: number): string {
  return `${milliseconds.toFixed(1)} ms`;
}
