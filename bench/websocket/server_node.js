// The Node.js peer of bench/websocket/run.sh (the npm `ws` library): /echo echoes, /pub
// broadcasts every message to every /pub connection (ws has no topics: a loop over the set).
//   NODE_PATH=<prefix>/node_modules node bench/websocket/server_node.js PORT
const http = require("http");
const { WebSocketServer } = require("ws");
const port = Number(process.argv[2] || 19803);
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const subs = new Set();
const server = http.createServer((req, res) => { res.writeHead(400); res.end(); });
server.on("upgrade", (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (req.url === "/pub") {
      subs.add(ws);
      ws.on("close", () => subs.delete(ws));
      ws.on("message", (data, isBinary) => { for (const s of subs) s.send(data, { binary: isBinary }); });
    } else {
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    }
  });
});
server.listen(port, "127.0.0.1");
