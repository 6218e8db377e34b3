// PyTorch reference fixtures (scripts/make_torch_fixtures.py, run by hand with Debian's python3-torch):
// every op's forward output and input gradients, and whole VGG models loaded from PyTorch state dicts,
// compared element by element with the max |difference| printed per case. The reference values were
// computed in float64 from float32 inputs, so the differences are vgg-ts's own float32 error.
// The suite runs on the reference backend, and again on the native one when the addon is built.
import assert from "node:assert/strict";
import fs from "node:fs";
import { type TestContext, test } from "node:test";
import { fileURLToPath } from "node:url";
import { F, noGrad, setBackend, Tensor, vgg } from "../src/index.js";
import type { Layout } from "../src/models/vgg.js";
import type { Conv2dOptions } from "../src/ops/conv2d.js";
import type { MaxPool2dOptions } from "../src/ops/pool.js";

setBackend("reference");

const FIXTURES = fileURLToPath(new URL("../../test/fixtures/torch/", import.meta.url));
const ATOL = 1e-4;
const RTOL = 1e-4;

interface FixtureTensor {
  shape: number[];
  data: number[];
}

interface OpCase {
  name: string;
  op: string;
  options: Record<string, unknown>;
  inputs: Record<string, FixtureTensor | null>;
  grad_output: FixtureTensor;
  output: FixtureTensor;
  grads: Record<string, FixtureTensor>;
  targets?: number[];
  running_mean?: FixtureTensor;
  running_var?: FixtureTensor;
  updated_running_mean?: FixtureTensor;
  updated_running_var?: FixtureTensor;
}

interface ModelCase {
  name: string;
  layout: Layout;
  config: {
    convArch: [number, number][];
    inChannels: number;
    numClasses: number;
    inputSize?: number;
    widthRatio?: number;
    classifierWidth: number;
    dropout: number;
    batchNorm: boolean;
  };
  training: boolean;
  state_dict: Record<string, FixtureTensor>;
  input: FixtureTensor;
  targets: number[];
  logits: FixtureTensor;
  loss: number;
  grads: Record<string, FixtureTensor>;
  updated_buffers?: Record<string, FixtureTensor>;
  eval_logits?: FixtureTensor;
}

function load<T>(file: string): T[] {
  const doc = JSON.parse(fs.readFileSync(`${FIXTURES}${file}.json`, "utf8")) as { cases: T[] };
  assert.ok(doc.cases.length > 0, `${file}.json has no cases`);
  return doc.cases;
}

function toTensor(t: FixtureTensor, requiresGrad = false): Tensor {
  return new Tensor(Float32Array.from(t.data), t.shape, { requiresGrad });
}

/**
 * Asserts that actual matches the fixture within ATOL + RTOL * |expected| everywhere (and has its shape),
 * and returns the max absolute difference.
 */
function compare(label: string, actual: Tensor | null, expected: FixtureTensor): number {
  assert.ok(actual, `${label}: vgg-ts produced nothing (expected ${JSON.stringify(expected.shape)})`);
  assert.deepEqual([...actual.shape], expected.shape, `${label}: shape`);
  let worst = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const e = expected.data[i];
    const diff = Math.abs(actual.data[i] - e);
    if (!(diff <= ATOL + RTOL * Math.abs(e)))
      assert.fail(`${label}[${i}]: expected ${e} but received ${actual.data[i]} (|diff| ${diff})`);
    worst = Math.max(worst, diff);
  }
  return worst;
}

