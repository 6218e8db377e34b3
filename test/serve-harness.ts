// Shared by the serve tests: a small model saved to a temp folder, PNGs of several sizes (grey and
// colour), `vgg serve --api` as a child process on a free loopback port, and a plain HTTP client.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PNG } from "pngjs";
import { vgg, vggArchs } from "../src/models/vgg.js";
import { Generator, manualSeed } from "../src/rng.js";
import { saveModel } from "../src/train/checkpoint.js";

export const BIN = "bin/vgg";
/**
 * The children use the direct convolution and no kernel cache, so the server's batches and `vgg
 * predict` run the same arithmetic whatever either process measured (see the README's determinism).
 */
export const CHILD_ENV = { ...process.env, VGG_CONV_ALGO: "direct", VGG_KERNEL_CACHE: "off" };

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A freshly initialised d2l VGG-11 at 32x32, 1/8 of the channels, 64-wide classifier: 0.6 MB. */
export function smallModel(dir: string, seed = 1): string {
  manualSeed(seed);
  const path = join(dir, "model.safetensors");
  saveModel(
    path,
    vgg(vggArchs.vgg11, { widthRatio: 8, inChannels: 1, inputSize: 32, numClasses: 10, classifierWidth: 64 }),
  );
  return path;
}

/** PNG bytes of a seeded random picture; grey (colorType 0) or RGBA. */
export function randomPng(width: number, height: number, seed: number, grey = false): Buffer {
  const g = new Generator(seed);
  const png = new PNG({ width, height, colorType: grey ? 0 : 6, inputColorType: 6 });
  for (let i = 0; i < png.data.length; i++) png.data[i] = (i & 3) === 3 ? 255 : Math.floor(g.random() * 256);
  return PNG.sync.write(png, { colorType: grey ? 0 : 6 });
}

/** A handful of PNG files of different sizes and kinds; returns their paths. */
export function pngFiles(dir: string): string[] {
  const shapes: [number, number, boolean][] = [
    [28, 28, true],
    [32, 32, false],
    [57, 41, false],
    [13, 90, true],
    [200, 150, false],
  ];
  return shapes.map(([w, h, grey], i) => {
    const path = join(dir, `img${i}.png`);
    writeFileSync(path, randomPng(w, h, 100 + i, grey));
    return path;
  });
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export const agent = new Agent({ keepAlive: true, maxSockets: 256 });

/**
 * An open connection that sends nothing: a client that could still send a request, so that the batcher
 * waits for its delay instead of starting a batch once every other connection has a request in. The server
 * accepts it before any connection opened later, so it counts before their requests arrive.
 */
export function idleConnection(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => resolve(socket));
    socket.once("error", reject);
  });
}

export function http(
  url: string,
  o: {
    method?: string;
    body?: Buffer | string;
    type?: string;
    headers?: Record<string, string>;
    /** A connection of its own, closed after the answer (no keep-alive agent). */
    fresh?: boolean;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.type) headers["Content-Type"] = o.type;
    const req = request(
      url,
      { method: o.method ?? (o.body ? "POST" : "GET"), headers, agent: o.fresh ? false : agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(o.body);
  });
}

export interface ServerChild {
  url: string;
  child: ChildProcess;
  stdout: () => string;
  exit: Promise<number | null>;
}

/** `vgg serve --api --port 0 ...args`; resolves when it prints its address, rejects if it exits first. */
export function startServe(args: string[]): Promise<ServerChild> {
  const child = spawn(process.execPath, [BIN, "serve", "--api", "--port", "0", ...args], {
    env: CHILD_ENV,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    err += d;
  });
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return new Promise((resolve, reject) => {
    const onData = () => {
      const m = /(http:\/\/127\.0\.0\.1:\d+)\//.exec(out);
      if (m) {
        child.stdout?.off("data", onData);
        resolve({ url: m[1], child, stdout: () => out, exit });
      }
    };
    child.stdout?.on("data", onData);
    exit.then((code) => reject(new Error(`vgg serve exited (${code}) before listening: ${err}${out}`)));
  });
}

/** Stops a server child that a test left running (a failed assertion), so no process outlives the test. */
export function stopServe(s: ServerChild | undefined): void {
  if (s && s.child.exitCode === null && s.child.signalCode === null) s.child.kill("SIGKILL");
}

/** `vgg predict --json` on files, in a child with the same environment as the server. */
export function predictJson(
  weights: string,
  files: string[],
  top: number,
): Promise<{ file: string; top: unknown[] }[]> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, "predict", "--weights", weights, "--json", "--top", String(top), ...files],
      { env: CHILD_ENV, timeout: 120_000 },
      (e, stdout, stderr) => (e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(JSON.parse(stdout))),
    );
  });
}

/** A metric's value from /metrics text, summed over its label sets; 0 when absent. */
export function metric(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith(" ") || rest.startsWith("{"))) continue;
    if (labels && !rest.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Polls /metrics until pred holds (progress the server reports, never a fixed wait). */
export async function waitForMetrics(url: string, pred: (text: string) => boolean): Promise<string> {
  for (;;) {
    const r = await http(`${url}/metrics`);
    if (pred(r.body)) return r.body;
    await new Promise((ok) => setTimeout(ok, 20));
  }
}

/** Raw bytes to the server and everything it answers until it closes: for requests a client library would not send. */
export function raw(url: string, text: string | Buffer): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(text));
    let out = "";
    socket.on("data", (d) => {
      out += d.toString();
    });
    socket.on("end", () => resolve(out));
    socket.on("error", (e) => (out ? resolve(out) : reject(e)));
  });
}
