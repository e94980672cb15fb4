// The Bun peer of bench/websocket/run.sh (Bun.serve's WebSocket, uWebSockets beneath):
// /echo echoes, /pub subscribes to one topic and publishes every message to it.
//   bun bench/websocket/server_bun.js PORT
const port = Number(process.argv[2] || 19802);
const server = Bun.serve({
  port, hostname: "127.0.0.1",
  fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (server.upgrade(req, { data: { pub: path === "/pub" } })) return;
    return new Response("not a websocket", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    backpressureLimit: 16 * 1024 * 1024,
    open(ws) { if (ws.data.pub) ws.subscribe("all"); },
    message(ws, msg) { if (ws.data.pub) server.publish("all", msg); else ws.send(msg); },
  },
});
