// `npm run bench:serve`: `vgg serve --api` under load from autocannon, side by side with a minimal Node
// server around onnxruntime-node on the same model's ONNX export (bench/serve-ort.ts, batching the same
// way). The d2l model (VGG-11/4, 1 channel, freshly initialised) at 32x32 and 224x224; 1, 8, 64 and 256
// concurrent clients POSTing one PNG each to /v1/classify, for a fixed time per run; the servers take
// turns at each load so that a drift in the machine's speed touches all. The goal's yardstick, the offline
// `vgg bench --mode infer` throughput at the same batch size, is timed afresh before and after each
// round's vgg runs (their mean), and each vgg row gives its share of it twice: of the rate of its median
// step (what `vgg bench` prints first) and of its rate over the whole timed run, slow steps included, as
// the server's req/s is. Then an overload run (a queue limit below the client count: only 503s may be
// refused). Client and servers share the machine.
// Run: npm run bench:serve -- [--seconds 10] [--clients 1,8,64,256] [--sizes 32,224] [--no-ort]
//      [--serve-args "--threads 1"] [--serve-args "--workers 1;--workers 2"] [--rounds 1] [--no-offline]
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";
import { PNG } from "pngjs";
import { exportOnnx } from "../src/interop/onnx.js";
import { vgg, vggArchs } from "../src/models/vgg.js";
import { manualSeed } from "../src/rng.js";
import { saveModel } from "../src/train/checkpoint.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const seconds = Number(arg("--seconds", "10"));
const clientCounts = arg("--clients", "1,8,64,256").split(",").map(Number);
const sizes = arg("--sizes", "32,224").split(",").map(Number);
const withOrt = !process.argv.includes("--no-ort");
const withOffline = !process.argv.includes("--no-offline");
/** Each load is run this many times, the servers taking turns each time. */
const rounds = Number(arg("--rounds", "1"));
/**
 * Extra flags for vgg serve, e.g. --serve-args "--threads 1 --max-delay-ms 2"; variants separated by ";"
 * ("--workers 1;--workers 2") each start a server of their own, and all take turns at each load. A word
 * NAME=VALUE sets an environment variable for that server ("VGG_NUM_THREADS=2").
 */
const serveVariants = arg("--serve-args", "")
  .split(";")
  .map((v) => v.split(" ").filter(Boolean));
const isEnv = (w: string) => /^[A-Z_][A-Z0-9_]*=/.test(w);
const MAX_BATCH = 32;

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
}

function start(name: string, args: string[], env: Record<string, string> = {}): Promise<Server> {
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  let out = "";
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", (d) => {
      out += d;
      const m = /(http:\/\/127\.0\.0\.1:\d+)\//.exec(out);
      if (m) resolve({ name, url: m[1], child });
    });
    child.once("exit", (code) => reject(new Error(`${name} exited (${code}): ${out}`)));
  });
}

function stop(s: Server): Promise<void> {
  return new Promise((ok) => {
    if (s.child.exitCode !== null) return ok();
    s.child.once("exit", () => ok());
    s.child.kill("SIGTERM");
  });
}

