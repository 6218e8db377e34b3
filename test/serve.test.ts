// `vgg serve --api`: answers equal to `vgg predict`'s for the same PNGs (exactly at batch 1; to float32
// rounding when batched, where the fully connected layers run as GEMM instead of GEMV), the Open
// Inference Protocol v2 endpoints as its documents specify them, and each bad request refused with its
// status and reason while the server stays up.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { decodeImage } from "../src/io/image.js";
import { imageToInput, softmax } from "../src/serve/classify.js";
import { loadModel } from "../src/train/checkpoint.js";
import {
  agent,
  http,
  idleConnection,
  metric,
  pngFiles,
  predictJson,
  randomPng,
  raw,
  type ServerChild,
  smallModel,
  startServe,
  stopServe,
  tempDir,
} from "./serve-harness.js";

interface Ranked {
  class: number;
  name: string;
  probability: number;
}

let dir: string;
let weights: string;
let files: string[];
let expected: { file: string; top: Ranked[] }[];
const servers: ServerChild[] = [];

before(async () => {
  dir = tempDir("vgg-serve-");
  weights = smallModel(dir);
  files = pngFiles(dir);
  expected = (await predictJson(weights, files, 10)) as typeof expected;
});
after(() => {
  for (const s of servers) stopServe(s);
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
});

async function serve(args: string[]): Promise<ServerChild> {
  const s = await startServe(["--weights", weights, ...args]);
  servers.push(s);
  return s;
}

const classify = (url: string, file: string, query = "?top=10") =>
  http(`${url}/v1/classify${query}`, { body: readFileSync(file), type: "image/png" });

/** Same classes in the same order, probabilities within `tol` (0: identical). */
function assertSameRanking(got: Ranked[], want: Ranked[], tol: number, what: string): void {
  assert.deepEqual(
    got.map((r) => [r.class, r.name]),
    want.map((r) => [r.class, r.name]),
    what,
  );
  got.forEach((r, i) => {
    const d = Math.abs(r.probability - want[i].probability);
    assert.ok(d <= tol, `${what}: class ${r.class} probability ${r.probability} vs ${want[i].probability}`);
  });
}

test("one image at a time (--max-batch 1) gives vgg predict's numbers exactly", {
  timeout: 120_000,
}, async () => {
  const s = await serve(["--max-batch", "1"]);
  for (const [i, file] of files.entries()) {
    const r = await classify(s.url, file);
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body).top, expected[i].top, file);
  }
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});

test("two model threads (--workers 2) answering concurrent clients one image per batch give vgg predict's numbers exactly", {
  timeout: 120_000,
}, async () => {
  const s = await serve(["--max-batch", "1", "--workers", "2"]);
  const order = Array.from({ length: 40 }, (_, i) => i % files.length);
  const replies = await Promise.all(order.map((i) => classify(s.url, files[i])));
  replies.forEach((r, k) => {
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body).top, expected[order[k]].top, files[order[k]]);
  });
  const m = (await http(`${s.url}/metrics`)).body;
  assert.equal(metric(m, "vgg_serve_batch_size_count"), 40);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});

