// Node.js https hello world (bench/tls/run.sh): argv port, cert, key.
const https = require('https');
const fs = require('fs');
const s = https.createServer({ cert: fs.readFileSync(process.argv[3]), key: fs.readFileSync(process.argv[4]) }, (req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end('Hello, World!');
});
s.keepAliveTimeout = 75000;
s.listen(+process.argv[2], '127.0.0.1');
