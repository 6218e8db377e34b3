// The training page in headless Chromium (Debian's, driven by playwright-core), served by `vgg serve`
// without weights: with --enable-unsafe-webgpu headless Chromium gives WebGPU on its own SwiftShader, and
// the page trains a few steps of the d2l layout there whose losses equal `fit` on Node's WebGPU (Dawn on
// SwiftShader) for the same seed and batches, then classifies a drawing as Node does with fit's weights.
// Without navigator.gpu, or with one that gives no adapter, the page trains on the reference backend,
// says so, and matches `fit` on the reference backend. The data: small synthetic Fashion-MNIST files.
// The tests wait on the page's own state (no sleeps); each has a timeout only as a hang guard.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { buildWeb } from "../scripts/build-web.js";
import type { BackendName } from "../src/backend/index.js";
import { FASHION_MNIST_CLASSES } from "../src/data/fashion-mnist.js";
import { rgbaToImage } from "../src/io/image.js";
import { fit } from "../src/train/fit.js";
import { classifyAsync, type Ranked } from "../src/web/client/classify.js";
import { type SyntheticData, writeSyntheticFashionMnist } from "./helpers.js";
import { close, openGpu } from "./webgpu-setup.js";

const CHROMIUM = process.env.VGG_CHROMIUM ?? "/usr/bin/chromium";
const noBrowser =
  existsSync(CHROMIUM) || process.env.CI ? false : `needs ${CHROMIUM} (apt-get install -y chromium)`;
const gpu = noBrowser ? { ctx: null, skip: false as const } : await openGpu();
gpu.ctx?.destroy();
const TIMEOUT_MS = 600_000;

/**
 * The page's run, small enough for SwiftShader: the d2l model's layout and recipe (VGG-11 blocks,
 * Xavier init, SGD lr 0.05) with channels / 16 and a 64-wide classifier, 2 steps of batch 8, 8 test images.
 */
const RUN = {
  epochs: 1,
  batchSize: 8,
  lr: 0.05,
  seed: 3,
  limitTrain: 16,
  limitTest: 8,
  ratio: 16,
  classifierWidth: 64,
};
const query = new URLSearchParams({
  ...Object.fromEntries(Object.entries(RUN).map(([k, v]) => [k, String(v)])),
  autostart: "1",
}).toString();

let dir: string;
let data: SyntheticData;
let server: ChildProcess;
let url: string;
let browser: Browser;

before(
  async () => {
    if (noBrowser) return;
    await buildWeb();
    dir = mkdtempSync(join(tmpdir(), "vgg-web-train-"));
    data = writeSyntheticFashionMnist(join(dir, "data"), { train: 64, test: 32 });
    server = spawn(process.execPath, ["bin/vgg", "serve", "--data-dir", data.dir, "--port", "0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    url = await new Promise<string>((resolve, reject) => {
      server.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /http:\/\/[^\s]+/.exec(out);
        if (m) resolve(m[0]);
      });
      server.stderr!.on("data", (d: Buffer) => {
        out += d.toString();
      });
      server.on("exit", (code) => reject(new Error(`vgg serve exited (${code}) before serving:\n${out}`)));
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--enable-unsafe-webgpu", "--no-first-run"],
    });
  },
  { timeout: TIMEOUT_MS },
);

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) server.kill("SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface TrainState {
  status: string;
  backend: string;
  device: string;
  notice: string;
  error: string;
  losses: number[];
  records: { type: string; epoch: number; testAcc?: number; testLoss?: number }[];
  result: Ranked[] | null;
  classified: number;
}

const pageState = (page: Page) => page.evaluate(() => (window as unknown as { __train: TrainState }).__train);

/** Opens the page and waits until its run has ended (done, stopped or error). */
async function trainOnPage(page: Page): Promise<TrainState> {
  await page.goto(`${url}train.html?${query}`);
  await page.waitForFunction(
    () => {
      const s = (window as unknown as { __train?: TrainState }).__train?.status;
      return s === "done" || s === "stopped" || s === "error";
    },
    undefined,
    { timeout: 0 },
  );
  const s = await pageState(page);
  assert.equal(s.error, "", `the page reported: ${s.error}`);
  assert.equal(s.status, "done");
  return s;
}

/** The same run through fit on this process's `backend`, with every step's loss. */
async function fitRun(backend: BackendName, out: string) {
  const losses: number[] = [];
  const r = await fit(
    {
      arch: "vgg11",
      resize: 32,
      ...RUN,
      dataDir: data.dir,
      download: false,
      out: join(dir, out),
      backend,
    },
    { callbacks: [{ batchEnd: (b) => losses.push(b.loss) }], log: () => {} },
  );
  return { losses, result: r };
}

/** The epoch record's test loss and accuracy. */
function epochRecord(s: TrainState) {
  const e = s.records.filter((r) => r.type === "epoch");
  assert.equal(e.length, 1);
  return e[0];
}

