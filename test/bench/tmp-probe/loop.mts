const buf = Buffer.alloc(50e6, 97);
for (let r = 0; r < 3; r++) {
  const s = process.cpuUsage(); let c = 0; for (let i = 0; i < buf.length; i++) c += buf[i]; const u = process.cpuUsage(s);
  console.log("sum loop", (50 / ((u.user + u.system) / 1e6)).toFixed(0), "MB/s", c);
  const s2 = process.cpuUsage(); const str = buf.toString("latin1"); const g = /AKIA|ghp_/g; let n = 0; while (g.exec(str)) n++; const u2 = process.cpuUsage(s2);
  console.log("regex 2 literals", (50 / ((u2.user + u2.system) / 1e6)).toFixed(0), "MB/s", n);
  const s3 = process.cpuUsage(); let k = 0; for (let i = buf.indexOf("AKIA"); i !== -1; i = buf.indexOf("AKIA", i + 1)) k++; const u3 = process.cpuUsage(s3);
  console.log("buf.indexOf", (50 / ((u3.user + u3.system) / 1e6)).toFixed(0), "MB/s", k);
}
