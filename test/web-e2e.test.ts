// End-to-end in headless Chromium (Debian's, driven by playwright-core): the live dashboard's curves grow
// while a short training run advances, `vgg dashboard DIR` shows a finished run, and the classifier page
// computes, in the browser, the same top-1 class as `vgg predict` for the same picture and weights. The runs
// train on small synthetic Fashion-MNIST-format files; each test and each server has a timeout, so a hang
// fails with the server's output.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { PNG } from "pngjs";
import { buildWeb } from "../scripts/build-web.js";
import { type SyntheticData, writeSyntheticFashionMnist } from "./helpers.js";

/** Screenshots go to docs/ (the README's pictures) only when VGG_SCREENSHOTS=1, else to a temp folder. */
function screenshotPath(name: string): string {
  return process.env.VGG_SCREENSHOTS === "1"
    ? join("docs", name)
    : join(mkdtempSync(join(tmpdir(), "vgg-shot-")), name);
}

// Debian's Chromium; VGG_CHROMIUM points elsewhere (or at nothing, to try the machine without a browser).
const CHROMIUM = process.env.VGG_CHROMIUM ?? "/usr/bin/chromium";
// CI installs it (.ci/run), so there a missing browser fails the tests instead of skipping them.
const skip =
  existsSync(CHROMIUM) || process.env.CI ? false : `needs ${CHROMIUM} (apt-get install -y chromium)`;
const TINY = ["--arch", "1x8,1x16", "--ratio", "1", "--resize", "28", "--classifier-width", "32"];
/** The longest a server may take to print its URL, or a training child to finish: a hang guard. */
const CHILD_TIMEOUT_MS = 120_000;
const TEST_TIMEOUT_MS = 300_000;

let browser: Browser;
let dir: string;
let data: SyntheticData;
/** A finished 3-epoch run for the tests that read one, made in before() so that no test needs another. */
let finished: string;
const children: ChildProcess[] = [];

before(
  async () => {
    if (skip) return;
    await buildWeb();
    dir = mkdtempSync(join(tmpdir(), "vgg-web-"));
    data = writeSyntheticFashionMnist(join(dir, "data"), { train: 2048, test: 256 });
    finished = join(dir, "finished");
    const r = spawnSync(
      process.execPath,
      ["bin/vgg", "train", ...TINY, ...dataFlags(), "--batch-size", "32", "--epochs", "3", "--out", finished],
      { encoding: "utf8", env: { ...process.env, VGG_QUIET: "1" }, timeout: CHILD_TIMEOUT_MS },
    );
    assert.equal(r.status, 0, `${r.error ?? ""}${r.stdout}${r.stderr}`);
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
  },
  { timeout: TEST_TIMEOUT_MS },
);

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const dataFlags = () => ["--data-dir", data.dir, "--no-download"];

/**
 * Starts `vgg ARGS` and resolves with the first http URL it prints; rejects with its output if it exits
 * first or prints none within CHILD_TIMEOUT_MS (then it is killed). after() kills what is left.
 */
function serveVgg(args: string[]): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, ["bin/vgg", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`vgg ${args[0]} printed no URL in ${CHILD_TIMEOUT_MS / 1000} s:\n${out}`));
    }, CHILD_TIMEOUT_MS);
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /http:\/\/[^\s]+/.exec(out);
      if (m) {
        clearTimeout(guard);
        resolve({ child, url: m[0], output: () => out });
      }
    });
    child.stderr!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("exit", (code) => {
      clearTimeout(guard);
      reject(new Error(`vgg ${args[0]} exited (${code}) before serving:\n${out}`));
    });
  });
}

/** The child's exit code; a child still running after CHILD_TIMEOUT_MS is killed and reported. */
function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`vgg did not exit within ${CHILD_TIMEOUT_MS / 1000} s`));
    }, CHILD_TIMEOUT_MS);
    child.on("exit", (code) => {
      clearTimeout(guard);
      resolve(code);
    });
  });
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

