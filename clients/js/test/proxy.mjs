// A TCP proxy in front of the gateway whose connections a test can cut (a reset, as a
// lost network looks to both ends) and whose new connections it can hold back (the
// network still down), so a client's reconnects wait.
import net from "node:net";

export async function startProxy(targetHost, targetPort) {
  const sockets = new Set();
  let held = [];
  let paused = false;
  const server = net.createServer((client) => {
    const connect = () => {
      const upstream = net.connect(targetPort, targetHost);
      client.pipe(upstream);
      upstream.pipe(client);
      const pair = { client, upstream };
      sockets.add(pair);
      const end = () => {
        sockets.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on("error", end);
      upstream.on("error", end);
      client.on("close", end);
      upstream.on("close", end);
    };
    if (paused) held.push(connect);
    else connect();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    /** Resets every open connection (both sides) and holds new ones until `resume`. */
    cut() {
      paused = true;
      for (const { client, upstream } of sockets) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      sockets.clear();
    },
    /** Lets held and new connections through again. */
    resume() {
      paused = false;
      for (const connect of held.splice(0)) connect();
    },
    close() {
      server.close();
      for (const { client, upstream } of sockets) {
        client.destroy();
        upstream.destroy();
      }
    },
  };
}