test("concurrent clients, batched, get vgg predict's answers", { timeout: 180_000 }, async () => {
  const s = await serve(["--max-batch", "8", "--max-delay-ms", "20"]);
  // 60 requests at once from up to 64 sockets: the batcher groups them as they arrive. An idle connection
  // keeps each batch waiting for its delay (it could send), as a busy server's other clients would.
  const idle = await idleConnection(s.url);
  const order = Array.from({ length: 60 }, (_, i) => i % files.length);
  const replies = await Promise.all(order.map((i) => classify(s.url, files[i])));
  replies.forEach((r, k) => {
    assert.equal(r.status, 200, r.body);
    assertSameRanking(JSON.parse(r.body).top, expected[order[k]].top, 1e-6, files[order[k]]);
  });
  // A JSON batch of base64 images is one request; its images run in one batch.
  const images = files.map((f) => readFileSync(f).toString("base64"));
  const batch = await http(`${s.url}/v1/classify`, {
    body: JSON.stringify({ images, top: 3 }),
    type: "application/json",
  });
  assert.equal(batch.status, 200, batch.body);
  const results = JSON.parse(batch.body).results as { top: Ranked[] }[];
  assert.equal(results.length, files.length);
  for (const [i, r] of results.entries())
    assertSameRanking(r.top, expected[i].top.slice(0, 3), 1e-6, files[i]);
  const m = (await http(`${s.url}/metrics`)).body;
  assert.equal(metric(m, "vgg_serve_requests_total", 'route="classify",code="200"'), 61);
  assert.equal(metric(m, "vgg_serve_batch_size_sum"), 60 + files.length);
  assert.ok(metric(m, "vgg_serve_batch_size_bucket", 'le="4"') < metric(m, "vgg_serve_batch_size_count"));
  assert.equal(metric(m, "vgg_serve_errors_total"), 0);
  idle.destroy();
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});

test("the Open Inference Protocol v2 endpoints answer as the protocol documents", {
  timeout: 120_000,
}, async () => {
  const s = await serve(["--model-name", "fashion"]);
  const get = async (path: string, status = 200) => {
    const r = await http(`${s.url}${path}`);
    assert.equal(r.status, status, `${path}: ${r.body}`);
    assert.match(String(r.headers["content-type"]), /^application\/json/);
    return JSON.parse(r.body);
  };
  // Health: 200 means live / ready.
  assert.deepEqual(await get("/v2/health/live"), { live: true });
  assert.deepEqual(await get("/v2/health/ready"), { ready: true });
  assert.deepEqual(await get("/v2/models/fashion/ready"), { name: "fashion", ready: true });
  // Server metadata: name, version, extensions.
  const server = await get("/v2");
  assert.equal(server.name, "vgg-ts");
  assert.equal(typeof server.version, "string");
  assert.ok(Array.isArray(server.extensions));
  // Model metadata: name, versions, platform, inputs and outputs with name, datatype, shape (-1: any).
  const meta = await get("/v2/models/fashion");
  assert.deepEqual(meta, await get("/v2/models/fashion/versions/1"));
  assert.equal(meta.name, "fashion");
  assert.equal(typeof meta.platform, "string");
  assert.deepEqual(meta.inputs, [{ name: "input", datatype: "FP32", shape: [-1, 1, 32, 32] }]);
  assert.deepEqual(
    meta.outputs.map((o: { name: string }) => o.name),
    ["logits", "probabilities"],
  );
  for (const o of meta.outputs) assert.deepEqual([o.datatype, o.shape], ["FP32", [-1, 10]]);
  const unknown = await get("/v2/models/other", 404);
  assert.equal(typeof unknown.error, "string");

  // Inference: the input tensor is built here from the PNGs, exactly as the server's own preprocessing.
  const { model } = loadModel(weights, null);
  const tensors = files.map((f) => Array.from(imageToInput(decodeImage(readFileSync(f)), model.config)));
  const infer = async (body: object) => {
    const r = await http(`${s.url}/v2/models/fashion/infer`, {
      body: JSON.stringify(body),
      type: "application/json",
    });
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body);
  };
  // Flat data, two images, an id to echo, both outputs by default.
  const flat = await infer({
    id: "req-1",
    inputs: [
      { name: "input", shape: [2, 1, 32, 32], datatype: "FP32", data: [...tensors[0], ...tensors[1]] },
    ],
  });
  assert.equal(flat.model_name, "fashion");
  assert.equal(flat.model_version, "1");
  assert.equal(flat.id, "req-1");
  assert.deepEqual(
    flat.outputs.map((o: { name: string; datatype: string; shape: number[] }) => [
      o.name,
      o.datatype,
      o.shape,
    ]),
    [
      ["logits", "FP32", [2, 10]],
      ["probabilities", "FP32", [2, 10]],
    ],
  );
  const [logits, probs] = flat.outputs.map((o: { data: number[] }) => o.data);
  for (let i = 0; i < 2; i++) {
    const p = softmax(Float32Array.from(logits.slice(10 * i, 10 * i + 10)));
    for (let c = 0; c < 10; c++) {
      assert.ok(Math.abs(probs[10 * i + c] - p[c]) < 1e-7);
      const want = expected[i].top.find((r) => r.class === c)?.probability ?? Number.NaN;
      assert.ok(
        Math.abs(probs[10 * i + c] - want) < 1e-6,
        `image ${i} class ${c}: ${probs[10 * i + c]} vs ${want}`,
      );
    }
  }
  // Nested data (row-major, as the shape), one output asked for, no id.
  const rows: number[][][] = [];
  for (let y = 0; y < 32; y++) rows.push([tensors[2].slice(32 * y, 32 * y + 32)]);
  const nested = await infer({
    inputs: [{ name: "input", shape: [1, 1, 32, 32], datatype: "FP32", data: [[rows.map((r) => r[0])]] }],
    outputs: [{ name: "probabilities" }],
  });
  assert.equal(nested.id, undefined);
  assert.deepEqual(
    nested.outputs.map((o: { name: string }) => o.name),
    ["probabilities"],
  );
  const top = expected[2].top[0];
  assert.ok(Math.abs(nested.outputs[0].data[top.class] - top.probability) < 1e-6);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});

