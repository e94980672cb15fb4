// Node's peer in bench/postgres/run.sh: `tasks` clients of the `pg` package (one connection
// each), each running `select $1::int` in a loop for `secs` seconds; prints the queries done.
//   node node_pg.js <url> [tasks=32] [secs=10]
const { Client } = require("pg");
const [url, ntasks = "32", secs = "10"] = process.argv.slice(2);

(async () => {
    const clients = [];
    for (let i = 0; i < Number(ntasks); i++) {
        const c = new Client({ connectionString: url });
        await c.connect();
        clients.push(c);
    }
    let done = 0, stop = false;
    setTimeout(() => { stop = true; }, Number(secs) * 1000);
    await Promise.all(clients.map(async (c) => {
        let n = 0;
        while (!stop) {
            n++;
            const r = await c.query("select $1::int as v", [n]);
            if (r.rows[0].v !== n) throw new Error("wrong row");
            done++;
        }
    }));
    console.log(done);
    await Promise.all(clients.map((c) => c.end()));
})();