async function drawStroke(page: Page): Promise<void> {
  await page.locator("#draw").scrollIntoViewIfNeeded();
  const box = (await page.locator("#draw").boundingBox())!;
  await page.mouse.move(box.x + 90, box.y + 50);
  await page.mouse.down();
  await page.mouse.move(box.x + 190, box.y + 50, { steps: 5 });
  await page.mouse.move(box.x + 190, box.y + 230, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(
    () => (window as unknown as { __train: TrainState }).__train.classified === 1,
    undefined,
    { timeout: 0 },
  );
}

test("the page trains on the browser's WebGPU and matches fit on Node's WebGPU", {
  skip: noBrowser || gpu.skip,
  timeout: TIMEOUT_MS,
}, async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1200 } });
  const s = await trainOnPage(page);
  assert.equal(s.backend, "webgpu");
  assert.match(s.device, /^webgpu \(/);
  assert.equal(s.notice, "");
  assert.equal(s.losses.length, RUN.limitTrain / RUN.batchSize);
  // The chart holds the run's points: the batch points and the test accuracy of the one epoch.
  const chart = await page.evaluate(() => document.querySelector("#chart .u-legend") !== null);
  assert.ok(chart, "the curves' chart was drawn");

  const node = await fitRun("webgpu", "fit-webgpu");
  const diff = close(s.losses, node.losses, "page vs fit losses on webgpu", 1e-4);
  const e = epochRecord(s);
  assert.equal(e.testAcc, node.result.last!.testAcc);
  close([e.testLoss!], [node.result.last!.testLoss], "test loss", 1e-4);
  console.log(
    `page (${s.device}) vs fit (Node, ${node.result.device}): losses ${s.losses.map((v) => v.toFixed(6))} vs ${node.losses.map((v) => v.toFixed(6))}, max difference ${diff}`,
  );

  // A drawing is classified with the trained weights, on the device: as fit's model classifies its pixels.
  await drawStroke(page);
  const after = await pageState(page);
  assert.equal(after.error, "");
  const rgba = await page.evaluate(() => {
    const c = document.getElementById("draw") as HTMLCanvasElement;
    return Array.from(c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data);
  });
  const image = rgbaToImage(Uint8ClampedArray.from(rgba), 280, 280);
  const expected = await classifyAsync(node.result.model, image, FASHION_MNIST_CLASSES);
  assert.deepEqual(
    after.result!.map((r) => r.name),
    expected.map((r) => r.name),
  );
  close(
    after.result!.map((r) => r.probability),
    expected.map((r) => r.probability),
    "top-5 probabilities",
    1e-4,
  );
  assert.equal(await page.locator("#top5 li").count(), 5);
  await page.close();
});

test("without navigator.gpu the page trains on the reference backend and says so", {
  skip: noBrowser,
  timeout: TIMEOUT_MS,
}, async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1200 } });
  await page.addInitScript(() => {
    // As a browser without WebGPU: no navigator.gpu at all.
    delete (Navigator.prototype as { gpu?: unknown }).gpu;
  });
  const s = await trainOnPage(page);
  assert.equal(s.backend, "reference");
  assert.match(s.notice, /No WebGPU here \(This browser has no WebGPU \(navigator\.gpu is undefined\)/);
  assert.match(s.notice, /reference backend/);
  assert.equal(await page.textContent("#notice"), s.notice);
  assert.ok(await page.locator("#notice").isVisible());
  assert.equal(await page.textContent("#device"), "cpu (reference backend)");
  const node = await fitRun("reference", "fit-reference");
  close(s.losses, node.losses, "page vs fit losses on the reference backend", 1e-5);
  assert.equal(epochRecord(s).testAcc, node.result.last!.testAcc);
  await drawStroke(page);
  assert.equal((await pageState(page)).result!.length, 5);
  await page.close();
});

test("a browser whose navigator.gpu gives no adapter falls back the same way", {
  skip: noBrowser,
  timeout: TIMEOUT_MS,
}, async () => {
  const noAdapter = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  try {
    const page = await noAdapter.newPage();
    await page.goto(`${url}train.html?${query}`);
    await page.waitForFunction(
      () => (window as unknown as { __train?: TrainState }).__train?.backend !== "",
      undefined,
      { timeout: 0 },
    );
    const s = await pageState(page);
    assert.equal(s.backend, "reference");
    assert.match(s.notice, /navigator\.gpu returned no adapter/);
  } finally {
    await noAdapter.close();
  }
});

test("vgg serve and the static build hand out the Fashion-MNIST files vgg train would read; --api needs weights", {
  skip: noBrowser,
  timeout: TIMEOUT_MS,
}, async () => {
  const got = await fetch(`${url}data/train-labels-idx1-ubyte`);
  assert.equal(got.status, 200);
  assert.deepEqual(
    new Uint8Array(await got.arrayBuffer()),
    new Uint8Array(readFileSync(join(data.dir, "train-labels-idx1-ubyte.gz"))),
  );
  // The static build holds them under the names the page fetches.
  const out = join(dir, "static");
  await buildWeb({ out, dataDir: data.dir });
  assert.deepEqual(
    readFileSync(join(out, "data", "t10k-images-idx3-ubyte")),
    readFileSync(join(data.dir, "t10k-images-idx3-ubyte.gz")),
  );
  // The API needs a model; only the training page goes without one.
  const api = spawnSync(process.execPath, ["bin/vgg", "serve", "--api", "--port", "0"], { encoding: "utf8" });
  assert.equal(api.status, 1);
  assert.match(api.stderr, /Expected --weights FILE with --api: the inference API serves a model/);
  const bad = await fetch(`${url}data/passwords`);
  assert.equal(bad.status, 404);
  assert.match(
    await bad.text(),
    /^Expected one of train-images-idx3-ubyte, .* under \/data\/ but received "passwords"$/,
  );
});
