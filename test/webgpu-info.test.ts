// `vgg info --webgpu` prints the adapter the WebGPU kernels run on (vendor, architecture, limits).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { openGpu } from "./webgpu-setup.js";

const { ctx: gpu, skip } = await openGpu();
after(() => gpu?.destroy());
const vgg = fileURLToPath(new URL("../../bin/vgg", import.meta.url));

test("vgg info --webgpu --json reports the adapter and its limits", { skip, timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, [vgg, "info", "--webgpu", "--json"], {
    encoding: "utf8",
    timeout: 100_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as {
    webgpu: Record<string, unknown> & { limits: Record<string, number> };
  };
  assert.equal(info.webgpu.vendor, gpu!.adapter.vendor);
  assert.equal(info.webgpu.architecture, gpu!.adapter.architecture);
  assert.equal(
    info.webgpu.limits.maxStorageBufferBindingSize,
    gpu!.adapter.limits.maxStorageBufferBindingSize,
  );
  const text = spawnSync(process.execPath, [vgg, "info", "--webgpu"], { encoding: "utf8", timeout: 100_000 });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`webgpu: ${gpu!.adapter.vendor} ${gpu!.adapter.architecture}`));
  assert.match(text.stdout, /limits: maxBufferSize \d+/);
  // --backend webgpu (and $VGG_BACKEND=webgpu) ask for the same, next to the CPU backend's kernels.
  for (const [args, env] of [
    [["info", "--backend", "webgpu"], {}],
    [["info"], { VGG_BACKEND: "webgpu" }],
  ] as const) {
    const r = spawnSync(process.execPath, [vgg, ...args], {
      encoding: "utf8",
      timeout: 100_000,
      env: { ...process.env, ...env },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`webgpu: ${gpu!.adapter.vendor} ${gpu!.adapter.architecture}`));
    assert.match(r.stdout, /^backend: native/m);
  }
});
