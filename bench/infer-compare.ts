// Inference throughput of vgg16 (torchvision layout, 224x224, random weights) at batch 1 and 32:
// vgg-ts (native backend), onnxruntime-node on vgg-ts's ONNX export of the same model, and PyTorch
// (Debian's /usr/bin/python3, 2 threads) when available. Run: node dist/bench/infer-compare.js [--runs N]
import { spawnSync } from "node:child_process";
import { noGrad } from "../src/autograd.js";
import { backend, setBackend } from "../src/backend/index.js";
import { exportOnnx } from "../src/interop/onnx.js";
import { vggNamed } from "../src/models/vgg.js";
import { prepackForInference } from "../src/nn/layers.js";
import { Tensor } from "../src/tensor.js";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 2;
const batches = [1, 32];

function input(n: number): Tensor {
  const x = new Float32Array(n * 3 * 224 * 224);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37);
  return new Tensor(x, [n, 3, 224, 224]);
}

async function time(f: () => unknown | Promise<unknown>, n: number): Promise<number> {
  await f(); // warm-up (and the native backend's per-shape algorithm choice)
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await f();
  return (n * runs) / ((performance.now() - t0) / 1000);
}

const results: Record<string, Record<number, number | string>> = {};
try {
  setBackend("native");
} catch (e) {
  console.error(`native backend unavailable (${(e as Error).message}); timing the reference backend`);
}
const model = prepackForInference(vggNamed("vgg16"));
results[`vgg-ts (${backend().name})`] = {};
for (const n of batches) {
  const x = input(n);
  results[`vgg-ts (${backend().name})`][n] = await time(() => noGrad(() => model.forward(x)), n);
}

try {
  const ort = (await import("onnxruntime-node")).default;
  const session = await ort.InferenceSession.create(exportOnnx(model), { intraOpNumThreads: 2 });
  results["onnxruntime-node"] = {};
  for (const n of batches) {
    const x = input(n);
    const feeds = { input: new ort.Tensor("float32", x.data, x.shape) };
    results["onnxruntime-node"][n] = await time(() => session.run(feeds), n);
  }
} catch (e) {
  console.error(`onnxruntime-node unavailable: ${(e as Error).message}`);
}

const torchScript = `
import sys, time, torch, torch.nn as nn
torch.set_num_threads(2)
cfg = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]
layers, c = [], 3
for n, out in cfg:
    for _ in range(n):
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(inplace=True)]
        c = out
    layers.append(nn.MaxPool2d(2, 2))
model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(True),
                      nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000)).eval()
runs = int(sys.argv[1])
for n in (${batches.join(", ")}):
    x = torch.randn(n, 3, 224, 224)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(runs):
            model(x)
    print(n, n * runs / (time.perf_counter() - t0))
`;
const py = spawnSync("/usr/bin/python3", ["-c", torchScript, String(runs)], { encoding: "utf8" });
if (py.status === 0) {
  results["PyTorch (2 threads)"] = {};
  for (const line of py.stdout.trim().split("\n")) {
    const [n, rate] = line.split(" ").map(Number);
    results["PyTorch (2 threads)"][n] = rate;
  }
} else console.error(`PyTorch unavailable: ${py.stderr.trim().split("\n").at(-1) ?? py.error?.message}`);

console.log(`vgg16, 224x224, images/s (${runs} timed runs after one warm-up)`);
console.log(`${"".padEnd(24)}${batches.map((n) => `batch ${n}`.padStart(12)).join("")}`);
for (const [name, row] of Object.entries(results))
  console.log(
    `${name.padEnd(24)}${batches.map((n) => (typeof row[n] === "number" ? row[n].toFixed(2) : "-").padStart(12)).join("")}`,
  );
