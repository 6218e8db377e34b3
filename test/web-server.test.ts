// The web servers' safety: static files cannot escape their folder, bodies are size-limited, only GET and
// HEAD exist, a foreign Host is refused, and an event-stream client that stops reading is dropped instead
// of stalling the sender or growing memory.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { startDashboardServer } from "../src/web/dashboard-server.js";
import { MAX_BODY_BYTES, resolveStatic } from "../src/web/http.js";
import { SseHub } from "../src/web/sse.js";

let root: string;
let assets: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), "vgg-static-"));
  assets = join(root, "site");
  mkdirSync(join(assets, "sub"), { recursive: true });
  writeFileSync(join(assets, "dashboard.html"), "<p>page</p>");
  writeFileSync(join(assets, "sub", "a.js"), "ok");
  writeFileSync(join(root, "secret.txt"), "TOP-SECRET-CONTENT");
  symlinkSync(join(root, "secret.txt"), join(assets, "link.txt"));
});
after(() => rmSync(root, { recursive: true, force: true }));

test("resolveStatic keeps every path inside its folder", () => {
  assert.equal(resolveStatic(assets, "/sub/a.js"), join(assets, "sub", "a.js"));
  assert.equal(resolveStatic(assets, "/sub/../dashboard.html"), join(assets, "dashboard.html"));
  for (const bad of [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/link.txt", // a symlink pointing out
    "/dashboard.html%00.js",
    "/%E0%A4%A", // malformed escape
    "/sub", // a folder, not a file
    "/missing.js",
  ])
    assert.equal(resolveStatic(assets, bad), null, bad);
});

/** A raw HTTP request, so the path reaches the server exactly as written (no client-side normalising). */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(text));
    let out = "";
    socket.on("data", (d) => {
      out += d.toString();
    });
    socket.on("end", () => resolve(out));
    socket.on("error", reject);
  });
}

const get = (port: number, path: string, host = `127.0.0.1:${port}`) =>
  raw(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);

test("the server answers pages and refuses traversal, bodies, methods and foreign hosts", async () => {
  const server = await startDashboardServer({ host: "127.0.0.1", port: 0, assets });
  try {
    const { port } = server;
    const page = await get(port, "/");
    assert.match(page, /^HTTP\/1.1 200/);
    assert.match(page, /<p>page<\/p>/);
    assert.match(page, /X-Content-Type-Options: nosniff/i);
    for (const path of ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2f..%2fsecret.txt", "/link.txt"]) {
      const r = await get(port, path);
      assert.match(r, /^HTTP\/1.1 404/, path);
      assert.doesNotMatch(r, /TOP-SECRET/, path);
    }
    const big = await raw(
      port,
      `POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: ${MAX_BODY_BYTES + 1}\r\n\r\n`,
    );
    assert.match(big, /^HTTP\/1.1 413/);
    assert.match(big, new RegExp(`Expected a request body of at most ${MAX_BODY_BYTES} bytes but received`));
    const post = await raw(port, `POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: 2\r\n\r\nhi`);
    assert.match(post, /^HTTP\/1.1 405/);
    assert.match(post, /Expected a GET or HEAD request but received POST/);
    const rebinding = await get(port, "/", "evil.example:80");
    assert.match(rebinding, /^HTTP\/1.1 421/);
    assert.match(await get(port, "/", `localhost:${port}`), /^HTTP\/1.1 200/);
  } finally {
    await server.close();
  }
});

test("the event stream replays history, then sends live events", async () => {
  const server = await startDashboardServer({ host: "127.0.0.1", port: 0, assets });
  try {
    server.hub.publish({ event: "record", data: { epoch: 1 } });
    const text = await new Promise<string>((resolve) => {
      const req = request({ port: server.port, host: "127.0.0.1", path: "/events" }, (res) => {
        assert.equal(res.headers["content-type"], "text/event-stream; charset=utf-8");
        let out = "";
        res.on("data", (d) => {
          out += d.toString();
          if (out.includes('"epoch":1') && !out.includes('"epoch":2'))
            server.hub.publish({ event: "record", data: { epoch: 2 } });
          if (out.includes('"epoch":2')) {
            req.destroy();
            resolve(out);
          }
        });
      });
      req.end();
    });
    assert.match(text, /event: reset\ndata: null\n\n/);
    assert.ok(text.indexOf('{"epoch":1}') < text.indexOf('{"epoch":2}'));
  } finally {
    await server.close();
  }
});

test("a client that stops reading is dropped and never blocks publishing", { timeout: 120_000 }, async () => {
  const hub = new SseHub(64 * 1024);
  const own = createServer((_req, res) => hub.attach(res));
  await new Promise<void>((r) => own.listen(0, "127.0.0.1", r));
  const port = (own.address() as { port: number }).port;
  // Connect, send the request, then never read: the kernel buffers fill and the backlog grows.
  const socket = connect(port, "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  socket.pause();
  while (hub.clientCount === 0) await new Promise((r) => setTimeout(r, 10));
  const payload = "x".repeat(16 * 1024);
  // publish() returns at once whatever the client does (the loop ends); the stalled client is dropped once
  // its backlog passes the limit, long before 2000 publications of 16 KiB.
  let published = 0;
  for (let i = 0; i < 2000 && hub.clientCount > 0; i++, published++) {
    hub.publish({ event: "progress", data: payload }, "latest");
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(hub.clientCount, 0, `still connected after ${published} publications`);
  assert.equal(hub.dropped, 1);
  socket.destroy();
  hub.close();
  own.close();
});
