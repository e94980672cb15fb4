// Bun's peer in bench/postgres/run.sh: Bun.sql with a pool of `tasks` connections and `tasks`
// concurrent loops of `select $1::int` for `secs` seconds; prints the queries done.
//   bun bun_sql.js <url> [tasks=32] [secs=10]
const { SQL } = require("bun");
const [url, ntasks = "32", secs = "10"] = process.argv.slice(2);

const sql = new SQL({ url, max: Number(ntasks) });
let done = 0, stop = false;
setTimeout(() => { stop = true; }, Number(secs) * 1000);
await Promise.all(Array.from({ length: Number(ntasks) }, async () => {
    let n = 0;
    while (!stop) {
        n++;
        const rows = await sql`select ${n}::int as v`;
        if (rows[0].v !== n) throw new Error("wrong row");
        done++;
    }
}));
console.log(done);
await sql.close();
