import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { mock, test } from "node:test";
import { writeFileAtomic } from "../src/io/atomic.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";

function withTempDir(body: (dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vgg-atomic-"));
    try {
      await body(dir);
    } finally {
      mock.restoreAll();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}

function ioError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected fault`), { code });
}

test(
  "creates and replaces files, leaving no temp file behind",
  withTempDir((dir) => {
    const file = path.join(dir, "out.txt");
    writeFileAtomic(file, "first");
    assert.equal(fs.readFileSync(file, "utf8"), "first");
    writeFileAtomic(file, new Uint8Array([1, 2, 3]));
    assert.deepEqual([...fs.readFileSync(file)], [1, 2, 3]);
    assert.deepEqual(fs.readdirSync(dir), ["out.txt"]);
  }),
);

test(
  "a failing fsync leaves the old file intact and removes the temp file",
  withTempDir((dir) => {
    const file = path.join(dir, "ckpt.safetensors");
    fs.writeFileSync(file, "old complete checkpoint");
    mock.method(fs, "fsyncSync", () => {
      throw ioError("EIO");
    });
    assert.throws(() => writeFileAtomic(file, "new"), { code: "EIO" });
    assert.equal(fs.readFileSync(file, "utf8"), "old complete checkpoint");
    assert.deepEqual(fs.readdirSync(dir), ["ckpt.safetensors"]);
  }),
);

test(
  "a disk filling up mid-write leaves the old file intact",
  withTempDir((dir) => {
    const file = path.join(dir, "ckpt.safetensors");
    const old = new Map([["w", { shape: [3], data: new Float32Array([1, 2, 3]) }]]);
    writeSafetensors(file, old);
    const realWrite = fs.writeSync;
    let calls = 0;
    // The first write gets half of the bytes through, the second hits ENOSPC.
    mock.method(fs, "writeSync", (fd: number, buffer: Uint8Array, offset: number, length: number) => {
      if (calls++ > 0) throw ioError("ENOSPC");
      return realWrite(fd, buffer, offset, Math.ceil(length / 2));
    });
    const big = new Map([["w", { shape: [1000], data: new Float32Array(1000).fill(7) }]]);
    assert.throws(() => writeSafetensors(file, big), { code: "ENOSPC" });
    assert.equal(calls, 2);
    mock.restoreAll();
    assert.deepEqual(readSafetensors(file).tensors.get("w")!.data, new Float32Array([1, 2, 3]));
    assert.deepEqual(fs.readdirSync(dir), ["ckpt.safetensors"]);
  }),
);

test(
  "short writes are continued until every byte is written",
  withTempDir((dir) => {
    const file = path.join(dir, "out.bin");
    const realWrite = fs.writeSync;
    mock.method(fs, "writeSync", (fd: number, buffer: Uint8Array, offset: number, length: number) =>
      realWrite(fd, buffer, offset, Math.min(length, 7)),
    );
    const data = new Uint8Array(100).map((_, i) => i);
    writeFileAtomic(file, data);
    mock.restoreAll();
    assert.deepEqual(new Uint8Array(fs.readFileSync(file)), data);
  }),
);

test(
  "a rename that fails (target is a directory) cleans up and leaves the target alone",
  withTempDir((dir) => {
    const target = path.join(dir, "taken");
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, "inside.txt"), "keep");
    assert.throws(
      () => writeFileAtomic(target, "x"),
      (error: NodeJS.ErrnoException) => {
        assert.ok(["EISDIR", "ENOTEMPTY", "EEXIST", "EPERM"].includes(error.code ?? ""), String(error.code));
        return true;
      },
    );
    assert.deepEqual(fs.readdirSync(dir), ["taken"]);
    assert.equal(fs.readFileSync(path.join(target, "inside.txt"), "utf8"), "keep");
  }),
);

test(
  "a missing directory is reported and nothing is created",
  withTempDir((dir) => {
    const file = path.join(dir, "no", "such", "dir", "out.txt");
    assert.throws(() => writeFileAtomic(file, "x"), { code: "ENOENT" });
    assert.deepEqual(fs.readdirSync(dir), []);
  }),
);

test(
  "replacing a file keeps its permission bits",
  withTempDir((dir) => {
    const file = path.join(dir, "secret.txt");
    fs.writeFileSync(file, "old", { mode: 0o600 });
    fs.chmodSync(file, 0o600);
    writeFileAtomic(file, "new");
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  }),
);

test("bad arguments get clear messages", () => {
  assert.throws(() => writeFileAtomic("", "x"), {
    message: 'Expected a non-empty file path but received ""',
  });
  assert.throws(() => writeFileAtomic("x", [1, 2] as unknown as Uint8Array), {
    message: "Expected data to be a Uint8Array or string but received [object Array]",
  });
});

test(
  "SIGKILL at random moments never leaves a torn file",
  { timeout: 300_000 },
  withTempDir(async (dir) => {
    const target = path.join(dir, "ckpt.bin");
    const atomicUrl = new URL("../src/io/atomic.js", import.meta.url).href;
    // The child alternates between two files of different sizes and contents as fast as it can, and says
    // how many it has written; each kill comes after a given count, so it lands inside the writing (which
    // never ends) at a moment that does not depend on the machine's speed.
    const script = `
      import { writeFileAtomic } from ${JSON.stringify(atomicUrl)};
      const a = new Uint8Array(4 << 20).fill(0x61), b = new Uint8Array(3 << 20).fill(0x62);
      for (let i = 0; ; i++) {
        writeFileAtomic(${JSON.stringify(target)}, i % 2 ? a : b);
        process.stdout.write(\`\${i + 1}\\n\`);
      }
    `;
    const writesBeforeKill = [1, 3, 17, 8, 29, 55];
    for (const writes of writesBeforeKill) {
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"],
        timeout: 120_000, // a hang guard: the child is killed long before, once it reports its writes
      });
      let out = "";
      const exited = new Promise((resolve) => child.once("exit", resolve));
      await new Promise<void>((resolve) => {
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.split("\n").length > writes) resolve();
        });
        child.once("exit", () => resolve());
      });
      child.kill("SIGKILL");
      assert.equal(await exited, null, "the writer ended by itself");
      const bytes = fs.readFileSync(target);
      const whole =
        (bytes.length === 4 << 20 && bytes.every((x) => x === 0x61)) ||
        (bytes.length === 3 << 20 && bytes.every((x) => x === 0x62));
      assert.ok(whole, `torn file after SIGKILL after ${writes} writes: ${bytes.length} bytes`);
    }
  }),
);
