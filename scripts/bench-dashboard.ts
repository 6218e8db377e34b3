// Measures what the live dashboard costs training: the same short run, alternately without and with
// `--dashboard` (plus a connected page, played by curl reading the event stream), several times over.
// Reports the median training throughput (metrics.jsonl's examples/s) and wall time of each.
// Usage: node dist/scripts/bench-dashboard.js [pairs=5]
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runTrain } from "../src/cli/train.js";
import type { FitOptions } from "../src/train/fit.js";
import { TrainDashboard } from "../src/web/train-dashboard.js";

const RUN: Partial<FitOptions> = {
  ...{ arch: "1x16,1x32", ratio: 1, resize: 28, classifierWidth: 64 },
  ...{ limitTrain: 12288, limitTest: 512, batchSize: 64, epochs: 2 },
};

async function once(withDashboard: boolean): Promise<{ ips: number; wall: number }> {
  const out = mkdtempSync(join(tmpdir(), "vgg-bench-dash-"));
  let dashboard: TrainDashboard | undefined;
  let reader: ReturnType<typeof spawn> | undefined;
  if (withDashboard) {
    dashboard = await TrainDashboard.start({ host: "127.0.0.1", port: 0 });
    reader = spawn("curl", ["-sN", "-o", "/dev/null", `${dashboard.url}events`], { stdio: "ignore" });
  }
  const start = performance.now();
  const code = await runTrain({ ...RUN, out }, dashboard ? [dashboard] : []);
  const wall = (performance.now() - start) / 1000;
  await dashboard?.close("finished");
  reader?.kill();
  if (code !== 0) throw new Error(`training exited with ${code}`);
  const epochs = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === "epoch");
  rmSync(out, { recursive: true, force: true });
  const examples = epochs.reduce((s, r) => s + r.examplesPerSec * r.seconds, 0);
  const seconds = epochs.reduce((s, r) => s + r.seconds, 0);
  return { ips: examples / seconds, wall };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const pairs = Number(process.argv[2] ?? 5);
const runs = { off: [] as { ips: number; wall: number }[], on: [] as { ips: number; wall: number }[] };
await once(false); // warm-up: page cache, first-use kernel timing
for (let i = 0; i < pairs; i++) {
  // Alternate the order so drift in machine load does not favour either side.
  for (const on of i % 2 === 0 ? [false, true] : [true, false]) runs[on ? "on" : "off"].push(await once(on));
}
const report = (name: string, rs: { ips: number; wall: number }[]) =>
  `${name}: median ${median(rs.map((r) => r.ips)).toFixed(1)} examples/s (runs ${rs.map((r) => r.ips.toFixed(0)).join(", ")}), median wall ${median(rs.map((r) => r.wall)).toFixed(2)} s`;
console.log(report("without dashboard", runs.off));
console.log(report("with dashboard + client", runs.on));
const slowdown = 1 - median(runs.on.map((r) => r.ips)) / median(runs.off.map((r) => r.ips));
const wallSlowdown = median(runs.on.map((r) => r.wall)) / median(runs.off.map((r) => r.wall)) - 1;
console.log(
  `throughput slowdown ${(slowdown * 100).toFixed(2)}%, wall-time slowdown ${(wallSlowdown * 100).toFixed(2)}% (target < 2%)`,
);

// The direct costs on the training thread, free of machine-load noise: one batch() call, and one epoch
// record (which includes the 16-picture grid's forward pass).
{
  const { loadFashionMnist } = await import("../src/data/fashion-mnist.js");
  const { parseArch, vgg } = await import("../src/models/vgg.js");
  const d = await TrainDashboard.start({ host: "127.0.0.1", port: 0 });
  const testSet = await loadFashionMnist({ split: "test", download: false });
  const model = vgg(parseArch("1x16,1x32"), { inputSize: 28, classifierWidth: 64 });
  d.trainBegin({
    ...{ options: {}, model, testSet, trainSize: 60000, testSize: 10000, stepsPerEpoch: 938 },
    ...{ startEpoch: 0, epochs: 10, history: [], device: "cpu" },
  });
  const n = 200_000;
  let t = performance.now();
  for (let i = 0; i < n; i++)
    d.batchEnd({
      epoch: 0,
      batch: i % 900,
      batches: 938,
      loss: 1,
      meanLoss: 1,
      accuracy: 0.5,
      examples: 64,
    } as never);
  const perBatchUs = ((performance.now() - t) * 1000) / n;
  t = performance.now();
  for (let i = 0; i < 20; i++)
    d.record({ type: "epoch", epoch: 1, trainLoss: 1, trainAcc: 0.5, testAcc: 0.5 });
  const perEpochMs = (performance.now() - t) / 20;
  await d.close("finished");
  const batchMs = (64 / median(runs.off.map((r) => r.ips))) * 1000;
  console.log(
    `direct cost: ${perBatchUs.toFixed(3)} us per batch (a batch of 64 takes ${batchMs.toFixed(1)} ms: ${((perBatchUs / 1000 / batchMs) * 100).toFixed(5)}%), ` +
      `${perEpochMs.toFixed(1)} ms per epoch for records and the picture grid`,
  );
}
