// Data-parallel scaling on this machine: the d2l model's training step (random data, SGD) on 1 process of
// 1 and 2 threads and on `mpirun -np 2` processes of 1 thread, with and without overlapping the gradient
// all-reduce with the backward pass; the all-reduce time per step (exposed: what the step waited for
// after its own backward; on the communication thread: the whole collective), the gradient's all-reduce
// alone, and the efficiencies.
// Then the scaling model (src/distributed/scaling-model.ts) is checked against the measured 2-process
// point, and `--model` prints its predictions for 4-64 nodes at 10 and 100 Gbit/s.
// Usage: npm run bench:mpi [-- --steps 4 --sizes 224,32 --batch 128]
//        npm run bench:mpi -- --model [--ips224 82.2 --ips32 1134.7 --latency-us 20]
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { setNumThreads } from "../src/backend/index.js";
import type { Batch } from "../src/data/loader.js";
import { formatBandwidth, measureAllreduce } from "../src/distributed/bandwidth.js";
import { DataParallel } from "../src/distributed/data-parallel.js";
import { type Link, predictStep, profileOf, ringAllreduceSeconds } from "../src/distributed/scaling-model.js";
import { summarize } from "../src/models/summary.js";
import { vgg, vggArchs, vggNamed } from "../src/models/vgg.js";
import { crossEntropy } from "../src/ops/loss.js";
import { SGD } from "../src/optim/sgd.js";
import { Generator } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const WARMUP = 2;

