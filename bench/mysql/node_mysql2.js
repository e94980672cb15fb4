// Node's peer in bench/mysql/run.sh: `tasks` connections of the `mysql2` package, each running
// `select ? as v` in a loop for `secs` seconds (execute: a prepared statement, cached per
// connection; query: the text protocol with client-side escaping); prints the queries done.
//   node node_mysql2.js <url> [tasks=32] [secs=10] [mode=execute|query]
const mysql = require("mysql2/promise");
const [url, ntasks = "32", secs = "10", mode = "execute"] = process.argv.slice(2);

(async () => {
    const conns = [];
    for (let i = 0; i < Number(ntasks); i++) conns.push(await mysql.createConnection(url));
    let done = 0, stop = false;
    setTimeout(() => { stop = true; }, Number(secs) * 1000);
    await Promise.all(conns.map(async (c) => {
        let n = 0;
        while (!stop) {
            n++;
            const [rows] = mode === "query" ? await c.query("select ? as v", [n]) : await c.execute("select ? as v", [n]);
            if (Number(rows[0].v) !== n) throw new Error("wrong row " + rows[0].v);
            done++;
        }
    }));
    console.log(done);
    await Promise.all(conns.map((c) => c.end()));
})();
