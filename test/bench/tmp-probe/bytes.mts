import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { SECRET_RULES } from "../../../worker/runner/analyzers/secret-rules.ts";
const root = process.argv[2];
const bufs: Buffer[] = [];
const walk = (d: string) => { for (const e of readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else bufs.push(readFileSync(p)); } };
walk(root);
const mb = bufs.reduce((a, t) => a + t.length, 0) / 1e6;
const fold = new Uint8Array(256); for (let i = 0; i < 256; i++) fold[i] = i >= 65 && i <= 90 ? i + 32 : i;
type K = { bytes: Uint8Array; ci: boolean };
const buckets: K[][] = [[]];
const pair = new Uint16Array(65536);
for (const r of SECRET_RULES) { const ci = r.pattern.flags.includes("i"); for (const k of r.keywords) { const b = Buffer.from(k); const key = (fold[b[0]] << 8) | fold[b[1]]; if (!pair[key]) { pair[key] = buckets.length; buckets.push([]); } buckets[pair[key]].push({ bytes: b, ci }); } }
function scan(buf: Buffer): number {
  let hits = 0;
  const n = buf.length - 1;
  for (let i = 0; i < n; i++) {
    const id = pair[(fold[buf[i]] << 8) | fold[buf[i + 1]]];
    if (id === 0) continue;
    for (const k of buckets[id]) {
      const kb = k.bytes; const len = kb.length;
      if (i + len > buf.length) continue;
      let j = 0;
      if (k.ci) { for (; j < len; j++) if (fold[buf[i + j]] !== kb[j]) break; }
      else { for (; j < len; j++) if (buf[i + j] !== kb[j]) break; }
      if (j === len) { hits++; break; }
    }
  }
  return hits;
}
let cand = 0;
for (let round = 0; round < 3; round++) {
  const s = process.cpuUsage(); let c = 0; for (const b of bufs) c += scan(b); const u = process.cpuUsage(s);
  console.log("bytes-pair", (mb / ((u.user + u.system) / 1e6)).toFixed(0), "MB/s", c);
}
{ const s = process.cpuUsage(); let c = 0; for (const b of bufs) c += b.toString("utf8").length; const u = process.cpuUsage(s); console.log("decode", (mb / ((u.user + u.system) / 1e6)).toFixed(0), "MB/s"); }
{ const s = process.cpuUsage(); let c = 0; for (const b of bufs) c += b.subarray(0, 8192).includes(0) ? 1 : 0; const u = process.cpuUsage(s); console.log("nul", (mb / ((u.user + u.system) / 1e6)).toFixed(0), "MB/s"); }
