// End-to-end in headless Chromium (Debian's, driven by playwright-core): the live dashboard's curves grow
// while a short real training run advances, `vgg dashboard DIR` shows the finished run, and the classifier
// page computes, in the browser, the same top-1 class as `vgg predict` for the same picture and weights.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { PNG } from "pngjs";
import { buildWeb } from "../scripts/build-web.js";
import { loadFashionMnist } from "../src/data/fashion-mnist.js";

/** Screenshots go to docs/ (the README's pictures) only when VGG_SCREENSHOTS=1, else to a temp folder. */
function screenshotPath(name: string): string {
  return process.env.VGG_SCREENSHOTS === "1"
    ? join("docs", name)
    : join(mkdtempSync(join(tmpdir(), "vgg-shot-")), name);
}

const CHROMIUM = "/usr/bin/chromium";
const skip = existsSync(CHROMIUM) ? false : `needs ${CHROMIUM} (apt-get install -y chromium)`;
const TINY = ["--arch", "1x8,1x16", "--ratio", "1", "--resize", "28", "--classifier-width", "32"];

let browser: Browser;
let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  if (skip) return;
  await buildWeb();
  dir = mkdtempSync(join(tmpdir(), "vgg-web-"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGINT");
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Starts `vgg ARGS` and resolves with the first http URL it prints. */
function startVgg(args: string[]): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, ["bin/vgg", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /http:\/\/[^\s]+/.exec(out);
      if (m) resolve({ child, url: m[0], output: () => out });
    });
    child.stderr!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("exit", (code) => reject(new Error(`vgg ${args[0]} exited (${code}) before serving:\n${out}`)));
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null
    ? Promise.resolve(child.exitCode)
    : new Promise((resolve) => child.on("exit", (code) => resolve(code)));
}

/** What the dashboard page exposes as window.__dashboard. */
interface DashboardWindow {
  __dashboard?: {
    state: { records: unknown[]; status: string };
    chart: { data: (number | null)[][] };
  };
}

interface PageView {
  records: number;
  chartPoints: number;
  testAccPoints: number;
  status: string;
  samples: number;
  speed: string;
}

const view = (page: Page) =>
  page.evaluate((): PageView => {
    const d = (window as unknown as DashboardWindow).__dashboard;
    if (!d) return { records: 0, chartPoints: 0, testAccPoints: 0, status: "loading", samples: 0, speed: "" };
    return {
      records: d.state.records.length,
      chartPoints: d.chart.data[0].length,
      testAccPoints: d.chart.data[3].filter((v) => v !== null).length,
      status: d.state.status,
      samples: document.querySelectorAll("#samples figure").length,
      speed: document.getElementById("speed")!.textContent ?? "",
    };
  });

const metricsLines = (run: string) =>
  readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").length;

test("the live dashboard shows the curves growing as training advances", { skip }, async () => {
  const run = join(dir, "run");
  const { child, url } = await startVgg([
    "train",
    ...TINY,
    "--limit-train",
    "6144",
    "--limit-test",
    "256",
    "--batch-size",
    "32",
    "--epochs",
    "3",
    "--out",
    run,
    "--dashboard",
    "--port",
    "0",
  ]);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const page = await browser.newPage({ viewport: { width: 1100, height: 1250 } });
  await page.goto(url);
  const seen: PageView[] = [];
  while (child.exitCode === null) {
    seen.push(await view(page));
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(await exited(child), 0);
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "finished");
  const final = await view(page);
  const counts = seen.map((v) => v.records);
  const distinct = new Set(counts.filter((c) => c > 0));
  // The page saw the run at several stages, each at least as far as the one before.
  assert.ok(distinct.size >= 4, `expected the record count to grow in steps but saw ${[...distinct]}`);
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i] >= counts[i - 1], `count went back: ${counts}`);
  assert.equal(final.records, metricsLines(run));
  assert.equal(final.testAccPoints, 3);
  const epochs = readFileSync(join(run, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l).epoch);
  assert.equal(final.chartPoints, new Set(epochs).size);
  assert.equal(final.samples, 16);
  assert.ok(
    seen.some((v) => v.samples === 16 && v.records < final.records),
    "grid shown before the end",
  );
  assert.match(final.speed, /^\d+(\.\d)?$/);
  assert.match((await page.textContent("#config")) ?? "", /limitTrain6144/);
  assert.match((await page.textContent("#summary")) ?? "", /Conv2d\(8, 16/);
  await page.screenshot({ path: screenshotPath("dashboard.png"), fullPage: true });
  await page.close();
});

