import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { SECRET_RULES } from "../../../worker/runner/analyzers/secret-rules.ts";
const root = process.argv[2];
const texts: string[] = [];
const walk = (d: string) => { for (const e of readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else texts.push(readFileSync(p).toString("utf8")); } };
walk(root);
const mb = texts.reduce((a, t) => a + t.length, 0) / 1e6;
const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
const ci = (x: string) => [...x].map((c) => (c.toLowerCase() !== c.toUpperCase() ? `[${c.toLowerCase()}${c.toUpperCase()}]` : esc(c))).join("");
const cs: string[] = [], cis: string[] = [];
for (const r of SECRET_RULES) for (const k of r.keywords) (r.pattern.flags.includes("i") ? cis : cs).push(r.pattern.flags.includes("i") ? k.toLowerCase() : k);
const all = [...new Set([...cs, ...cis])].sort((a, b) => b.length - a.length);
const variants: Record<string, () => number> = {
  combinedClasses: () => { const g = new RegExp([...cs.map(esc), ...cis.map(ci)].join("|"), "g"); let c = 0; for (const t of texts) { g.lastIndex = 0; while (g.exec(t)) c++; } return c; },
  allI: () => { const g = new RegExp(all.map(esc).join("|"), "gi"); let c = 0; for (const t of texts) { g.lastIndex = 0; while (g.exec(t)) c++; } return c; },
  lowerThenCS: () => { const g = new RegExp(all.map((k) => esc(k.toLowerCase())).join("|"), "g"); let c = 0; for (const t of texts) { const l = t.toLowerCase(); g.lastIndex = 0; while (g.exec(l)) c++; } return c; },
  csOnly: () => { const g = new RegExp(cs.map(esc).join("|"), "g"); let c = 0; for (const t of texts) { g.lastIndex = 0; while (g.exec(t)) c++; } return c; },
  ciOnlyI: () => { const g = new RegExp(cis.map(esc).join("|"), "gi"); let c = 0; for (const t of texts) { g.lastIndex = 0; while (g.exec(t)) c++; } return c; },
  matchAllI: () => { const g = new RegExp(all.map(esc).join("|"), "gi"); let c = 0; for (const t of texts) { for (const _ of t.matchAll(g)) c++; } return c; },
  indexOfPerKeywordLower: () => { let c = 0; const ks = all.map((k) => k.toLowerCase()); for (const t of texts) { const l = t.toLowerCase(); for (const k of ks) { for (let i = l.indexOf(k); i !== -1; i = l.indexOf(k, i + 1)) c++; } } return c; },
};
for (let round = 0; round < 2; round++) for (const [name, fn] of Object.entries(variants)) { const s = process.cpuUsage(); const c = fn(); const u = process.cpuUsage(s); const d = (u.user + u.system) / 1e6; console.log(name.padEnd(24), (mb / d).toFixed(0), "MB/s", c); }