/** What the page looked like right after each event it handled (recorded in the page by logEvents). */
interface EventSnapshot {
  event: string;
  records: number;
  samples: number;
  status: string;
}

/**
 * Before the page's scripts run: wraps EventSource listeners so that the page logs its state after handling
 * each record, sample grid and end event. Each record is its own server-sent event, so the log shows every
 * stage the page went through, however fast the run produced them (no polling from the test).
 */
function logEvents(): void {
  const log: EventSnapshot[] = [];
  Object.assign(window, { __events: log });
  const add = EventSource.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (
    this: EventSource,
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ) {
    if (!["record", "samples", "end"].includes(type) || typeof listener !== "function")
      return add.call(this, type, listener, options);
    return add.call(
      this,
      type,
      (e: Event) => {
        listener.call(this, e);
        const d = (window as unknown as DashboardWindow).__dashboard;
        log.push({
          event: type,
          records: d?.state.records.length ?? 0,
          samples: document.querySelectorAll("#samples figure").length,
          status: d?.state.status ?? "",
        });
      },
      options,
    );
  } as typeof EventSource.prototype.addEventListener;
}

test("the live dashboard shows the curves growing as training advances", {
  skip,
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const run = join(dir, "live");
  const { child, url } = await serveVgg([
    "train",
    ...TINY,
    ...dataFlags(),
    "--limit-train",
    "2000",
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
  await page.addInitScript(logEvents);
  await page.goto(url);
  assert.equal(await exited(child), 0);
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "finished");
  const final = await view(page);
  const log = await page.evaluate(() => (window as unknown as { __events: EventSnapshot[] }).__events);
  const records = log.filter((e) => e.event === "record");
  // Every record reached the page on its own, in order, while the run was live; the end came last.
  assert.deepEqual(
    records.map((e) => e.records),
    Array.from({ length: final.records }, (_, i) => i + 1),
  );
  assert.ok(
    records.every((e) => e.status === "live"),
    `statuses seen: ${[...new Set(records.map((e) => e.status))]}`,
  );
  assert.deepEqual(log.at(-1), { event: "end", records: final.records, samples: 16, status: "finished" });
  assert.equal(final.records, metricsLines(run));
  assert.equal(final.testAccPoints, 3);
  const epochs = readFileSync(join(run, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l).epoch);
  assert.equal(final.chartPoints, new Set(epochs).size);
  assert.equal(final.samples, 16);
  // A page that connects late is sent the history and only the latest grid; one grid per finished epoch, each
  // with more records shown than the last, means the page followed the run as it went.
  const grids = log.filter((e) => e.event === "samples");
  assert.ok(grids.length >= 2, `grids seen after ${grids.map((e) => e.records)} records`);
  for (let i = 1; i < grids.length; i++) assert.ok(grids[i].records > grids[i - 1].records);
  assert.ok(grids[0].samples === 16 && grids[0].records < final.records, "grid shown before the end");
  assert.match(final.speed, /^\d+(\.\d)?$/);
  assert.match((await page.textContent("#config")) ?? "", /limitTrain2000/);
  assert.match((await page.textContent("#summary")) ?? "", /Conv2d\(8, 16/);
  await page.screenshot({ path: screenshotPath("dashboard.png"), fullPage: true });
  await page.close();
});

test("vgg dashboard DIR serves a finished run from its files", {
  skip,
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const run = finished;
  const { child, url } = await serveVgg(["dashboard", run, "--data-dir", data.dir, "--port", "0"]);
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

test("the classifier page gives the same top-1 as vgg predict, in the browser", {
  skip,
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const weights = join(finished, "model.safetensors");
  // A test picture, enlarged and coloured so the page's decode and resize both matter.
  const test = data.test;
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
    { encoding: "utf8", timeout: CHILD_TIMEOUT_MS },
  );
  assert.equal(predicted.status, 0, `${predicted.error ?? ""}${predicted.stderr}`);
  const expected = JSON.parse(predicted.stdout) as { top: { class: number; probability: number }[] }[];

  const { child, url } = await serveVgg(["serve", "--weights", weights, "--port", "0"]);
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
