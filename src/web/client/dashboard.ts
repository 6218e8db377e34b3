// The dashboard page: listens to /events (Server-Sent Events) and draws d2l's three curves with uPlot,
// the speed, the ETA, the configuration, the model summary and the grid of test pictures. Its state is
// readable as `window.__dashboard` (the end-to-end test reads it).
import { type CurveRecord, curveSeries, curvesChart } from "./curves.js";

type Record_ = CurveRecord & { examplesPerSec?: number };

interface Progress {
  epoch: number;
  epochs: number;
  batch: number | null;
  batches: number | null;
  examplesPerSec: number;
  etaSeconds: number | null;
}
interface Samples {
  epoch: number;
  rows: number;
  cols: number;
  images: string[];
  labels: number[];
  predictions: number[];
  confidence: number[];
  classes: string[];
}
interface Config {
  options: Record<string, unknown>;
  modelConfig: Record<string, unknown>;
  device: string;
  epochs: number;
  trainSize: number;
  testSize: number;
  summary: {
    inputShape: number[];
    rows: { name: string; layer: string; outputShape: number[]; params: number }[];
    totalParams: number;
    totalMacs: number;
  };
}

const $ = (id: string) => document.getElementById(id) as HTMLElement;

const state = {
  records: [] as Record_[],
  config: null as Config | null,
  progress: null as Progress | null,
  samples: null as Samples | null,
  status: "connecting",
  series: () => curveSeries(state.records),
};

const chart = curvesChart($("chart"), () => state.config?.epochs ?? 1);

let redrawQueued = false;
function redraw(): void {
  if (redrawQueued) return;
  redrawQueued = true;
  requestAnimationFrame(() => {
    redrawQueued = false;
    chart.setData(state.series());
    $("records").textContent = String(state.records.length);
    const last = state.records.filter((r) => r.type === "epoch").at(-1);
    $("test-acc").textContent = last?.testAcc !== undefined ? last.testAcc.toFixed(3) : "–";
  });
}

function duration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

function showProgress(p: Progress): void {
  $("speed").textContent = `${p.examplesPerSec.toFixed(1)}`;
  $("eta").textContent = duration(p.etaSeconds);
  $("position").textContent =
    p.batch === null
      ? `epoch ${p.epoch}/${p.epochs}`
      : `epoch ${p.epoch + 1}/${p.epochs}, batch ${p.batch + 1}/${p.batches}`;
}

function cell(row: HTMLTableRowElement, text: string, tag: "td" | "th" = "td"): void {
  const c = document.createElement(tag);
  c.textContent = text;
  row.append(c);
}

function showConfig(c: Config): void {
  const table = $("config") as HTMLTableElement;
  table.replaceChildren();
  const shown: [string, unknown][] = [
    ["device", c.device],
    ["training examples", c.trainSize],
    ["test examples", c.testSize],
    ...Object.entries(c.options).filter(
      ([k, v]) => v !== undefined && !["dashboard", "host", "port"].includes(k),
    ),
  ];
  for (const [k, v] of shown) {
    const row = table.insertRow();
    cell(row, k, "th");
    cell(row, typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  const summary = $("summary") as HTMLTableElement;
  summary.replaceChildren();
  const head = summary.insertRow();
  for (const h of ["layer", "", "output shape", "parameters"]) cell(head, h, "th");
  for (const r of c.summary.rows) {
    const row = summary.insertRow();
    cell(row, r.name);
    cell(row, r.layer);
    cell(row, `[${r.outputShape.join(", ")}]`);
    cell(row, r.params.toLocaleString("en-US"));
  }
  $("params").textContent = c.summary.totalParams.toLocaleString("en-US");
  $("macs").textContent = `${(c.summary.totalMacs / 1e6).toFixed(1)} M`;
}

function showSamples(s: Samples): void {
  const grid = $("samples");
  grid.replaceChildren();
  $("samples-epoch").textContent = String(s.epoch);
  s.images.forEach((b64, i) => {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const canvas = document.createElement("canvas");
    canvas.width = s.cols;
    canvas.height = s.rows;
    const ctx = canvas.getContext("2d")!;
    const img = ctx.createImageData(s.cols, s.rows);
    for (let j = 0; j < bytes.length; j++) img.data.set([bytes[j], bytes[j], bytes[j], 255], 4 * j);
    ctx.putImageData(img, 0, 0);
    const figure = document.createElement("figure");
    const ok = s.predictions[i] === s.labels[i];
    figure.className = ok ? "right" : "wrong";
    const caption = document.createElement("figcaption");
    caption.textContent = `${s.classes[s.predictions[i]]} (${(s.confidence[i] * 100).toFixed(0)}%)`;
    const truth = document.createElement("small");
    truth.textContent = `true: ${s.classes[s.labels[i]]}`;
    caption.append(document.createElement("br"), truth);
    figure.append(canvas, caption);
    grid.append(figure);
  });
}

function setStatus(text: string): void {
  state.status = text;
  $("status").textContent = text;
}

const events = new EventSource("events");
const on = <T>(name: string, f: (data: T) => void) =>
  events.addEventListener(name, (e) => f(JSON.parse((e as MessageEvent<string>).data) as T));
events.onopen = () => setStatus("live");
events.onerror = () => {
  if (state.status !== "finished" && !state.status.startsWith("stopped")) setStatus("reconnecting");
};
on<null>("reset", () => {
  state.records = [];
  state.samples = null;
  redraw();
});
on<Config>("config", (c) => {
  state.config = c;
  showConfig(c);
  redraw();
});
on<Record_>("record", (r) => {
  state.records.push(r);
  redraw();
});
on<Progress>("progress", (p) => {
  state.progress = p;
  showProgress(p);
});
on<Samples>("samples", (s) => {
  state.samples = s;
  showSamples(s);
});
on<{ status: string }>("end", (e) => {
  setStatus(e.status);
  events.close();
});

Object.assign(window, { __dashboard: { state, chart } });
