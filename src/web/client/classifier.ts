// The classifier page: fetches the weights from the server, then classifies a dropped/picked picture or
// a drawing entirely in the browser with the library's reference backend. State for tests:
// `window.__classifier`.

import type { RgbImage } from "../../io/image.js";
import { decodeSafetensors } from "../../io/safetensors.js";
import type { VggConfig, VggModel } from "../../models/vgg.js";
import { buildModel, checkUpload, classify, MAX_PIXELS, type Ranked } from "./classify.js";
import { drawingCanvas, pixels, showRanking } from "./drawing.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const state = {
  ready: false,
  busy: false,
  result: null as Ranked[] | null,
  error: "",
  /** What the result is for: a file name or "drawing". */
  source: "",
  runs: 0,
};
let model: VggModel | null = null;
let classNames: string[] | null = null;
let lastImage: { image: RgbImage; source: string } | null = null;

function showError(message: string): void {
  state.error = message;
  $("error").textContent = message;
}

async function loadModel(): Promise<void> {
  const weightsUrl = new URLSearchParams(location.search).get("weights") ?? "model.safetensors";
  try {
    const res = await fetch(weightsUrl);
    if (!res.ok) throw new Error(`the server answered ${res.status} for ${weightsUrl}`);
    const contents = decodeSafetensors(new Uint8Array(await res.arrayBuffer()), weightsUrl);
    let configText = contents.metadata["vgg-ts.config"];
    if (!configText) {
      const cfg = await fetch("model-config.json");
      if (!cfg.ok) throw new Error(`${weightsUrl} has no vgg-ts configuration and the server gave none`);
      configText = await cfg.text();
    }
    const config = JSON.parse(configText) as VggConfig;
    model = buildModel(config, contents);
    const names = await fetch("classes.json");
    classNames = names.ok ? ((await names.json()) as string[]) : null;
    const params = model.parameters().reduce((s, p) => s + p.size, 0);
    $("model").textContent =
      `${config.convArch.map(([n, c]) => `${n}x${c}`).join(",")} at ${config.inputSize}x${config.inputSize}, ` +
      `${params.toLocaleString("en-US")} parameters (reference backend, in this browser)`;
    state.ready = true;
    document.body.dataset.ready = "true";
  } catch (e) {
    showError(`Cannot load the model: ${(e as Error).message}`);
  }
}

function showResult(result: Ranked[]): void {
  showRanking($("top5"), result);
}

async function run(image: RgbImage, source: string): Promise<void> {
  lastImage = { image, source };
  if (!model) {
    showError("The model is not loaded yet; wait a moment and try again.");
    return;
  }
  state.busy = true;
  $("result-title").textContent = `Classifying ${source}...`;
  await new Promise((r) => setTimeout(r, 0)); // let the page paint before the forward pass
  try {
    const result = classify(model, image, classNames, $<HTMLInputElement>("invert").checked);
    state.result = result;
    state.source = source;
    state.runs++;
    showError("");
    showResult(result);
    $("result-title").textContent = `Top 5 for ${source}`;
  } catch (e) {
    showError(`Cannot classify ${source}: ${(e as Error).message}`);
  } finally {
    state.busy = false;
  }
}

async function openFile(file: File): Promise<void> {
  const problem = checkUpload(file);
  if (problem) {
    state.result = null;
    showError(problem);
    return;
  }
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    state.result = null;
    showError(`${file.name} cannot be read as a picture; choose a PNG, JPEG, GIF or WebP file`);
    return;
  }
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    state.result = null;
    showError(
      `${file.name} is ${bitmap.width}x${bitmap.height}; pictures up to ${MAX_PIXELS / 1e6} megapixels are accepted`,
    );
    bitmap.close();
    return;
  }
  const preview = $<HTMLImageElement>("preview");
  URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  const image = pixels(bitmap, bitmap.width, bitmap.height);
  bitmap.close();
  await run(image, file.name);
}

function setUpUpload(): void {
  const input = $<HTMLInputElement>("file");
  input.addEventListener("change", () => {
    const file = input.files?.[0];
    if (file) void openFile(file);
  });
  const drop = $("drop");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer?.files[0];
    if (file) void openFile(file);
    else showError("Nothing to classify was dropped; drop a picture file");
  });
}

function setUpDrawing(): void {
  drawingCanvas($<HTMLCanvasElement>("draw"), $("clear"), (image) => void run(image, "drawing"));
}

$("invert").addEventListener("change", () => {
  if (lastImage) void run(lastImage.image, lastImage.source);
});
setUpUpload();
setUpDrawing();
Object.assign(window, { __classifier: state });
void loadModel();
