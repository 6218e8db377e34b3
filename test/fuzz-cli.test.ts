// Fuzzing the `vgg` command line: bin/vgg is spawned with a small working command (summary, train, eval,
// predict) whose flag values are replaced by hostile ones (negative, fractional, NaN, Infinity, huge, empty,
// text, paths that do not exist), flags dropped, unknown or value-less flags added, and garbage files given
// to predict. Every run must end with exit code 0, 1 or 2, by itself (no signal, no hang), and a failure
// must say why on stderr: no stack trace from an uncaught exception, no leaked JS internals such as
// "Cannot read properties of undefined". Cases come from fast-check with fixed seeds; two run at a time.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { PNG } from "pngjs";
import { writeSyntheticFashionMnist } from "./helpers.js";

const BIN = fileURLToPath(new URL("../../bin/vgg", import.meta.url));
// A hang guard per run (a hang is a failure), generous for a loaded machine; no assertion depends on speed.
const TIMEOUT_MS = 60_000;
// Each test: its runs, two at a time, each within TIMEOUT_MS.
const TEST_TIMEOUT_MS = 600_000;

// Values that parse but are extreme (they reach the code past the flag parsers) ...
const extreme = [
  "0",
  "-0",
  "1",
  "3e0",
  "1e6",
  "46341",
  "2147483648",
  "9007199254740993",
  "99x99",
  "1x0",
  "0x4",
  "64x1",
  "vgg19",
  "torchvision",
  "reference",
  "0,0,0",
  "9,10",
  "0.999",
  "/nonexistent/dir/file",
  "/dev/null",
  "/proc/self",
  "../../../../etc/passwd",
];
// ... and values that should not parse at all.
const invalid = [
  "-1",
  "0.5",
  "NaN",
  "Infinity",
  "-Infinity",
  "1e309",
  "",
  " ",
  "abc",
  "0x10",
  "1,2",
  "--",
  "-h",
  "%s%n",
  "0x",
  "1x",
  "x1",
  "1x4,,1x8",
  "vgg",
  "vgg20",
  "€",
  "a".repeat(300),
];
const hostileArb = fc.oneof(fc.constantFrom(...extreme), fc.constantFrom(...invalid));

// Flags of the command with the values of a small run that works.
type Base = [flag: string, value: string | null][];

interface CliCase {
  args: string[];
}

function caseArb(command: string, base: Base, extraFlags: string[], positional: () => string[]) {
  return fc
    .record({
      // Mostly one change, so that most runs get past the flag parsers with a single odd value.
      replace: fc.array(fc.tuple(fc.nat(), hostileArb), { maxLength: 2 }),
      drop: fc.option(fc.nat(), { freq: 6 }),
      add: fc.option(fc.tuple(fc.constantFrom(...extraFlags), hostileArb), { freq: 3 }),
      dangling: fc.option(fc.constantFrom(...extraFlags, "--unknown-flag", "-x", "--"), { freq: 8 }),
      positional: fc.nat(),
    })
    .filter(
      ({ replace, drop, add, dangling }) =>
        replace.length > 0 || drop !== null || add !== null || dangling !== null,
    )
    .map(({ replace, drop, add, dangling, positional: p }): CliCase => {
      const flags = base.map(([f, v]) => [f, v] as [string, string | null]);
      for (const [at, v] of replace) {
        const slot = flags[at % flags.length];
        // A boolean flag gets the value as a stray positional argument instead.
        if (slot[1] === null) flags.push([v, null]);
        else slot[1] = v;
      }
      if (drop !== null) flags.splice(drop % flags.length, 1);
      if (add) flags.push(add);
      const args = [command, ...positional().slice(0, (p % 3) + 1)];
      for (const [f, v] of flags) args.push(...(v === null ? [f] : [f, v]));
      if (dangling) args.push(dangling);
      // Each run writes to its own folder.
      return { args: args.map((a) => (a === "@OUT@" ? join(work, `out-${outCounter++}`) : a)) };
    });
}

interface Outcome {
  args: string[];
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  ms: number;
}

function runVgg(args: string[], cwd: string): Promise<Outcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...process.env, FASHION_MNIST_DIR: dataDir, VGG_KERNEL_CACHE: "off", NO_COLOR: "1" },
      stdio: ["ignore", "ignore", "pipe"],
      timeout: TIMEOUT_MS,
    });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (s: string) => {
      if (stderr.length < 100_000) stderr += s;
    });
    child.on("close", (status, signal) =>
      resolve({ args, status, signal, stderr, ms: Date.now() - started }),
    );
  });
}