interface WorkerResult {
  ranks: number;
  threads: number;
  overlap: boolean;
  stepSeconds: number;
  exposedCommSeconds: number;
  commThreadSeconds: number;
  gradientBytes: number;
  /** The gradient's all-reduce alone, with no computation around it (distributed runs). */
  allreduceSeconds: number;
  busBandwidth: number;
  /** CPU seconds (user + system, all threads) per step of this process, rank 0's under mpirun. */
  cpuSecondsPerStep: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One configuration, in this process (one rank of it under mpirun). Prints JSON on rank 0. */
async function worker(): Promise<void> {
  const size = Number(arg("--resize", "224"));
  const batchSize = Number(arg("--batch", "128"));
  const steps = Number(arg("--steps", "4"));
  const threads = Number(arg("--threads", "1"));
  const distributed = process.argv.includes("--distributed");
  const overlap = !process.argv.includes("--no-overlap");
  setNumThreads(threads);
  const dp = distributed ? DataParallel.start({ overlap }) : undefined;
  const model = vgg(vggArchs.vgg11, { widthRatio: 4, inputSize: size });
  const params = model.parameters();
  const gradientBytes = params.reduce((s, p) => s + p.size * 4, 0);
  const optimizer = new SGD(params, { lr: 0.01 });
  const g = new Generator(1);
  const x = Float32Array.from({ length: batchSize * size * size }, () => g.random());
  const y = Int32Array.from({ length: batchSize }, () => g.int(10));
  const batch: Batch = {
    x,
    shape: [batchSize, 1, size, size],
    y,
    indices: new Int32Array(batchSize),
    epoch: 0,
    index: 0,
  };
  let allreduceSeconds = 0;
  let busBandwidth = 0;
  if (dp) {
    await dp.agree(null);
    const m = await measureAllreduce(dp, gradientBytes, 3);
    allreduceSeconds = m.seconds;
    busBandwidth = m.busBandwidth;
  }
  const times: number[] = [];
  let exposed = 0;
  let thread = 0;
  let cpu0 = process.cpuUsage();
  for (let s = 0; s < WARMUP + steps; s++) {
    if (s === WARMUP) cpu0 = process.cpuUsage();
    if (s === WARMUP && dp) {
      dp.commSeconds = 0;
      dp.commThreadSeconds = 0;
      dp.commCalls = 0;
    }
    await dp?.barrier();
    const t0 = performance.now();
    if (dp) {
      await dp.trainStep(model, optimizer, batch, false, () => 0);
    } else {
      const loss = crossEntropy(model.forward(new Tensor(x, batch.shape)), y);
      optimizer.zeroGrad();
      loss.backward();
    }
    optimizer.step();
    if (s >= WARMUP) times.push((performance.now() - t0) / 1000);
  }
  const cpu = process.cpuUsage(cpu0);
  const cpuSecondsPerStep = (cpu.user + cpu.system) / 1e6 / steps;
  if (dp) {
    exposed = dp.commSeconds / dp.commCalls;
    thread = dp.commThreadSeconds / dp.commCalls;
    // The slowest rank's median step is the job's.
    const all = await dp.allgather(String(median(times)));
    times.splice(0, times.length, Math.max(...all.map(Number)));
    dp.finalize();
    if (!dp.isRoot) return;
  }
  const result: WorkerResult = {
    ranks: dp?.size ?? 1,
    threads,
    overlap,
    stepSeconds: median(times),
    exposedCommSeconds: exposed,
    commThreadSeconds: thread,
    gradientBytes,
    allreduceSeconds,
    busBandwidth,
    cpuSecondsPerStep,
  };
  console.log(JSON.stringify(result));
}

function run(cmd: string, args: string[]): WorkerResult {
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    timeout: 1_800_000,
    env: { ...process.env, VGG_QUIET: "1" },
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  const line = r.stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .at(-1);
  if (!line) throw new Error(`no result from ${cmd} ${args.join(" ")}:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(line) as WorkerResult;
}

function orchestrate(): void {
  const steps = arg("--steps", "4");
  const batch = arg("--batch", "128");
  const sizes = arg("--sizes", "224,32").split(",");
  const script = new URL(import.meta.url).pathname;
  const common = (size: string) => ["--worker", "--resize", size, "--batch", batch, "--steps", steps];
  console.log(
    `d2l VGG-11/4 training step, batch ${batch} (global), ${cpus().length} cores of ${cpus()[0]?.model ?? "a CPU"}; median of ${steps} steps after ${WARMUP} warm-up steps`,
  );
  const summary: Record<string, unknown>[] = [];
  for (const size of sizes) {
    const local = (threads: number) =>
      run(process.execPath, [script, ...common(size), "--threads", String(threads)]);
    const mpi = (np: number, overlap: boolean) =>
      run("mpirun", [
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        String(np),
        process.execPath,
        script,
        ...common(size),
        "--threads",
        "1",
        "--distributed",
        ...(overlap ? [] : ["--no-overlap"]),
      ]);
    const oneByOne = local(1);
    const oneByTwo = local(2);
    const twoByOne = mpi(2, true);
    const twoByOneSerial = mpi(2, false);
    const ips = (r: WorkerResult) => Number(batch) / r.stepSeconds;
    console.log(
      `\n${size}x${size}, batch ${batch}: gradient ${(twoByOne.gradientBytes / 1e6).toFixed(1)} MB per step`,
    );
    console.log(
      `  all-reduce of the gradient alone (2 ranks): ${(twoByOne.allreduceSeconds * 1e3).toFixed(1)} ms, bus bandwidth ${formatBandwidth(twoByOne.busBandwidth)}`,
    );
    console.log(
      "  processes x threads   step ms   images/s   CPU ms/step (a process)   all-reduce ms/step (exposed / on comm thread)",
    );
    const row = (label: string, r: WorkerResult) =>
      console.log(
        `  ${label.padEnd(20)} ${(r.stepSeconds * 1e3).toFixed(0).padStart(8)} ${ips(r).toFixed(1).padStart(10)} ${(r.cpuSecondsPerStep * 1e3).toFixed(0).padStart(14)}             ${r.ranks > 1 ? `${(r.exposedCommSeconds * 1e3).toFixed(1)} / ${(r.commThreadSeconds * 1e3).toFixed(1)}` : "-"}`,
      );
    row("1 x 1", oneByOne);
    row("1 x 2", oneByTwo);
    row("2 x 1 (overlap)", twoByOne);
    row("2 x 1 (no overlap)", twoByOneSerial);
    const vsThreads = ips(twoByOne) / ips(oneByTwo);
    const scaling = ips(twoByOne) / (2 * ips(oneByOne));
    console.log(
      `  2 x 1 against 1 x 2: ${(vsThreads * 100).toFixed(1)}% (goal at 224: >= 90%); scaling efficiency against 1 x 1: ${(scaling * 100).toFixed(1)}%; without overlap ${((ips(twoByOneSerial) / ips(oneByTwo)) * 100).toFixed(1)}%`,
    );
    // The model at N = 2 with this machine's numbers: 1-thread compute per image, and the link the
    // gradient's all-reduce alone achieved (shared memory here).
    const s = Number(size);
    const profile = profileOf(`d2l-${s}`, d2l(s), [1, 1, s, s], oneByOne.stepSeconds / Number(batch));
    const link: Link = { bytesPerSecond: twoByOne.busBandwidth, latencySeconds: 20e-6 };
    for (const overlap of [true, false]) {
      const p = predictStep(profile, 2, Number(batch) / 2, link, overlap);
      const measured = overlap ? twoByOne : twoByOneSerial;
      console.log(
        `  model, ${overlap ? "overlap" : "no overlap"}: step ${((p.computeSeconds + p.exposedSeconds) * 1e3).toFixed(0)} ms (compute ${(p.computeSeconds * 1e3).toFixed(0)}, all-reduce ${(p.allreduceSeconds * 1e3).toFixed(0)}, exposed ${(p.exposedSeconds * 1e3).toFixed(0)}); measured ${(measured.stepSeconds * 1e3).toFixed(0)} ms`,
      );
    }
    summary.push({ size: Number(size), batch: Number(batch), oneByOne, oneByTwo, twoByOne, twoByOneSerial });
  }
  console.log(`\n${JSON.stringify(summary)}`);
}

function d2l(size: number) {
  return vgg(vggArchs.vgg11, { widthRatio: 4, inputSize: size });
}

/** The model's predictions for 4-64 nodes, each node one process like this machine's 1 x 2 threads. */
function printModel(): void {
  const ips224 = Number(arg("--ips224", "82.2"));
  const ips32 = Number(arg("--ips32", "1134.7"));
  const latency = Number(arg("--latency-us", "20")) * 1e-6;
  const d2l224 = profileOf("d2l VGG-11/4 at 224", d2l(224), [1, 1, 224, 224], 1 / ips224);
  const d2l32 = profileOf("d2l VGG-11/4 at 32", d2l(32), [1, 1, 32, 32], 1 / ips32);
  // VGG-16 (ImageNet, 3 x 224 x 224, 1000 classes): its MACs at the d2l model's measured MACs per second.
  const v16 = vggNamed("vgg16");
  const macs = (m: Parameters<typeof profileOf>[1], shape: number[]) => summarize(m, shape).totalMacs;
  const vgg16 = profileOf(
    "VGG-16 at 224 (ImageNet)",
    v16,
    [1, 3, 224, 224],
    (1 / ips224) * (macs(v16, [1, 3, 224, 224]) / macs(d2l(224), [1, 1, 224, 224])),
  );
  const links: [string, Link][] = [
    ["10", { bytesPerSecond: 10e9 / 8, latencySeconds: latency }],
    ["100", { bytesPerSecond: 100e9 / 8, latencySeconds: latency }],
  ];
  console.log(
    `Predicted efficiency (step time of one node / step time on N): ring all-reduce 2(N-1)/N G/bandwidth + 2(N-1) x ${(latency * 1e6).toFixed(0)} us, overlapped with the conv trunk's backward`,
  );
  for (const p of [d2l224, d2l32, vgg16]) {
    console.log(
      `\n${p.name}: gradient ${(p.gradientBytes / 1e6).toFixed(1)} MB, last bucket ${(p.lastBucketBytes / 1e6).toFixed(1)} MB, overlap window ${(p.overlapShare * 100).toFixed(0)}% of the step, ${(1 / p.secondsPerImage).toFixed(1)} images/s per node`,
    );
    console.log(
      "  nodes | global batch 128: 10 Gbit/s  100 Gbit/s  (100, no overlap) | 128 per node: 10 Gbit/s  100 Gbit/s",
    );
    for (const n of [4, 8, 16, 32, 64]) {
      const strong = links.map(([, l]) => predictStep(p, n, 128 / n, l).efficiency);
      const serial = predictStep(p, n, 128 / n, links[1][1], false).efficiency;
      const weak = links.map(([, l]) => predictStep(p, n, 128, l).efficiency);
      const pct = (x: number) => `${(x * 100).toFixed(1)}%`.padStart(10);
      console.log(
        `  ${String(n).padStart(5)} |                  ${pct(strong[0])}  ${pct(strong[1])}  ${pct(serial)}          |               ${pct(weak[0])}  ${pct(weak[1])}`,
      );
    }
    console.log(
      `  (all-reduce of the gradient on 16 nodes: ${(ringAllreduceSeconds(p.gradientBytes, 16, links[0][1]) * 1e3).toFixed(0)} ms at 10 Gbit/s, ${(ringAllreduceSeconds(p.gradientBytes, 16, links[1][1]) * 1e3).toFixed(0)} ms at 100 Gbit/s)`,
    );
  }
}

if (process.argv.includes("--worker")) await worker();
else if (process.argv.includes("--model")) printModel();
else orchestrate();
