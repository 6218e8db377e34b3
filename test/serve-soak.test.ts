// A bounded soak of `vgg serve --api`: 20,000 requests at 32x32 (image bodies, JSON batches and v2
// tensors) from 16 concurrent clients. Every one must succeed, and the server's resident memory after the
// last may exceed what it was after a warm-up of 2,000 by at most 64 MB: a leak of even 4 KB per request
// would pass that (72 MB).
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { after, before, test } from "node:test";
import {
  agent,
  http,
  metric,
  randomPng,
  type ServerChild,
  smallModel,
  startServe,
  stopServe,
  tempDir,
} from "./serve-harness.js";

const TOTAL = 20_000;
const WARMUP = 2_000;
const CLIENTS = 16;
const BOUND_MB = 64;

let dir: string;
let server: ServerChild | undefined;

before(() => {
  dir = tempDir("vgg-serve-soak-");
});
after(() => {
  stopServe(server);
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
});

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  assert.ok(m, "no VmRSS line");
  return Number(m[1]) / 1024;
}

test(`${TOTAL} requests: none fails and RSS stays within ${BOUND_MB} MB of its post-warm-up value`, {
  timeout: 900_000,
  skip: existsSync("/proc/self/status") ? false : "needs /proc to read the server's RSS",
}, async () => {
  const s = await startServe(["--weights", smallModel(dir), "--max-queue", "1024"]);
  server = s;
  const pid = s.child.pid as number;
  const pngs = Array.from({ length: 8 }, (_, i) => randomPng(20 + 7 * i, 32, i, i % 2 === 0));
  const batch = JSON.stringify({ images: pngs.slice(0, 3).map((p) => p.toString("base64")), top: 2 });
  const tensor = JSON.stringify({
    inputs: [
      {
        name: "input",
        shape: [1, 1, 32, 32],
        datatype: "FP32",
        data: Array.from({ length: 1024 }, (_, i) => (i % 17) / 17),
      },
    ],
  });
  const one = async (i: number) => {
    const kind = i % 10;
    const r =
      kind === 0
        ? await http(`${s.url}/v1/classify`, { body: batch, type: "application/json" })
        : kind === 1
          ? await http(`${s.url}/v2/models/vgg/infer`, { body: tensor, type: "application/json" })
          : await http(`${s.url}/v1/classify`, { body: pngs[i % pngs.length], type: "image/png" });
    assert.equal(r.status, 200, `request ${i}: ${r.body}`);
    const json = JSON.parse(r.body);
    if (kind === 0) assert.equal(json.results.length, 3);
    else if (kind === 1) assert.equal(json.outputs[1].data.length, 10);
    else assert.equal(json.top.length, 5);
  };
  let next = 0;
  let afterWarmup = 0;
  const client = async () => {
    for (let i = next++; i < TOTAL; i = next++) {
      await one(i);
      if (i === WARMUP) afterWarmup = rssMb(pid);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
  const end = rssMb(pid);
  const m = (await http(`${s.url}/metrics`)).body;
  console.log(
    `server RSS ${afterWarmup.toFixed(1)} MB after ${WARMUP} requests, ${end.toFixed(1)} MB after ${TOTAL}; mean batch ${(metric(m, "vgg_serve_batch_size_sum") / metric(m, "vgg_serve_batch_size_count")).toFixed(1)} images`,
  );
  assert.equal(
    metric(m, "vgg_serve_requests_total", 'code="200"') -
      metric(m, "vgg_serve_requests_total", 'route="metrics"'),
    TOTAL,
  );
  assert.equal(metric(m, "vgg_serve_errors_total"), 0);
  assert.ok(end - afterWarmup <= BOUND_MB, `RSS grew from ${afterWarmup.toFixed(1)} to ${end.toFixed(1)} MB`);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});