/** Runs one op fixture: forward, backward with the fixture's upstream gradient, all comparisons. */
function runOpCase(c: OpCase): Record<string, number> {
  const inputs: Record<string, Tensor | null> = {};
  for (const [k, v] of Object.entries(c.inputs)) inputs[k] = v ? toTensor(v, true) : null;
  const x = inputs.x!;
  const opt = c.options;
  let runningMean: Tensor | null = null;
  let runningVar: Tensor | null = null;
  let y: Tensor;
  switch (c.op) {
    case "conv2d":
      y = F.conv2d(x, inputs.weight!, inputs.bias, opt as Conv2dOptions);
      break;
    case "max_pool2d":
      y = F.maxPool2d(x, opt as unknown as MaxPool2dOptions);
      break;
    case "linear":
      y = F.linear(x, inputs.weight!, inputs.bias);
      break;
    case "batch_norm":
      runningMean = toTensor(c.running_mean!);
      runningVar = toTensor(c.running_var!);
      y = F.batchNorm(x, runningMean, runningVar, inputs.weight, inputs.bias, {
        training: opt.training as boolean,
        momentum: opt.momentum as number,
        eps: opt.eps as number,
      });
      break;
    case "cross_entropy":
      y = F.crossEntropy(x, c.targets!);
      break;
    case "log_softmax+nll_loss":
      y = F.nllLoss(F.logSoftmax(x), c.targets!);
      break;
    case "log_softmax":
      y = F.logSoftmax(x);
      break;
    case "adaptive_avg_pool2d":
      y = F.adaptiveAvgPool2d(x, opt.outputSize as [number, number]);
      break;
    default:
      throw new Error(`Expected a known op but received "${c.op}" in the fixture`);
  }
  const diffs: Record<string, number> = { output: compare(`${c.name} output`, y, c.output) };
  y.backward(toTensor(c.grad_output));
  const inputNames = Object.keys(c.inputs).filter((k) => inputs[k]);
  assert.deepEqual(Object.keys(c.grads).sort(), inputNames.sort(), `${c.name}: gradients in the fixture`);
  for (const k of inputNames) diffs[`d${k}`] = compare(`${c.name} grad ${k}`, inputs[k]!.grad, c.grads[k]);
  if (runningMean && runningVar) {
    diffs.running_mean = compare(`${c.name} running_mean`, runningMean, c.updated_running_mean!);
    diffs.running_var = compare(`${c.name} running_var`, runningVar, c.updated_running_var!);
  }
  return diffs;
}

/** Builds the model vgg-ts-side, loads PyTorch's state dict and checks logits, loss and every gradient. */
function runModelCase(c: ModelCase): Record<string, number> {
  const model = vgg(c.config.convArch, { ...c.config, layout: c.layout });
  const state = new Map(
    Object.entries(c.state_dict).map(([k, v]) => [k, { shape: v.shape, data: Float32Array.from(v.data) }]),
  );
  // Strict: every PyTorch key exists in vgg-ts under the same name and shape, and vice versa.
  model.loadStateDict(state);
  model.train(c.training);
  const logits = model.forward(toTensor(c.input));
  const diffs: Record<string, number> = { logits: compare(`${c.name} logits`, logits, c.logits) };
  const loss = F.crossEntropy(logits, c.targets);
  diffs.loss = compare(`${c.name} loss`, loss, { shape: [], data: [c.loss] });
  loss.backward();
  const params = model.namedParameters();
  assert.deepEqual(
    params.map(([k]) => k),
    Object.keys(c.grads),
    `${c.name}: parameter names and order`,
  );
  let grads = 0;
  for (const [k, p] of params) grads = Math.max(grads, compare(`${c.name} grad ${k}`, p.grad, c.grads[k]));
  diffs.grads = grads;
  if (c.updated_buffers) {
    const own = model.stateDict();
    let buffers = 0;
    for (const [k, v] of Object.entries(c.updated_buffers))
      buffers = Math.max(buffers, compare(`${c.name} ${k}`, own.get(k) ?? null, v));
    diffs.running_stats = buffers;
  }
  if (c.eval_logits) {
    model.eval();
    diffs.eval_logits = compare(
      `${c.name} eval logits`,
      noGrad(() => model.forward(toTensor(c.input))),
      c.eval_logits,
    );
  }
  return diffs;
}

function report(t: TestContext, name: string, diffs: Record<string, number>): void {
  const parts = Object.entries(diffs).map(([k, v]) => `${k} ${v.toExponential(2)}`);
  t.diagnostic(`${name}: max |diff| ${parts.join(", ")}`);
}

const opFiles = ["conv2d", "max_pool2d", "linear", "batch_norm", "losses", "adaptive_avg_pool2d"];

function nativeAvailable(): boolean {
  try {
    setBackend("native");
    return true;
  } catch {
    return false;
  } finally {
    setBackend("reference");
  }
}

const backends = nativeAvailable() ? (["reference", "native"] as const) : (["reference"] as const);

for (const backendName of backends) {
  for (const file of opFiles)
    test(`[${backendName}] ${file} matches PyTorch`, (t) => {
      setBackend(backendName);
      for (const c of load<OpCase>(file)) report(t, c.name, runOpCase(c));
    });

  test(`[${backendName}] VGG models loaded from PyTorch state dicts give PyTorch's logits and gradients`, (t) => {
    setBackend(backendName);
    const cases = load<ModelCase>("vgg");
    assert.deepEqual(
      cases.map((c) => c.layout),
      ["d2l", "torchvision", "torchvision"],
    );
    for (const c of cases) report(t, c.name, runModelCase(c));
  });
}

test("the fixtures stay small (< 1 MB together)", () => {
  const total = fs.readdirSync(FIXTURES).reduce((s, f) => s + fs.statSync(`${FIXTURES}${f}`).size, 0);
  assert.ok(total < 1_000_000, `Expected the torch fixtures under 1 MB but they take ${total} bytes`);
});
