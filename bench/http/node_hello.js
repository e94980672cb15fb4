// Node.js http hello world (bench/http/run.sh).
const http = require('http');
const s = http.createServer((req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end('Hello, World!');
});
s.keepAliveTimeout = 75000;
s.listen(+process.argv[2], '127.0.0.1');
