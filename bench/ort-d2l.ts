// Inference throughput of the d2l model (VGG-11/4, 1 channel) in vgg-ts (native backend) and in
// onnxruntime-node running vgg-ts's ONNX export of the same model, in one run: the yardstick
// for inference. Run: node dist/bench/ort-d2l.js [--runs N] [--threads N]
import { noGrad } from "../src/autograd.js";
import { setBackend, setNumThreads } from "../src/backend/index.js";
import { exportOnnx } from "../src/interop/onnx.js";
import { vgg, vggArchs } from "../src/models/vgg.js";
import { prepackForInference } from "../src/nn/layers.js";
import { Tensor } from "../src/tensor.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const runs = arg("--runs", 5);
const threads = arg("--threads", 2);
setBackend("native");
setNumThreads(threads);
const ort = (await import("onnxruntime-node")).default;

// Images/s of f: the median of timed runs after `warm` untimed ones, running for at least `seconds`.
async function rate(f: () => unknown, n: number, seconds: number, warm: number): Promise<number> {
  for (let i = 0; i < warm; i++) await f();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 3 || performance.now() - start < seconds * 1000) {
    const t0 = performance.now();
    await f();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return n / (times[times.length >> 1] / 1000);
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];

console.log(
  `d2l VGG-11/4 inference, ${threads} threads, images/s: median over ${runs} alternating rounds of about 1 s each`,
);
console.log("size batch    vgg-ts  onnxruntime   ratio");
for (const [size, batch] of [
  [224, 1],
  [224, 128],
  [32, 128],
]) {
  // Both runtimes pack the fully connected weights once: onnxruntime when the session starts.
  const model = prepackForInference(
    vgg(vggArchs.vgg11, { widthRatio: 4, inChannels: 1, inputSize: size, numClasses: 10 }),
  );
  const data = new Float32Array(batch * size * size);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.5 + 0.5;
  const x = new Tensor(data, [batch, 1, size, size]);
  const session = await ort.InferenceSession.create(exportOnnx(model), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
  });
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, [batch, 1, size, size]) };
  const ours = () => noGrad(() => model.forward(x));
  const theirs = () => session.run(feeds);
  // Warm-up (and the native backend's per-shape algorithm choice), then rounds that alternate the two, so
  // a drift in the machine's speed affects both alike.
  await rate(ours, batch, 0, 2);
  await rate(theirs, batch, 0, 2);
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < runs; r++) {
    a.push(await rate(ours, batch, 1, 1));
    b.push(await rate(theirs, batch, 1, 1));
  }
  const [oursRate, theirsRate] = [median(a), median(b)];
  await session.release();
  console.log(
    `${String(size).padStart(4)} ${String(batch).padStart(5)} ${oursRate.toFixed(1).padStart(9)} ${theirsRate.toFixed(1).padStart(12)} ${(oursRate / theirsRate).toFixed(2).padStart(6)}x`,
  );
}
