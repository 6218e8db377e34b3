// The training page: trains the d2l model on Fashion-MNIST in this tab with the library itself (Tensor,
// Module, autograd, SGD, trainEpoch), on the browser's WebGPU (navigator.gpu) when it has an adapter, else
// on the CPU reference backend with a notice saying why; draws the dashboard's curves as it goes; then
// classifies drawings with the trained weights. The data comes from data/ beside the page (`vgg serve`
// answers there with the files `vgg train` would read). URL parameters preset the form (?epochs=1&...),
// `autostart=1` starts at once, `backend=reference` skips WebGPU. State for tests: `window.__train`.
import { useBackend, webGpuDevice } from "../../backend/index.js";
import { FASHION_MNIST_CLASSES, FASHION_MNIST_FILES } from "../../data/fashion-mnist.js";
import { isGzip, parseIdxImages, parseIdxLabels } from "../../data/idx.js";
import type { Dataset } from "../../data/loader.js";
import type { RgbImage } from "../../io/image.js";
import type { VggModel } from "../../models/vgg.js";
import { classifyAsync, type Ranked } from "./classify.js";
import { curveSeries, curvesChart } from "./curves.js";
import { drawingCanvas, showRanking } from "./drawing.js";
import {
  checkTabOptions,
  TAB_DEFAULTS,
  type TabOptions,
  type TabRecord,
  trainInTab,
} from "./tab-training.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

const state = {
  /** loading, ready, training, done, stopped or error. */
  status: "loading",
  /** Where the model trains: "webgpu" or "reference" (the CPU fallback). */
  backend: "",
  device: "",
  /** Why the page fell back to the CPU, when it did. */
  notice: "",
  error: "",
  options: null as TabOptions | null,
  records: [] as TabRecord[],
  /** Every step's loss, in order. */
  losses: [] as number[],
  result: null as Ranked[] | null,
  classified: 0,
};
let model: VggModel | null = null;
let data: { train: Dataset; test: Dataset } | null = null;
let stopWanted = false;

function setStatus(s: string): void {
  state.status = s;
  $("status").textContent = s;
  document.body.dataset.status = s;
}

function showError(message: string): void {
  state.error = message;
  $("error").textContent = message;
}

const chart = curvesChart($("chart"), () => state.options?.epochs ?? 1);
let redrawQueued = false;
function redraw(): void {
  if (redrawQueued) return;
  redrawQueued = true;
  requestAnimationFrame(() => {
    redrawQueued = false;
    chart.setData(curveSeries(state.records));
    const last = state.records.filter((r) => r.type === "epoch").at(-1);
    $("test-acc").textContent = last ? last.testAcc.toFixed(3) : "–";
  });
}

/** WebGPU when the browser gives an adapter, else the reference backend and the reason. */
async function chooseBackend(): Promise<void> {
  const forced = params.get("backend");
  if (forced !== null && forced !== "webgpu" && forced !== "reference")
    showError(`Expected backend=webgpu or backend=reference in the address but received "${forced}"`);
  if (forced !== "reference") {
    try {
      await useBackend("webgpu");
      state.backend = "webgpu";
      state.device = webGpuDevice()?.description ?? "webgpu";
      $("device").textContent = state.device;
      return;
    } catch (e) {
      state.notice =
        `No WebGPU here (${(e as Error).message}), so the model trains on the CPU with the reference ` +
        "backend in JavaScript: the same steps, many times slower. Fewer images or a smaller model keep it short.";
    }
  } else state.notice = "backend=reference: training on the CPU with the reference backend, as asked.";
  await useBackend("reference");
  state.backend = "reference";
  state.device = "cpu (reference backend)";
  $("device").textContent = state.device;
  $("notice").textContent = state.notice;
}

