// Bun https hello world (bench/tls/run.sh): argv port, cert, key.
const port = +process.argv[2];
Bun.serve({
    port,
    hostname: '127.0.0.1',
    tls: { cert: Bun.file(process.argv[3]), key: Bun.file(process.argv[4]) },
    fetch() {
        return new Response('Hello, World!', { headers: { 'Content-Type': 'text/plain' } });
    },
});