test("each bad request gets its status and reason, and the server stays up", {
  timeout: 120_000,
}, async () => {
  const s = await serve(["--max-body-bytes", "100000", "--max-batch", "4"]);
  const inferUrl = `${s.url}/v2/models/vgg/infer`;
  const input = (o: object) =>
    JSON.stringify({
      inputs: [
        { name: "input", shape: [1, 1, 32, 32], datatype: "FP32", data: new Array(1024).fill(0), ...o },
      ],
    });
  const cases: [
    string,
    Promise<ReturnType<typeof http> extends Promise<infer R> ? R : never>,
    number,
    RegExp,
  ][] = [
    [
      "not an image",
      http(`${s.url}/v1/classify`, { body: "hello", type: "image/png" }),
      400,
      /image: not a PNG or JPEG image/,
    ],
    [
      "a truncated PNG",
      http(`${s.url}/v1/classify`, { body: randomPng(20, 20, 1).subarray(0, 60), type: "image/png" }),
      400,
      /cannot decode the PNG image/,
    ],
    [
      "text/plain",
      http(`${s.url}/v1/classify`, { body: "x", type: "text/plain" }),
      415,
      /Expected Content-Type image\/png/,
    ],
    ["no content type", http(`${s.url}/v1/classify`, { body: "x" }), 415, /received "none"/],
    [
      "a bad top",
      http(`${s.url}/v1/classify?top=0`, { body: randomPng(8, 8, 2), type: "image/png" }),
      400,
      /Expected top to be a positive integer/,
    ],
    [
      "JSON without images",
      http(`${s.url}/v1/classify`, { body: '{"pics": []}', type: "application/json" }),
      400,
      /Expected a JSON object \{"images"/,
    ],
    [
      "a bad base64 image",
      http(`${s.url}/v1/classify`, { body: '{"images": ["aGVsbG8="]}', type: "application/json" }),
      400,
      /images\[0\]: not a PNG or JPEG/,
    ],
    [
      "too many images",
      http(`${s.url}/v1/classify`, {
        body: JSON.stringify({ images: new Array(5).fill(randomPng(8, 8, 3).toString("base64")) }),
        type: "application/json",
      }),
      400,
      /at most 4 images per request but received 5/,
    ],
    ["GET on classify", http(`${s.url}/v1/classify`), 405, /Expected POST but received GET/],
    ["an unknown path", http(`${s.url}/v2/nothing`), 404, /Not found/],
    [
      "broken JSON",
      http(inferUrl, { body: "{", type: "application/json" }),
      400,
      /Expected a JSON body but it does not parse/,
    ],
    [
      "infer as text",
      http(inferUrl, { body: input({}), type: "text/plain" }),
      415,
      /Expected Content-Type application\/json/,
    ],
    [
      "no inputs",
      http(inferUrl, { body: "{}", type: "application/json" }),
      400,
      /Expected inputs to hold exactly one tensor/,
    ],
    [
      "a wrong input name",
      http(inferUrl, { body: input({ name: "x" }), type: "application/json" }),
      400,
      /Expected the input tensor to be named "input" but received "x"/,
    ],
    [
      "a wrong datatype",
      http(inferUrl, { body: input({ datatype: "INT32" }), type: "application/json" }),
      400,
      /Expected datatype "FP32" .* but received "INT32"/,
    ],
    [
      "a wrong shape",
      http(inferUrl, { body: input({ shape: [1, 3, 32, 32] }), type: "application/json" }),
      400,
      /Expected input "input" of shape \[-1, 1, 32, 32\] but received \[1,3,32,32\]/,
    ],
    [
      "too few values",
      http(inferUrl, { body: input({ data: [1, 2, 3] }), type: "application/json" }),
      400,
      /Expected 1024 values for shape \[1,1,32,32\] but the data holds 3/,
    ],
    [
      "a string in the data",
      http(inferUrl, { body: input({ data: ["a"] }), type: "application/json" }),
      400,
      /Expected the tensor's data to hold numbers/,
    ],
    [
      "an unknown output",
      http(inferUrl, {
        body: JSON.stringify({ ...JSON.parse(input({})), outputs: [{ name: "softmax" }] }),
        type: "application/json",
      }),
      400,
      /Expected an output named "logits" or "probabilities" but received "softmax"/,
    ],
    [
      "an unknown model",
      http(`${s.url}/v2/models/resnet/infer`, { body: input({}), type: "application/json" }),
      404,
      /Unknown model "resnet"; this server serves "vgg"/,
    ],
    ["an unknown version", http(`${s.url}/v2/models/vgg/versions/7`), 404, /Unknown version "7"/],
    [
      "a foreign Host",
      http(`${s.url}/v2/health/live`, { headers: { Host: "evil.example" } }),
      421,
      /Host header/,
    ],
  ];
  for (const [what, reply, status, message] of cases) {
    const r = await reply;
    assert.equal(r.status, status, `${what}: ${r.body}`);
    assert.match(JSON.parse(r.body).error, message, what);
  }
  // Over the body limit: declared (refused before reading) and sent chunked (refused once past it).
  const host = `Host: ${new URL(s.url).host}\r\n`;
  const declared = await raw(
    s.url,
    `POST /v1/classify HTTP/1.1\r\n${host}Content-Type: image/png\r\nContent-Length: 100001\r\n\r\n`,
  );
  assert.match(declared, /^HTTP\/1.1 413/);
  assert.match(declared, /at most 100000 bytes but received 100001/);
  const chunk = Buffer.alloc(60_000, 1);
  const chunked = await raw(
    s.url,
    Buffer.concat([
      Buffer.from(
        `POST /v2/models/vgg/infer HTTP/1.1\r\n${host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
      ),
      ...[chunk, chunk].flatMap((c) => [Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from("\r\n")]),
      Buffer.from("0\r\n\r\n"),
    ]),
  );
  assert.match(chunked, /^HTTP\/1.1 413/);
  assert.match(chunked, /at most 100000 bytes but received more/);
  const live = await http(`${s.url}/v2/health/ready`);
  assert.equal(live.status, 200);
  const ok = await http(`${s.url}/v1/classify`, { body: randomPng(30, 30, 4), type: "image/png" });
  assert.equal(ok.status, 200, ok.body);
  const m = (await http(`${s.url}/metrics`)).body;
  assert.equal(metric(m, "vgg_serve_errors_total"), cases.length + 2);
  s.child.kill("SIGTERM");
  assert.equal(await s.exit, 0);
});
