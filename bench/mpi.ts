// Data-parallel scaling on this machine: the d2l model's training step (random data, SGD) on 1 process of
// 1 and 2 threads and on `mpirun -np 2` processes of 1 thread, with and without overlapping the gradient
// all-reduce with the backward pass; the all-reduce time per step (exposed: what the step waited for
// after its own backward; on the communication thread: the whole collective), the gradient's all-reduce
// alone, and the efficiencies.
// Usage: npm run bench:mpi [-- --steps 4 --sizes 224,32 --batch 128]
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { setNumThreads } from "../src/backend/index.js";
import type { Batch } from "../src/data/loader.js";
import { formatBandwidth, measureAllreduce } from "../src/distributed/bandwidth.js";
import { DataParallel } from "../src/distributed/data-parallel.js";
import { vgg, vggArchs } from "../src/models/vgg.js";
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
  for (let s = 0; s < WARMUP + steps; s++) {
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
    console.log("  processes x threads   step ms   images/s   all-reduce ms/step (exposed / on comm thread)");
    const row = (label: string, r: WorkerResult) =>
      console.log(
        `  ${label.padEnd(20)} ${(r.stepSeconds * 1e3).toFixed(0).padStart(8)} ${ips(r).toFixed(1).padStart(10)}   ${r.ranks > 1 ? `${(r.exposedCommSeconds * 1e3).toFixed(1)} / ${(r.commThreadSeconds * 1e3).toFixed(1)}` : "-"}`,
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
    summary.push({ size: Number(size), batch: Number(batch), oneByOne, oneByTwo, twoByOne, twoByOneSerial });
  }
  console.log(`\n${JSON.stringify(summary)}`);
}

if (process.argv.includes("--worker")) await worker();
else orchestrate();