/** One IDX file from data/, raw or gzip (decompressed by the browser). */
async function fetchIdx(name: string): Promise<Uint8Array> {
  const url = `data/${name}`;
  const res = await fetch(url);
  if (!res.ok) {
    const said = (await res.text()).trim();
    throw new Error(
      `the server answered ${res.status} for ${url}${said ? `: ${said}` : ""}. With \`vgg serve\` the files come from ` +
        "where `vgg train` finds them (--data-dir, FASHION_MNIST_DIR, the cache, /usr/share/datasets/fashion-mnist); " +
        "for the static build put the four Fashion-MNIST files (raw or .gz) in a data/ folder beside train.html",
    );
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (!isGzip(bytes)) return bytes;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function loadSplit(split: "train" | "test"): Promise<Dataset> {
  const names = FASHION_MNIST_FILES[split];
  const [imageBytes, labelBytes] = await Promise.all([fetchIdx(names.images), fetchIdx(names.labels)]);
  const images = parseIdxImages(imageBytes, names.images);
  const labels = parseIdxLabels(labelBytes, names.labels);
  if (images.count !== labels.count)
    throw new Error(
      `Expected as many labels as images in the ${split} split but received ${labels.count} labels for ${images.count} images`,
    );
  return {
    images: images.images,
    labels: labels.labels,
    count: images.count,
    rows: images.rows,
    cols: images.cols,
  };
}

const FIELDS = [
  "epochs",
  "batchSize",
  "lr",
  "limitTrain",
  "limitTest",
  "seed",
  "ratio",
  "classifierWidth",
] as const;

function form(): HTMLFormElement {
  return $<HTMLFormElement>("options");
}

function fillForm(): void {
  for (const k of FIELDS) {
    const input = form().elements.namedItem(k) as HTMLInputElement;
    input.value = params.get(k) ?? String(TAB_DEFAULTS[k]);
  }
}

function readForm(): TabOptions {
  const o = { ...TAB_DEFAULTS };
  for (const k of FIELDS) {
    const text = (form().elements.namedItem(k) as HTMLInputElement).value.trim();
    o[k] = text === "" ? Number.NaN : Number(text);
  }
  return checkTabOptions(o);
}

function showStep(r: {
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  examplesPerSec: number;
}): void {
  const epochs = state.options?.epochs ?? 1;
  $("position").textContent = `epoch ${r.epoch + 1}/${epochs}, batch ${r.batch + 1}/${r.batches}`;
  $("loss").textContent = r.loss.toFixed(4);
  $("speed").textContent = r.examplesPerSec.toFixed(1);
}

async function train(): Promise<void> {
  if (!data || state.status === "training") return;
  let options: TabOptions;
  try {
    options = readForm();
  } catch (e) {
    showError((e as Error).message);
    return;
  }
  showError("");
  state.options = options;
  state.records = [];
  state.losses = [];
  state.result = null;
  model = null;
  stopWanted = false;
  redraw();
  setStatus("training");
  $<HTMLButtonElement>("start").disabled = true;
  $<HTMLButtonElement>("stop").disabled = false;
  try {
    const run = await trainInTab(
      options,
      data.train,
      data.test,
      state.backend === "webgpu" ? "webgpu" : "cpu",
      {
        batchEnd: (r) => {
          state.losses.push(r.loss);
          showStep(r);
        },
        record: (r) => {
          state.records.push(r);
          redraw();
        },
        shouldStop: () => stopWanted,
      },
    );
    model = run.model;
    model.eval();
    setStatus(run.stopped ? "stopped" : "done");
  } catch (e) {
    showError(`Training failed: ${(e as Error).message}`);
    setStatus("error");
  } finally {
    $<HTMLButtonElement>("start").disabled = false;
    $<HTMLButtonElement>("stop").disabled = true;
  }
}

async function classifyDrawing(image: RgbImage): Promise<void> {
  if (!model) {
    showError("Train the model first (or let the run finish): the drawing is classified with its weights.");
    return;
  }
  try {
    $("result-title").textContent = "Classifying the drawing...";
    const result = await classifyAsync(model, image, FASHION_MNIST_CLASSES);
    state.result = result;
    state.classified++;
    showRanking($("top5"), result);
    $("result-title").textContent = "Top 5 for the drawing";
  } catch (e) {
    showError(`Cannot classify the drawing: ${(e as Error).message}`);
  }
}

async function start(): Promise<void> {
  fillForm();
  form().addEventListener("submit", (e) => {
    e.preventDefault();
    void train();
  });
  $("stop").addEventListener("click", () => {
    stopWanted = true;
  });
  drawingCanvas($<HTMLCanvasElement>("draw"), $("clear"), (image) => void classifyDrawing(image));
  await chooseBackend();
  try {
    const [trainSet, testSet] = await Promise.all([loadSplit("train"), loadSplit("test")]);
    data = { train: trainSet, test: testSet };
  } catch (e) {
    showError(`Cannot load Fashion-MNIST: ${(e as Error).message}`);
    setStatus("error");
    return;
  }
  setStatus("ready");
  $<HTMLButtonElement>("start").disabled = false;
  if (params.get("autostart") === "1") void train();
}

Object.assign(window, { __train: state });
void start();
