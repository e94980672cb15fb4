// The same measures as fs_bench.lua with Node's fs.promises (also run by Bun).
const fs = require("fs").promises;
const dir = process.argv[2];
const small = dir + "/small.bin", big = dir + "/big.bin";
const now = () => Number(process.hrtime.bigint()) / 1e9;
async function rate(name, n, bytes, fn) {
  const t0 = now();
  for (let i = 0; i < n; i++) await fn();
  const dt = now() - t0;
  console.log(bytes ? `${name}_MBps ${(n * bytes / dt / 1e6).toFixed(0)}` : `${name}_per_s ${(n / dt).toFixed(0)}`);
}
async function lateness(fn) {
  let worst = 0, last = now();
  const t = setInterval(() => { const n = now(); const late = (n - last) * 1000 - 10; if (late > worst) worst = late; last = n; }, 10);
  await fn();
  await new Promise((r) => setTimeout(r, 30)); // the tick after the last step counts
  clearInterval(t);
  return worst;
}
(async () => {
  const ss = (await fs.stat(small)).size, bs = (await fs.stat(big)).size;
  await rate("readFile_1MB", 300, ss, () => fs.readFile(small));
  await rate("readFile_100MB", 5, bs, () => fs.readFile(big));
  await rate("stat", 10000, 0, () => fs.stat(small));
  console.log(`timer_late_ms_readFile_100MB ${(await lateness(() => fs.readFile(big))).toFixed(1)}`);
  const blocks = (path) => async () => {
    const f = await fs.open(path); const buf = Buffer.alloc(1048576);
    while ((await f.read(buf, 0, buf.length, null)).bytesRead > 0) {}
    await f.close();
  };
  console.log(`timer_late_ms_blocks_100MB ${(await lateness(blocks(big))).toFixed(1)}`);
  const t0 = now();
  console.log(`timer_late_ms_blocks_1GB ${(await lateness(blocks(dir + "/huge.bin"))).toFixed(1)}`);
  const idle = now() - t0;
  console.log(`timer_late_ms_idle ${(await lateness(() => new Promise((r) => setTimeout(r, idle * 1000)))).toFixed(1)}`);
})();
