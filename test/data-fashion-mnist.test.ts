import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gunzipSync, gzipSync } from "fflate";
import { md5Hex } from "../src/data/download.js";
import {
  cacheDir,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_FILES,
  FASHION_MNIST_MEAN,
  FASHION_MNIST_STD,
  loadFashionMnist,
  locateFashionMnist,
  SYSTEM_DATA_DIR,
} from "../src/data/fashion-mnist.js";
import { encodeIdx } from "../src/data/idx.js";

const root = mkdtempSync(join(tmpdir(), "vgg-fmnist-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** Small IDX files of the four names (3 train and 2 test images of 4x4), gzip-compressed. */
function fakeFiles(trainLabels = [9, 0, 3]): Record<string, Uint8Array> {
  const files: Record<string, Uint8Array> = {};
  const splits = { train: trainLabels, test: [1, 2] };
  for (const [split, labels] of Object.entries(splits) as ["train" | "test", number[]][]) {
    const n = labels.length;
    const images = Uint8Array.from(
      { length: n * 16 },
      (_, i) => (i * 11 + (split === "train" ? 0 : 5)) % 256,
    );
    files[`${FASHION_MNIST_FILES[split].images}.gz`] = gzipSync(encodeIdx([n, 4, 4], images));
    files[`${FASHION_MNIST_FILES[split].labels}.gz`] = gzipSync(encodeIdx([n], Uint8Array.from(labels)));
  }
  return files;
}

function writeDir(name: string, files: Record<string, Uint8Array>, raw = false): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (const [file, bytes] of Object.entries(files)) {
    // raw: store decompressed without the .gz suffix
    if (raw) writeFileSync(join(dir, file.replace(/\.gz$/, "")), gunzipSync(bytes));
    else writeFileSync(join(dir, file), bytes);
  }
  return dir;
}

const served = fakeFiles([5, 6, 7]);
let server: Server;
let baseUrl: string;
const requests: string[] = [];
before(async () => {
  server = createServer((req, res) => {
    requests.push(req.url ?? "");
    const name = (req.url ?? "").replace(/^\/(good|corrupt)\//, "");
    const body = served[name];
    if (!body) {
      res.writeHead(404).end("not found");
      return;
    }
    const bytes =
      req.url?.startsWith("/corrupt/") && name.startsWith("t10k-images") ? body.subarray(0, 20) : body;
    res.writeHead(200, { "content-length": bytes.length }).end(bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

const servedMd5 = Object.fromEntries(Object.entries(served).map(([k, v]) => [k, md5Hex(v)]));
const noEnv = (home: string) => ({ HOME: home });

test("class names and file names", () => {
  assert.equal(FASHION_MNIST_CLASSES.length, 10);
  assert.equal(FASHION_MNIST_CLASSES[0], "T-shirt/top");
  assert.equal(FASHION_MNIST_CLASSES[9], "Ankle boot");
  assert.equal(FASHION_MNIST_FILES.test.images, "t10k-images-idx3-ubyte");
});

test("location search: --data-dir, then FASHION_MNIST_DIR, then the cache, then the system directory", () => {
  const explicit = writeDir("explicit", fakeFiles());
  const fromEnv = writeDir("env", fakeFiles(), true);
  const home = join(root, "home");
  const cache = writeDir("home/.cache/vgg-ts/fashion-mnist", fakeFiles());
  const system = writeDir("system", fakeFiles());
  assert.equal(cacheDir({ HOME: home }), cache);
  assert.equal(cacheDir({ HOME: home, XDG_CACHE_HOME: "/xdg" }), "/xdg/vgg-ts/fashion-mnist");
  const env = { HOME: home, FASHION_MNIST_DIR: fromEnv };
  const where = (o: object) => locateFashionMnist("train", { systemDirs: [system], ...o })?.location;
  assert.deepEqual(where({ dataDir: explicit, env }), { dir: explicit, source: "--data-dir" });
  assert.deepEqual(where({ env }), { dir: fromEnv, source: "FASHION_MNIST_DIR" });
  assert.equal(locateFashionMnist("train", { env })?.imagesPath, join(fromEnv, "train-images-idx3-ubyte"));
  assert.deepEqual(where({ env: { HOME: home } }), { dir: cache, source: "user cache" });
  assert.deepEqual(where({ env: noEnv(join(root, "nohome")) }), { dir: system, source: "system" });
  // A directory lacking the split's files is skipped.
  const empty = join(root, "empty");
  mkdirSync(empty);
  assert.deepEqual(where({ dataDir: empty, env: { HOME: home } }), { dir: cache, source: "user cache" });
});

test("loadFashionMnist reads a split from the first location found", async () => {
  const dir = writeDir("load", fakeFiles());
  for (const split of ["train", "test"] as const) {
    const d = await loadFashionMnist({
      split,
      dataDir: dir,
      env: noEnv(root),
      systemDirs: [],
      download: false,
    });
    assert.deepEqual([d.count, d.rows, d.cols], split === "train" ? [3, 4, 4] : [2, 4, 4]);
    assert.deepEqual([...d.labels], split === "train" ? [9, 0, 3] : [1, 2]);
    assert.equal(d.images.length, d.count * 16);
  }
});

test("when no place has the data and downloading is off or fails, the error lists every place", async () => {
  const home = join(root, "offline-home");
  const options = {
    split: "test" as const,
    dataDir: "/nonexistent/a",
    env: noEnv(home),
    systemDirs: ["/nonexistent/b"],
  };
  const places =
    "Expected the Fashion-MNIST test files t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) but found " +
    "them in none of these places:\n" +
    "  - /nonexistent/a (--data-dir)\n" +
    `  - ${home}/.cache/vgg-ts/fashion-mnist (user cache)\n` +
    "  - /nonexistent/b (system)\n";
  const howTo =
    "To get the data: `sudo apt-get install dataset-fashion-mnist` (Debian), or download the four files from " +
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into a directory and pass --data-dir DIR or " +
    "set FASHION_MNIST_DIR=DIR.";
  await assert.rejects(loadFashionMnist({ ...options, download: false }), {
    message: `${places}Downloading was disabled.\n${howTo}`,
  });
  // Offline: the fetch itself fails (as Node's fetch does without a network).
  const offline = async (): Promise<Response> => {
    throw new TypeError("fetch failed", {
      cause: new Error("getaddrinfo ENOTFOUND fashion-mnist.s3-website"),
    });
  };
  await assert.rejects(loadFashionMnist({ ...options, fetch: offline, progress: false }), {
    message:
      `${places}The download from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ failed: ` +
      `fetch failed (getaddrinfo ENOTFOUND fashion-mnist.s3-website)\n${howTo}`,
  });
  assert.equal(SYSTEM_DATA_DIR, "/usr/share/datasets/fashion-mnist");
});

test("downloads the four files into the cache, verified by MD5, then loads them", async () => {
  const home = join(root, "dl-home");
  const env = { HOME: home };
  requests.length = 0;
  const d = await loadFashionMnist({
    split: "train",
    env,
    systemDirs: [],
    baseUrl: `${baseUrl}/good/`,
    md5: servedMd5,
    progress: true, // exercised; cli-progress draws nothing when stderr is not a terminal
  });
  assert.deepEqual([...d.labels], [5, 6, 7]);
  const cache = cacheDir(env);
  assert.deepEqual(readdirSync(cache).sort(), Object.keys(served).sort());
  assert.equal(requests.length, 4);
  // Verified files already in the cache are not fetched again.
  const t = await loadFashionMnist({
    split: "test",
    env,
    systemDirs: [],
    baseUrl: "http://127.0.0.1:9/",
    progress: false,
  });
  assert.deepEqual([...t.labels], [1, 2]);
  assert.equal(requests.length, 4);
});

test("an MD5 mismatch fails the download and leaves no partial file behind", async () => {
  const home = join(root, "bad-home");
  const env = { HOME: home };
  const url = `${baseUrl}/corrupt/`;
  await assert.rejects(
    loadFashionMnist({ split: "test", env, systemDirs: [], baseUrl: url, md5: servedMd5, progress: false }),
    (err: Error) => {
      const name = "t10k-images-idx3-ubyte.gz";
      const expected =
        `${name}: expected MD5 ${servedMd5[name]} but the 20 bytes downloaded from ${url}${name} have MD5 ` +
        `${md5Hex(served[name].subarray(0, 20))}; the download is corrupt or the mirror changed, try again later`;
      assert.ok(err.message.includes(`The download from ${url} failed: ${expected}\n`), err.message);
      return true;
    },
  );
  const cache = cacheDir(env);
  // The two train files came first and are complete; the corrupt file and any temporary file are gone.
  assert.deepEqual(readdirSync(cache).sort(), ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]);
  // An HTTP error is reported with its status.
  await assert.rejects(
    loadFashionMnist({ split: "test", env, systemDirs: [], baseUrl: `${baseUrl}/missing/`, md5: servedMd5 }),
    {
      message:
        /failed: t10k-images-idx3-ubyte\.gz: expected HTTP 200 from http:.*\/missing\/t10k-images-idx3-ubyte\.gz but received 404 Not Found\n/,
    },
  );
  assert.ok(!existsSync(join(cache, "t10k-images-idx3-ubyte.gz")));
});

test("the real Fashion-MNIST (Debian dataset-fashion-mnist; required when CI is set)", async (t) => {
  const haveData = locateFashionMnist("train", { systemDirs: [SYSTEM_DATA_DIR], env: {} }) !== undefined;
  if (!haveData && !process.env.CI) {
    t.skip(`not installed in ${SYSTEM_DATA_DIR} (apt-get install dataset-fashion-mnist)`);
    return;
  }
  const options = { dataDir: SYSTEM_DATA_DIR, env: {}, systemDirs: [], download: false };
  const train = await loadFashionMnist({ split: "train", ...options });
  const test = await loadFashionMnist({ split: "test", ...options });
  assert.deepEqual([train.count, train.rows, train.cols], [60000, 28, 28]);
  assert.deepEqual([test.count, test.rows, test.cols], [10000, 28, 28]);
  assert.deepEqual([...train.labels.subarray(0, 10)], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
  assert.deepEqual([...test.labels.subarray(0, 10)], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
  // Balanced classes: 6000 per class in train, 1000 in test.
  const perClass = new Array(10).fill(0);
  for (const l of train.labels) perClass[l]++;
  assert.deepEqual(perClass, new Array(10).fill(6000));
  // The published normalisation constants match the training pixels.
  let sum = 0;
  let sumSq = 0;
  for (const v of train.images) {
    sum += v / 255;
    sumSq += (v / 255) ** 2;
  }
  const mean = sum / train.images.length;
  assert.ok(Math.abs(mean - FASHION_MNIST_MEAN) < 5e-4);
  assert.ok(Math.abs(Math.sqrt(sumSq / train.images.length - mean * mean) - FASHION_MNIST_STD) < 5e-4);
});
