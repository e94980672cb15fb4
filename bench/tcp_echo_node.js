// Node.js peer of the TCP echo benchmark (bench/tcp_echo.sh): node bench/tcp_echo_node.js PORT
const net = require('net');

const port = Number(process.argv[2] || 9003);
net.createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('data', (data) => sock.write(data));
    sock.on('error', () => sock.destroy());
}).listen(port, '127.0.0.1');