const rssMb = (s: Server) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${s.child.pid}/status`, "utf8"))?.[1] ?? Number.NaN) /
  1024;

async function batchTotals(s: Server): Promise<{ images: number; batches: number }> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return { images: value("vgg_serve_batch_size_sum"), batches: value("vgg_serve_batch_size_count") };
}

function pngOf(size: number): Buffer {
  const png = new PNG({ width: size, height: size });
  for (let i = 0; i < png.data.length; i++) png.data[i] = (i & 3) === 3 ? 255 : (i * 7919) % 251;
  return PNG.sync.write(png);
}

interface Run {
  rps: number;
  p50: number;
  p99: number;
  batch: number;
  errors: number;
  /** Connection errors (timeouts included) and timeouts alone: no answer at all. */
  connErrors: number;
  timeouts: number;
  codes: Record<string, number>;
  rssBefore: number;
  rssAfter: number;
  /** CPU time per answered request, in microseconds: the server's main (HTTP) thread, its other threads
   * (the model, kernels, GC) and this process (autocannon, the load generator). */
  cpuMain: number;
  cpuOther: number;
  cpuLoad: number;
}

/** The middle value (the mean of the two middle ones for an even count). */
function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const TICK_US = 1e6 / Number(execFileSync("getconf", ["CLK_TCK"]).toString());

/** CPU time (utime + stime) in microseconds of a process (all its threads, past ones included) and of its main thread. */
function cpuOf(s: Server): { all: number; main: number } {
  const ticks = (path: string) => {
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    const f = readFileSync(path, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) * TICK_US;
  };
  return {
    all: ticks(`/proc/${s.child.pid}/stat`),
    main: ticks(`/proc/${s.child.pid}/task/${s.child.pid}/stat`),
  };
}

/** Waits until the server has answered everything (autocannon leaves requests behind when it stops). */
async function settle(s: Server): Promise<void> {
  for (;;) {
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
    if (
      gauge("vgg_serve_requests_in_flight") <= 1 &&
      gauge("vgg_serve_queue_images") === 0 &&
      gauge("vgg_serve_batch_running") === 0
    )
      return;
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

async function load(s: Server, body: Buffer, connections: number, duration: number): Promise<Run> {
  await settle(s);
  const rssBefore = rssMb(s);
  const before = await batchTotals(s);
  const cpuBefore = cpuOf(s);
  const loadBefore = process.cpuUsage();
  const r = await autocannon({
    url: `${s.url}/v1/classify`,
    method: "POST",
    headers: { "content-type": "image/png" },
    body,
    connections,
    duration,
    timeout: 60,
  });
  const load = process.cpuUsage(loadBefore);
  const cpuAfter = cpuOf(s);
  const after = await batchTotals(s);
  const answered = Math.max(1, r["2xx"]);
  const codes: Record<string, number> = {};
  for (const [code, v] of Object.entries(r.statusCodeStats ?? {})) codes[code] = v.count ?? 0;
  return {
    rps: r["2xx"] / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    batch: (after.images - before.images) / Math.max(1, after.batches - before.batches),
    errors: r.errors + r.non2xx,
    connErrors: r.errors,
    timeouts: r.timeouts,
    codes,
    rssBefore,
    rssAfter: rssMb(s),
    cpuMain: (cpuAfter.main - cpuBefore.main) / answered,
    cpuOther: (cpuAfter.all - cpuAfter.main - (cpuBefore.all - cpuBefore.main)) / answered,
    cpuLoad: (load.user + load.system) / answered,
  };
}

const row = (name: string, clients: number, r: Run) =>
  `${name.padEnd(18)} ${String(clients).padStart(7)} ${r.rps.toFixed(1).padStart(9)} ${r.p50.toFixed(1).padStart(8)} ${r.p99.toFixed(1).padStart(8)} ${(r.p99 / Math.max(r.p50, 0.001)).toFixed(1).padStart(7)} ${r.batch.toFixed(1).padStart(6)} ${String(r.errors).padStart(6)} ${r.rssBefore.toFixed(0).padStart(6)} -> ${r.rssAfter.toFixed(0).padStart(4)} ${r.cpuMain.toFixed(0).padStart(5)} ${r.cpuOther.toFixed(0).padStart(5)} ${r.cpuLoad.toFixed(0).padStart(5)}`;

/**
 * The offline rates: images_per_s, batch / the median step (what `vgg bench` prints first), and
 * mean_images_per_s, images over the whole timed run, slow steps included, as a server's req/s is.
 */
function offline(size: number): { median: number; sustained: number } {
  const out = execFileSync(process.execPath, [
    "bin/vgg",
    "bench",
    "--mode",
    "infer",
    "--resize",
    String(size),
    "--batch-size",
    String(MAX_BATCH),
    "--iters",
    size > 64 ? "3" : "150",
    "--warmup",
    "2",
    "--json",
  ]).toString();
  const r = JSON.parse(out) as { images_per_s: number; mean_images_per_s: number };
  return { median: r.images_per_s, sustained: r.mean_images_per_s };
}

const dir = join(tmpdir(), `vgg-bench-serve-${process.pid}`);
execFileSync("mkdir", ["-p", dir]);
const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown CPU";
console.log(
  `vgg serve vs onnxruntime-node, d2l VGG-11/4, ${seconds} s per run, max batch ${MAX_BATCH}, max delay 5 ms; ${cpu}; client and servers on the same machine`,
);
try {
  for (const size of sizes) {
    manualSeed(0);
    const model = vgg(vggArchs.vgg11, { widthRatio: 4, inChannels: 1, inputSize: size, numClasses: 10 });
    const weights = join(dir, `d2l-${size}.safetensors`);
    saveModel(weights, model);
    const onnx = join(dir, `d2l-${size}.onnx`);
    writeFileSync(onnx, exportOnnx(model));
    const config = join(dir, `d2l-${size}.json`);
    writeFileSync(config, JSON.stringify(model.config));
    const body = pngOf(size);
    const servers: Server[] = [];
    for (const args of serveVariants)
      servers.push(
        await start(
          serveVariants.length > 1 && args.length > 0 ? `vgg ${args.join(" ")}` : "vgg serve",
          [
            "bin/vgg",
            "serve",
            "--api",
            "--port",
            "0",
            "--weights",
            weights,
            ...args.filter((w) => !isEnv(w)),
          ],
          Object.fromEntries(
            args.filter(isEnv).map((w) => [w.slice(0, w.indexOf("=")), w.slice(w.indexOf("=") + 1)]),
          ),
        ),
      );
    if (withOrt)
      servers.push(
        await start("onnxruntime", ["dist/bench/serve-ort.js", "--onnx", onnx, "--config", config]),
      );
    // Warm-up: the JIT, and the kernels' per-shape choices (timed on a shape's first batch), at the batch
    // sizes the runs will see: 1 client gives batches of 1, 8 clients of a few, 64 of up to 32.
    for (const s of servers) for (const clients of [1, 8, 64]) await load(s, body, clients, 2);
    console.log(`\n${size}x${size}, one ${body.length}-byte PNG per request`);
    console.log(
      `${"server".padEnd(18)} clients     req/s   p50 ms   p99 ms p99/p50  batch errors  RSS MB        us CPU/req: http model  load   vs offline (img/s)`,
    );
    // The offline yardstick is timed afresh around each round, so that each round's ratio compares runs a
    // few seconds apart: on a shared machine the speed drifts more than that between the start and the end.
    const ratios = new Map<string, { median: number[]; sustained: number[] }>();
    for (const clients of clientCounts)
      for (let round = 0; round < rounds; round++) {
        // The vgg rows run between two offline timings and take their mean as the yardstick, so that a
        // drift in the machine's speed during the round moves both sides; onnxruntime runs after them.
        const ours = servers.filter((s) => s.name !== "onnxruntime");
        const before = withOffline ? offline(size) : { median: Number.NaN, sustained: Number.NaN };
        const runs = new Map<Server, Run>();
        for (const s of ours) runs.set(s, await load(s, body, clients, seconds));
        const after = withOffline ? offline(size) : before;
        const off = {
          median: (before.median + after.median) / 2,
          sustained: (before.sustained + after.sustained) / 2,
        };
        for (const s of servers.filter((s) => s.name === "onnxruntime"))
          runs.set(s, await load(s, body, clients, seconds));
        for (const [s, r] of runs) {
          const vs = s.name === "onnxruntime" ? Number.NaN : r.rps / off.median;
          const vsSustained = r.rps / off.sustained;
          if (clients === 64 && Number.isFinite(vs)) {
            const v = ratios.get(s.name) ?? { median: [], sustained: [] };
            v.median.push(vs);
            v.sustained.push(vsSustained);
            ratios.set(s.name, v);
          }
          console.log(
            `${row(s.name, clients, r)}${Number.isFinite(vs) ? `   ${(100 * vs).toFixed(1).padStart(5)}% of ${off.median.toFixed(0)} (${(100 * vsSustained).toFixed(1)}% of ${off.sustained.toFixed(0)})` : ""}`,
          );
        }
      }
    for (const s of servers) await stop(s);
    const pct = (v: number[]) =>
      `${v.map((x) => `${(100 * x).toFixed(1)}%`).join(", ")} (median ${(100 * median(v)).toFixed(1)}%)`;
    for (const [name, v] of ratios)
      console.log(
        `${name} at 64 clients vs offline \`vgg bench --mode infer --resize ${size} --batch-size ${MAX_BATCH}\` timed before and after each round: ${pct(v.median)} of its median-step rate; ${pct(v.sustained)} of its whole-run rate`,
      );
    if (size === 32) {
      // Overload: 256 clients against a queue of 32 images; only 503s may be refused.
      const s = await start("vgg serve", [
        "bin/vgg",
        "serve",
        "--api",
        "--port",
        "0",
        "--weights",
        weights,
        "--max-queue",
        "32",
      ]);
      const r = await load(s, body, 256, seconds);
      console.log(
        `overload, 256 clients, --max-queue 32: ${r.rps.toFixed(1)} answers/s, status codes ${JSON.stringify(r.codes)}, connection errors ${r.connErrors} (timeouts ${r.timeouts}), p99 ${r.p99.toFixed(1)} ms, RSS ${r.rssBefore.toFixed(0)} -> ${r.rssAfter.toFixed(0)} MB`,
      );
      await stop(s);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
