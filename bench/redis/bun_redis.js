// Bun's side of bench/redis/run.sh, with Bun.redis (RedisClient): bun bun_redis.js port tasks seconds mode depth
// mode: shared (one client: Bun pipelines concurrent commands itself), conns (one per task),
// pipeline (one client, depth GETs issued together and awaited with Promise.all).
const { RedisClient } = require("bun");
const [port, ntasks = 64, seconds = 10, mode = "shared", depth = 16] = process.argv.slice(2).map((v, i) => (i === 3 ? v : Number(v)));
let stop = false, count = 0;
const mk = () => new RedisClient(`redis://127.0.0.1:${port}`);
(async () => {
  const shared = mk();
  await shared.set("key", "xxx");
  const conns = [];
  const loops = [];
  for (let i = 0; i < ntasks; i++) {
    let r = shared;
    if (mode === "conns") { r = mk(); conns.push(r); await r.get("key"); }
    loops.push((async () => {
      while (!stop) {
        if (mode === "pipeline") {
          const ps = [];
          for (let j = 0; j < depth; j++) ps.push(r.get("key"));
          const res = await Promise.all(ps);
          if (res[depth - 1] !== "xxx") throw new Error("bad reply");
          count += depth;
        } else {
          const v = await r.get("key");
          if (v !== "xxx") throw new Error("bad reply");
          count++;
        }
      }
    })());
  }
  const c0 = process.cpuUsage(), t0 = process.hrtime.bigint();
  await new Promise((res) => setTimeout(res, seconds * 1000));
  stop = true;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cu = process.cpuUsage(c0);
  const n = count;
  await Promise.all(loops);
  console.log(`ops/s ${(n / elapsed).toFixed(0)} cpu_us_per_op ${((cu.user + cu.system) / n).toFixed(3)}`);
  for (const r of conns) r.close();
  shared.close();
})();
