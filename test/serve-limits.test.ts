// Backpressure, timeouts and shutdown of `vgg serve --api`, keyed on what the server reports (its queue
// depth in /metrics), never on timing: with a batch delay of ten minutes and a connection that could still
// send (idleConnection), requests stay queued until the queue fills or SIGTERM flushes it.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import {
  agent,
  http,
  idleConnection,
  metric,
  randomPng,
  type ServerChild,
  smallModel,
  startServe,
  stopServe,
  tempDir,
  waitForMetrics,
} from "./serve-harness.js";

// Batches start only when full (more images than any test queues) or after ten minutes.
const HELD = ["--max-delay-ms", "600000", "--max-batch", "512"];
let dir: string;
let weights: string;
const servers: ServerChild[] = [];

before(() => {
  dir = tempDir("vgg-serve-limits-");
  weights = smallModel(dir);
});
after(() => {
  for (const s of servers) stopServe(s);
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** A server with an idle connection open: a batch never starts for want of other clients. */
async function serve(args: string[], idle = true): Promise<ServerChild> {
  const s = await startServe(["--weights", weights, ...args]);
  servers.push(s);
  if (idle) (await idleConnection(s.url)).on("error", () => {});
  return s;
}

const image = (seed: number) => randomPng(32, 32, seed);
const classify = (url: string, seed: number) =>
  http(`${url}/v1/classify`, { body: image(seed), type: "image/png" });
const queued = (n: number) => (m: string) => metric(m, "vgg_serve_queue_images") === n;

test("beyond the queue limit only 503 with Retry-After; SIGTERM answers every queued request, then exits", {
  timeout: 120_000,
}, async () => {
  const s = await serve([...HELD, "--max-queue", "6"]);
  const held = Array.from({ length: 6 }, (_, i) => classify(s.url, i));
  await waitForMetrics(s.url, queued(6));
  const refused = await Promise.all(Array.from({ length: 10 }, (_, i) => classify(s.url, 100 + i)));
  for (const r of refused) {
    assert.equal(r.status, 503, r.body);
    assert.equal(r.headers["retry-after"], "1");
    assert.match(JSON.parse(r.body).error, /the queue is full \(6 of 6 images waiting\); retry later/);
  }
  // The HTTP thread still answers health checks while the queue is full.
  assert.equal((await http(`${s.url}/v2/health/live`)).status, 200);
  s.child.kill("SIGTERM");
  const answers = await Promise.all(held);
  for (const r of answers) {
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).top.length, 5);
  }
  assert.equal(await s.exit, 0);
  assert.match(s.stdout(), /SIGTERM: answering the requests already received, then stopping/);
});

test("SIGTERM with a hundred requests in flight, some of them v2, answers them all before exit", {
  timeout: 120_000,
}, async () => {
  const s = await serve([...HELD, "--max-queue", "1000"]);
  const body = JSON.stringify({
    inputs: [{ name: "input", shape: [2, 1, 32, 32], datatype: "FP32", data: new Array(2048).fill(0.25) }],
  });
  const inflight = Array.from({ length: 100 }, (_, i) =>
    i % 4 === 0
      ? http(`${s.url}/v2/models/vgg/infer`, { body, type: "application/json" })
      : classify(s.url, i),
  );
  await waitForMetrics(s.url, queued(75 + 2 * 25));
  s.child.kill("SIGTERM");
  const replies = await Promise.all(inflight);
  replies.forEach((r, i) => {
    assert.equal(r.status, 200, `request ${i}: ${r.body}`);
    const json = JSON.parse(r.body);
    if (i % 4 === 0) assert.deepEqual(json.outputs[0].shape, [2, 10]);
    else assert.equal(json.top.length, 5);
  });
  assert.equal(await s.exit, 0);
});

test("a lone client's batch starts at once, without the delay: no other client could join it", {
  timeout: 120_000,
}, async () => {
  // With a ten-minute delay, an answer can only come from the batcher seeing that nobody else could send.
  const s = await serve(HELD, false);
  const r = await http(`${s.url}/v1/classify`, { body: image(3), type: "image/png", fresh: true });
  assert.equal(r.status, 200, r.body);
  assert.equal(JSON.parse(r.body).top.length, 5);
  const m = (await http(`${s.url}/metrics`)).body;
  assert.equal(metric(m, "vgg_serve_batch_size_count"), 1);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});

test("a request that waits longer than --request-timeout-ms gets 504 and later ones are still served", {
  timeout: 120_000,
}, async () => {
  // The batch delay (10 minutes) outlasts the timeout on any machine, so the request must time out.
  const s = await serve([...HELD, "--request-timeout-ms", "200"]);
  const r = await classify(s.url, 1);
  assert.equal(r.status, 504, r.body);
  assert.match(JSON.parse(r.body).error, /the request took longer than 200 ms/);
  assert.equal(metric((await http(`${s.url}/metrics`)).body, "vgg_serve_queue_images"), 0);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});

test("a client that goes away takes its images out of the queue", { timeout: 120_000 }, async () => {
  const s = await serve(HELD);
  const { hostname, port } = new URL(s.url);
  const body = image(7);
  const socket = connect(Number(port), hostname, () =>
    socket.write(
      Buffer.concat([
        Buffer.from(
          `POST /v1/classify HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: image/png\r\nContent-Length: ${body.length}\r\n\r\n`,
        ),
        body,
      ]),
    ),
  );
  socket.on("error", () => {});
  await waitForMetrics(s.url, queued(1));
  socket.destroy();
  const m = await waitForMetrics(s.url, queued(0));
  assert.equal(metric(m, "vgg_serve_requests_total", 'code="499"'), 1);
  assert.equal(metric(m, "vgg_serve_batch_size_count"), 0);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});