test("vgg dashboard DIR serves a finished run from its files", { skip }, async () => {
  const run = join(dir, "run");
  const { child, url } = await startVgg(["dashboard", run, "--port", "0"]);
  const page = await browser.newPage();
  await page.goto(url);
  const lines = metricsLines(run);
  await page.waitForFunction(
    (n) => {
      const d = (window as unknown as DashboardWindow).__dashboard!;
      return d.state.records.length === n && document.querySelectorAll("#samples figure").length === 16;
    },
    lines,
    { timeout: 20_000 },
  );
  const v = await view(page);
  assert.equal(v.testAccPoints, 3);
  assert.equal(await page.textContent("#samples-epoch"), "3");
  // A new line appended to the file reaches the open page.
  const extra = { type: "batch", epoch: 3.2, trainLoss: 0.5, trainAcc: 0.8, lr: 0.05 };
  writeFileSync(
    join(run, "metrics.jsonl"),
    `${readFileSync(join(run, "metrics.jsonl"), "utf8")}${JSON.stringify(extra)}\n`,
  );
  await page.waitForFunction(
    (n) => (window as unknown as DashboardWindow).__dashboard!.state.records.length === n,
    lines + 1,
  );
  await page.close();
  child.kill("SIGINT");
  assert.equal(await exited(child), 0);
});

test("the classifier page gives the same top-1 as vgg predict, in the browser", { skip }, async () => {
  const run = join(dir, "run");
  const weights = join(run, "model.safetensors");
  // A Fashion-MNIST test picture, enlarged and coloured so the page's decode and resize both matter.
  const test = await loadFashionMnist({ split: "test", download: false });
  const pngs: string[] = [];
  for (const index of [0, 1, 7]) {
    const png = new PNG({ width: 56, height: 42 });
    for (let y = 0; y < 42; y++)
      for (let x = 0; x < 56; x++) {
        const v = test.images[index * 784 + Math.floor((y * 28) / 42) * 28 + Math.floor(x / 2)];
        png.data.set([v, Math.round(v * 0.8), Math.round(v * 0.6), 255], 4 * (y * 56 + x));
      }
    const file = join(dir, `item${index}.png`);
    writeFileSync(file, PNG.sync.write(png));
    pngs.push(file);
  }
  const predicted = spawnSync(
    process.execPath,
    ["bin/vgg", "predict", "--json", "--weights", weights, ...pngs],
    {
      encoding: "utf8",
    },
  );
  assert.equal(predicted.status, 0, predicted.stderr);
  const expected = JSON.parse(predicted.stdout) as { top: { class: number; probability: number }[] }[];

  const { child, url } = await startVgg(["serve", "--weights", weights, "--port", "0"]);
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.ready === "true");
  for (const [i, file] of pngs.entries()) {
    const before = await page.evaluate(
      () => (window as unknown as { __classifier: { runs: number } }).__classifier.runs,
    );
    await page.setInputFiles("#file", file);
    await page.waitForFunction(
      (n) => (window as unknown as { __classifier: { runs: number } }).__classifier.runs > n,
      before,
    );
    const got = await page.evaluate(
      () =>
        (window as unknown as { __classifier: { result: { class: number; probability: number }[] } })
          .__classifier.result,
    );
    assert.equal(got.length, 5);
    assert.equal(got[0].class, expected[i].top[0].class, `top-1 for ${file}`);
    for (let k = 0; k < 5; k++)
      assert.ok(Math.abs(got[k].probability - expected[i].top[k].probability) < 1e-4);
  }
  assert.equal((await page.$$("#top5 li")).length, 5);
  await page.screenshot({ path: screenshotPath("classifier.png"), fullPage: true });

  // Bad uploads: a message on the page, never a broken page.
  const bad = [
    { name: "empty.png", mimeType: "image/png", buffer: Buffer.alloc(0), message: /empty\.png is empty/ },
    { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello"), message: /not a picture/ },
    {
      name: "broken.png",
      mimeType: "image/png",
      buffer: Buffer.from("\x89PNG\r\n\x1a\n garbage"),
      message: /cannot be read as a picture/,
    },
    {
      name: "huge.png",
      mimeType: "image/png",
      buffer: Buffer.alloc(21 * 1024 * 1024),
      message: /MB are accepted/,
    },
  ];
  for (const b of bad) {
    await page.setInputFiles("#file", { name: b.name, mimeType: b.mimeType, buffer: b.buffer });
    await page.waitForFunction(
      (name) => document.getElementById("error")!.textContent!.includes(name),
      b.name,
    );
    assert.match((await page.textContent("#error")) ?? "", b.message);
  }
  // Drawing on the canvas classifies the drawing.
  const box = (await page.locator("#draw").boundingBox())!;
  await page.mouse.move(box.x + 80, box.y + 60);
  await page.mouse.down();
  await page.mouse.move(box.x + 200, box.y + 60, { steps: 5 });
  await page.mouse.move(box.x + 200, box.y + 220, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(
    () => (window as unknown as { __classifier: { source: string } }).__classifier.source === "drawing",
  );
  assert.equal(await page.textContent("#error"), "");
  await page.close();
  child.kill("SIGINT");
  assert.equal(await exited(child), 0);
});