async function runAll(cases: CliCase[], cwd: string, concurrency = 2): Promise<Outcome[]> {
  const out: Outcome[] = [];
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const c = cases[next++];
      out.push(await runVgg(c.args, cwd));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

// Signs of an error that escaped the CLI's handling: V8 stack frames, Node's uncaught-exception banner,
// and messages JavaScript itself produces for programming mistakes.
const leaked =
  /^\s+at .+(:\d+:\d+\)?|\(native\))$|^Node\.js v\d|Uncaught|\[ERR_|Cannot read propert|is not a function|is not defined|is not iterable|Maximum call stack|Invalid array length|Array buffer allocation failed|Invalid typed array length|undefined \(reading/m;

function check(o: Outcome): string | undefined {
  const cmd = `vgg ${o.args.map((a) => JSON.stringify(a)).join(" ")}`;
  if (o.signal !== null) return `${cmd}: killed by ${o.signal} after ${o.ms} ms\n${o.stderr.slice(-2000)}`;
  if (o.status === null || ![0, 1, 2].includes(o.status)) return `${cmd}: exit code ${o.status}`;
  if (o.status !== 0 && o.stderr.trim() === "") return `${cmd}: exit code ${o.status} with nothing on stderr`;
  if (leaked.test(o.stderr)) return `${cmd}: an internal error leaked to stderr:\n${o.stderr.slice(-2000)}`;
  return undefined;
}

const TRAIN_MODEL = ["--arch", "1x4,1x8", "--ratio", "1", "--resize", "16", "--classifier-width", "16"];
const MODEL: Base = [
  ["--arch", "1x4,1x8"],
  ["--ratio", "1"],
  ["--input-size", "16"],
  ["--classifier-width", "16"],
];
const MODEL_EXTRA = ["--in-channels", "--num-classes", "--layout", "--dropout", "--batch-norm"];

let work = "";
// Small synthetic Fashion-MNIST files: the fuzz needs the format, not the real pictures.
let dataDir = "";
let outCounter = 0;
let weights = "";
const images: string[] = [];

before(() => {
  work = mkdtempSync(join(tmpdir(), "vgg-fuzz-cli-"));
  dataDir = writeSyntheticFashionMnist(join(work, "data"), { train: 64, test: 32 }).dir;
  // A tiny trained model for eval and predict.
  const train = spawnSync(
    process.execPath,
    [
      BIN,
      "train",
      ...TRAIN_MODEL,
      "--limit-train",
      "32",
      "--limit-test",
      "16",
      "--epochs",
      "1",
      "--out",
      join(work, "model"),
    ],
    {
      encoding: "utf8",
      env: { ...process.env, FASHION_MNIST_DIR: dataDir, VGG_KERNEL_CACHE: "off" },
      timeout: TIMEOUT_MS,
    },
  );
  assert.equal(train.status, 0, `${train.error ?? ""}${train.stderr}`);
  weights = join(work, "model", "model.safetensors");
  const png = new PNG({ width: 12, height: 9 });
  png.data.fill(180);
  writeFileSync(join(work, "ok.png"), PNG.sync.write(png));
  writeFileSync(join(work, "empty.png"), "");
  writeFileSync(join(work, "text.jpg"), "not an image at all");
  writeFileSync(join(work, "cut.png"), PNG.sync.write(png).subarray(0, 40));
  images.push(join(work, "ok.png"), join(work, "empty.png"), join(work, "text.jpg"), join(work, "cut.png"));
  images.push(join(work, "missing.png"), work, weights);
});

after(() => rmSync(work, { recursive: true, force: true }));

async function fuzzCommand(
  t: { diagnostic: (s: string) => void },
  command: string,
  base: () => Base,
  extra: string[],
  runs: number,
  seed: number,
  positional: () => string[] = () => [],
): Promise<void> {
  const cases = fc.sample(caseArb(command, base(), extra, positional), { seed, numRuns: runs });
  const started = Date.now();
  const outcomes = await runAll(cases, work);
  const failures = outcomes.map(check).filter((f) => f !== undefined);
  const byStatus = new Map<number | null, number>();
  for (const o of outcomes) byStatus.set(o.status, (byStatus.get(o.status) ?? 0) + 1);
  t.diagnostic(
    `vgg ${command}: ${outcomes.length} runs in ${((Date.now() - started) / 1000).toFixed(1)} s, exit codes ` +
      [...byStatus].map(([s, n]) => `${s}: ${n}`).join(", "),
  );
  if (process.env.VGG_FUZZ_CLI_LOG)
    for (const o of outcomes) t.diagnostic(`${o.status} ${o.args.join(" ")} => ${o.stderr.split("\n")[0]}`);
  assert.deepEqual(failures, []);
}

test("vgg summary with hostile flag values exits 0/1/2 with a message, never a crash", {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  await fuzzCommand(
    t,
    "summary",
    () => [...MODEL, ["--num-classes", "10"], ["--json", null]],
    [...MODEL_EXTRA, "--dropout"],
    50,
    9001,
  );
});

test("vgg train with hostile flag values exits 0/1/2 with a message, never a crash", {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  await fuzzCommand(
    t,
    "train",
    () => [
      ["--arch", "1x4,1x8"],
      ["--ratio", "1"],
      ["--resize", "16"],
      ["--classifier-width", "16"],
      ["--limit-train", "32"],
      ["--limit-test", "16"],
      ["--epochs", "1"],
      ["--batch-size", "16"],
      ["--lr", "0.05"],
      ["--data-dir", dataDir],
      ["--no-download", null],
      ["--out", "@OUT@"],
      ["--threads", "1"],
    ],
    [
      ...MODEL_EXTRA,
      "--momentum",
      "--weight-decay",
      "--nesterov",
      "--schedule",
      "--warmup-epochs",
      "--step-size",
      "--gamma",
      "--init",
      "--seed",
      "--init-weights",
      "--augment",
      "--classes",
      "--backend",
      "--target-acc",
      "--resume",
    ],
    30,
    9002,
  );
});

test("vgg eval with hostile flag values exits 0/1/2 with a message, never a crash", {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  await fuzzCommand(
    t,
    "eval",
    () => [
      ...MODEL,
      ["--weights", weights],
      ["--data-dir", dataDir],
      ["--no-download", null],
      ["--limit", "16"],
      ["--batch-size", "8"],
      ["--threads", "1"],
    ],
    [...MODEL_EXTRA, "--resize", "--classes", "--backend", "--json"],
    30,
    9003,
  );
});

test("vgg predict with hostile flag values and garbage images exits 0/1/2 with a message, never a crash", {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  let k = 0;
  await fuzzCommand(
    t,
    "predict",
    () => [...MODEL, ["--weights", weights], ["--top", "3"]],
    [...MODEL_EXTRA, "--invert", "--json"],
    30,
    9004,
    // Rotate through good, empty, corrupt, missing and directory "images".
    () => [0, 1, 2].map(() => images[k++ % images.length]),
  );
});

// Sizes that parse but would make the model enormous are refused by the model builder before it allocates.
test("sizes that parse but cannot fit in memory are refused with a clear message before allocating", {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const cases = [
    ["--input-size", "46341"],
    ["--classifier-width", "1000000"],
    ["--input-size", "20000"],
  ].map((extra) => ({
    args: [
      "summary",
      "--arch",
      "1x4,1x8",
      "--ratio",
      "1",
      "--input-size",
      "16",
      "--classifier-width",
      "16",
      ...extra,
    ],
  }));
  const outcomes = await Promise.all(
    cases.map(
      (c) =>
        new Promise<Outcome>((resolve) => {
          const started = Date.now();
          const child = spawn(process.execPath, [BIN, ...c.args], {
            stdio: ["ignore", "ignore", "pipe"],
            timeout: TIMEOUT_MS,
          });
          let stderr = "";
          child.stderr.on("data", (s: Buffer) => {
            stderr += s.toString();
          });
          child.on("close", (status, signal) =>
            resolve({ args: c.args, status, signal, stderr, ms: Date.now() - started }),
          );
        }),
    ),
  );
  assert.deepEqual(
    outcomes.map(check).filter((f) => f !== undefined),
    [],
  );
  for (const o of outcomes) {
    assert.equal(o.status, 1, o.stderr);
    assert.match(
      o.stderr,
      /Expected a model whose parameters fit in memory .* hint: use a smaller inputSize/,
    );
  }
});
