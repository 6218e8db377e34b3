// Training curves as d2l's Animator draws them (train loss, train acc, test acc against epoch), written
// as SVG by hand and rasterised to PNG. Both renderers share one layout, so the two files look alike.
import { PNG } from "pngjs";
import {
  createImage,
  drawText,
  fillRect,
  GLYPH_ADVANCE,
  GLYPH_HEIGHT,
  type Rgb,
  type RgbaImage,
  textAscent,
  textWidth,
} from "./bitmap-font.js";

export interface CurvePoint {
  /** May be fractional: d2l adds train loss/acc points within an epoch. */
  epoch: number;
  trainLoss?: number;
  trainAcc?: number;
  testAcc?: number;
}

export interface CurveOptions {
  /** The x axis runs to at least this epoch, so a run in progress shows its full extent. */
  numEpochs?: number;
  title?: string;
  width?: number;
  height?: number;
}

interface Series {
  key: "trainLoss" | "trainAcc" | "testAcc";
  label: string;
  color: Rgb;
  /** On/off lengths in units of the line width; empty = solid. d2l's formats are "-", "m--", "g-.". */
  dash: readonly number[];
}

const SERIES: readonly Series[] = [
  { key: "trainLoss", label: "train loss", color: [0x1f, 0x77, 0xb4], dash: [] },
  { key: "trainAcc", label: "train acc", color: [0xbf, 0x00, 0xbf], dash: [3.7, 1.6] },
  { key: "testAcc", label: "test acc", color: [0x00, 0x80, 0x00], dash: [6.4, 1.6, 1, 1.6] },
];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [0xe0, 0xe0, 0xe0];
const MIN_SIZE = 160;
const MAX_SIZE = 8192;

interface Tick {
  at: number; // pixel coordinate
  label: string;
}

interface Layout {
  width: number;
  height: number;
  /** Font pixel size: glyphs are 5x7 cells of `scale` x `scale` pixels. */
  scale: number;
  lineWidth: number;
  plot: { left: number; top: number; right: number; bottom: number };
  xTicks: Tick[];
  yTicks: Tick[];
  xLabel: { x: number; y: number; text: string };
  title?: { x: number; y: number; text: string };
  legend: { x: number; y: number; series: Series }[];
  legendSampleLength: number;
  legendGap: number;
  lines: { series: Series; points: [number, number][] }[];
}

function checkSize(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < MIN_SIZE || value > MAX_SIZE) {
    throw new RangeError(
      `Expected ${name} to be an integer in [${MIN_SIZE}, ${MAX_SIZE}] but received ${value}; ` +
        "curves need room for axes, ticks and a legend",
    );
  }
  return value;
}

/** 1, 2 or 5 times a power of ten, so that `span` holds about `maxTicks` steps. */
function niceStep(span: number, maxTicks: number): number {
  const raw = span / Math.max(1, maxTicks);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const normalised = raw / magnitude;
  return (normalised <= 1 ? 1 : normalised <= 2 ? 2 : normalised <= 5 ? 5 : 10) * magnitude;
}

function decimalsOf(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

function finiteValue(point: CurvePoint, key: Series["key"]): number | undefined {
  const value = point[key];
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

function layoutCurves(points: readonly CurvePoint[], options: CurveOptions): Layout {
  if (!Array.isArray(points)) {
    throw new TypeError(`Expected points to be an array of CurvePoint but received ${typeof points}`);
  }
  const width = checkSize("width", options.width, 640);
  const height = checkSize("height", options.height, 480);
  const numEpochs = options.numEpochs;
  if (numEpochs !== undefined && !(Number.isInteger(numEpochs) && numEpochs >= 1)) {
    throw new RangeError(`Expected numEpochs to be a positive integer but received ${numEpochs}`);
  }
  const scale = Math.max(1, Math.round(Math.min(width, height) / 320));
  const lineHeight = GLYPH_HEIGHT * scale;
  const pad = 6 * scale;
  const tickLength = 4 * scale;

  // Data: non-finite epochs or values are skipped, never drawn.
  const data = SERIES.map((series) => ({ series, values: [] as [number, number][] }));
  for (const point of points) {
    if (point === null || typeof point !== "object" || !Number.isFinite(point.epoch)) continue;
    for (const { series, values } of data) {
      const value = finiteValue(point, series.key);
      if (value !== undefined) values.push([point.epoch, value]);
    }
  }
  const epochs = data.flatMap((d) => d.values.map(([epoch]) => epoch));
  const minEpoch = Math.min(1, ...epochs);
  const xMin = minEpoch < 1 ? Math.floor(minEpoch) : 1;
  let xMax = Math.max(numEpochs ?? 1, Math.ceil(Math.max(1, ...epochs)));
  if (xMax <= xMin) xMax = xMin + 1;
  // y from 0 to at least 1 (accuracies), further when the loss is larger, rounded up to a tick.
  const maxValue = Math.max(1, ...data.flatMap((d) => d.values.map(([, value]) => value)));
  const yStep = niceStep(maxValue, 5);
  const yMax = Math.ceil(maxValue / yStep - 1e-9) * yStep;
  const yValues: number[] = [];
  for (let i = 0; i * yStep <= yMax + yStep * 1e-9; i++) yValues.push(i * yStep);
  const yLabels = yValues.map((v) => v.toFixed(decimalsOf(yStep)));

  // Margins from the text they hold.
  const top0 = pad + (options.title ? lineHeight + pad : 0);
  const left = pad + Math.max(...yLabels.map((label) => textWidth(label, scale))) + tickLength + 2 * scale;
  const xLastLabel = String(xMax);
  const right = width - Math.max(pad, Math.ceil(textWidth(xLastLabel, scale) / 2) + 2 * scale);
  const bottom = height - (tickLength + 2 * scale + lineHeight + 3 * scale + lineHeight + pad);

  // Legend: one row of [sample line, label] items above the plot, wrapped when too wide.
  const legendSampleLength = 16 * scale;
  const legendGap = 5 * scale;
  const legend: Layout["legend"] = [];
  let legendX = left;
  let legendY = top0;
  const rowStarts: number[] = [0];
  for (const series of SERIES) {
    const itemWidth = legendSampleLength + legendGap + textWidth(series.label, scale);
    if (legendX > left && legendX + itemWidth > right) {
      legendX = left;
      legendY += lineHeight + 2 * scale;
      rowStarts.push(legend.length);
    }
    legend.push({ x: legendX, y: legendY, series });
    legendX += itemWidth + 4 * GLYPH_ADVANCE * scale;
  }
  // Centre each legend row over the plot.
  rowStarts.push(legend.length);
  for (let r = 0; r + 1 < rowStarts.length; r++) {
    const row = legend.slice(rowStarts[r], rowStarts[r + 1]);
    const last = row.at(-1)!;
    const rowEnd = last.x + legendSampleLength + legendGap + textWidth(last.series.label, scale);
    const shift = Math.max(0, Math.floor((right - left - (rowEnd - left)) / 2));
    for (const item of row) item.x += shift;
  }
  const top = legendY + lineHeight + pad;
  if (bottom - top < 20 || right - left < 20) {
    throw new RangeError(
      `Expected a plot area of at least 20x20 pixels but received ${right - left}x${bottom - top} ` +
        `for a ${width}x${height} image; use a larger width or height`,
    );
  }

  const xPixel = (epoch: number) => left + ((epoch - xMin) / (xMax - xMin)) * (right - left);
  const yPixel = (value: number) => bottom - (value / yMax) * (bottom - top);
  const xStep = Math.max(1, niceStep(xMax - xMin, Math.floor((right - left) / (8 * GLYPH_ADVANCE * scale))));
  const xTicks: Tick[] = [];
  for (let t = Math.ceil(xMin / xStep) * xStep; t <= xMax + 1e-9; t += xStep) {
    xTicks.push({ at: xPixel(t), label: String(Math.round(t)) });
  }
  const yTicks = yValues.map((v, i) => ({ at: yPixel(v), label: yLabels[i]! }));

  return {
    width,
    height,
    scale,
    lineWidth: 1.5 * scale,
    plot: { left, top, right, bottom },
    xTicks,
    yTicks,
    xLabel: {
      x: (left + right) / 2,
      y: bottom + tickLength + 2 * scale + lineHeight + 3 * scale,
      text: "epoch",
    },
    title: options.title ? { x: width / 2, y: pad, text: options.title } : undefined,
    legend,
    legendSampleLength,
    legendGap,
    lines: data.map(({ series, values }) => ({
      series,
      points: values.map(([epoch, value]) => [xPixel(epoch), yPixel(value)]),
    })),
  };
}

// ---- SVG ----

const num = (v: number) => String(Math.round(v * 100) / 100);
const hex = (c: Rgb) => `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
const escapeXml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[ch]!,
  );
/** Glyph cap height 7 font pixels is about 0.7 of a sans-serif font size. */
const fontSize = (scale: number) => num(10 * scale);

function dashAttribute(series: Series, lineWidth: number): string {
  return series.dash.length === 0
    ? ""
    : ` stroke-dasharray="${series.dash.map((d) => num(d * lineWidth)).join(" ")}"`;
}

/** An SVG image of the curves; NaN/missing values are skipped, an empty list gives empty axes. */
export function curvesSvg(points: CurvePoint[], options: CurveOptions = {}): string {
  const layout = layoutCurves(points, options);
  const { width, height, scale, plot } = layout;
  const ascent = textAscent(scale);
  const tickLength = 4 * scale;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="${fontSize(scale)}">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  const plotRect = `x="${num(plot.left)}" y="${num(plot.top)}" width="${num(plot.right - plot.left)}" height="${num(plot.bottom - plot.top)}"`;
  out.push(`<defs><clipPath id="curves-plot-area"><rect ${plotRect}/></clipPath></defs>`);
  out.push(`<g stroke="${hex(GRID)}" stroke-width="1">`);
  for (const t of layout.xTicks) {
    out.push(`<line x1="${num(t.at)}" y1="${num(plot.top)}" x2="${num(t.at)}" y2="${num(plot.bottom)}"/>`);
  }
  for (const t of layout.yTicks) {
    out.push(`<line x1="${num(plot.left)}" y1="${num(t.at)}" x2="${num(plot.right)}" y2="${num(t.at)}"/>`);
  }
  out.push("</g>");
  out.push(`<g stroke="#000000" stroke-width="1">`);
  for (const t of layout.xTicks) {
    out.push(
      `<line x1="${num(t.at)}" y1="${num(plot.bottom)}" x2="${num(t.at)}" y2="${num(plot.bottom + tickLength)}"/>`,
    );
  }
  for (const t of layout.yTicks) {
    out.push(
      `<line x1="${num(plot.left - tickLength)}" y1="${num(t.at)}" x2="${num(plot.left)}" y2="${num(t.at)}"/>`,
    );
  }
  out.push("</g>");
  out.push(`<g fill="#000000">`);
  const xLabelTop = plot.bottom + tickLength + 2 * scale;
  for (const t of layout.xTicks) {
    out.push(`<text x="${num(t.at)}" y="${num(xLabelTop + ascent)}" text-anchor="middle">${t.label}</text>`);
  }
  for (const t of layout.yTicks) {
    const x = plot.left - tickLength - 2 * scale;
    out.push(`<text x="${num(x)}" y="${num(t.at + ascent / 2)}" text-anchor="end">${t.label}</text>`);
  }
  const { xLabel, title } = layout;
  out.push(
    `<text x="${num(xLabel.x)}" y="${num(xLabel.y + ascent)}" text-anchor="middle">${xLabel.text}</text>`,
  );
  if (title) {
    out.push(
      `<text x="${num(title.x)}" y="${num(title.y + ascent)}" text-anchor="middle">${escapeXml(title.text)}</text>`,
    );
  }
  out.push("</g>");
  out.push(`<g clip-path="url(#curves-plot-area)" fill="none" stroke-width="${num(layout.lineWidth)}">`);
  for (const { series, points: linePoints } of layout.lines) {
    const attrs = `data-series="${series.label}" stroke="${hex(series.color)}"${dashAttribute(series, layout.lineWidth)}`;
    const coords = linePoints.map(([x, y]) => `${num(x)},${num(y)}`).join(" ");
    out.push(`<polyline ${attrs} stroke-linejoin="round" points="${coords}"/>`);
    // A lone point draws no line; mark it so a first epoch is visible.
    if (linePoints.length === 1) {
      const [x, y] = linePoints[0]!;
      out.push(
        `<circle cx="${num(x)}" cy="${num(y)}" r="${num(layout.lineWidth * 1.5)}" fill="${hex(series.color)}"/>`,
      );
    }
  }
  out.push("</g>");
  out.push(`<rect ${plotRect} fill="none" stroke="#000000" stroke-width="1"/>`);
  for (const item of layout.legend) {
    const y = item.y + ascent / 2;
    out.push(
      `<line x1="${num(item.x)}" y1="${num(y)}" x2="${num(item.x + layout.legendSampleLength)}" y2="${num(y)}" ` +
        `stroke="${hex(item.series.color)}" stroke-width="${num(layout.lineWidth)}"${dashAttribute(item.series, layout.lineWidth)}/>`,
    );
    out.push(
      `<text x="${num(item.x + layout.legendSampleLength + layout.legendGap)}" y="${num(item.y + ascent)}">${item.series.label}</text>`,
    );
  }
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

// ---- PNG ----

interface ClipRect {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

/**
 * Draws a polyline `thickness` pixels wide by stamping squares along each segment (a DDA walk), with the
 * dash pattern following the arc length across segments as an SVG stroke-dasharray does.
 */
function drawPolyline(
  image: RgbaImage,
  points: readonly [number, number][],
  color: Rgb,
  thickness: number,
  dash: readonly number[],
  clip: ClipRect,
): void {
  const period = dash.reduce((a, b) => a + b, 0);
  const inkAt = (distance: number) => {
    if (period === 0) return true;
    let phase = distance % period;
    for (let i = 0; i < dash.length; i++) {
      if (phase < dash[i]!) return i % 2 === 0;
      phase -= dash[i]!;
    }
    return true;
  };
  const stamp = (x: number, y: number) => {
    const x0 = Math.max(clip.left, Math.round(x - thickness / 2));
    const y0 = Math.max(clip.top, Math.round(y - thickness / 2));
    const x1 = Math.min(clip.right, Math.round(x - thickness / 2) + thickness);
    const y1 = Math.min(clip.bottom, Math.round(y - thickness / 2) + thickness);
    if (x1 > x0 && y1 > y0) fillRect(image, x0, y0, x1 - x0, y1 - y0, color);
  };
  if (points.length === 1) {
    // A lone point draws no line; a dot three line-widths wide keeps a first epoch visible.
    const [x, y] = points[0]!;
    for (let dy = -1; dy <= 1; dy++)
      for (let dx = -1; dx <= 1; dx++) stamp(x + dx * thickness, y + dy * thickness);
    return;
  }
  let travelled = 0;
  for (let i = 1; i < points.length; i++) {
    const [xa, ya] = points[i - 1]!;
    const [xb, yb] = points[i]!;
    const length = Math.hypot(xb - xa, yb - ya);
    const steps = Math.max(1, Math.ceil(Math.max(Math.abs(xb - xa), Math.abs(yb - ya))));
    for (let s = 0; s <= steps; s++) {
      const f = s / steps;
      if (inkAt(travelled + f * length)) stamp(xa + f * (xb - xa), ya + f * (yb - ya));
    }
    travelled += length;
  }
}

/** A PNG image (encoded bytes) of the same chart as curvesSvg, drawn with the built-in bitmap font. */
export function curvesPng(points: CurvePoint[], options: CurveOptions = {}): Uint8Array {
  const layout = layoutCurves(points, options);
  const { width, height, scale, plot } = layout;
  const image = createImage(width, height, WHITE);
  const left = Math.round(plot.left);
  const top = Math.round(plot.top);
  const right = Math.round(plot.right);
  const bottom = Math.round(plot.bottom);
  const thin = Math.max(1, Math.floor(scale / 2));
  const tickLength = 4 * scale;
  const ascent = textAscent(scale);

  for (const t of layout.xTicks) fillRect(image, Math.round(t.at), top, thin, bottom - top, GRID);
  for (const t of layout.yTicks) fillRect(image, left, Math.round(t.at), right - left, thin, GRID);

  const thickness = Math.max(2, Math.round(layout.lineWidth));
  const clip = { left, top, right, bottom };
  for (const { series, points: linePoints } of layout.lines) {
    const dash = series.dash.map((d) => d * thickness);
    drawPolyline(image, linePoints, series.color, thickness, dash, clip);
  }

  // Frame, ticks and text on top of the lines.
  fillRect(image, left, top, right - left + thin, thin, BLACK);
  fillRect(image, left, bottom, right - left + thin, thin, BLACK);
  fillRect(image, left, top, thin, bottom - top, BLACK);
  fillRect(image, right, top, thin, bottom - top, BLACK);
  for (const t of layout.xTicks) {
    const x = Math.round(t.at);
    fillRect(image, x, bottom, thin, tickLength, BLACK);
    drawText(
      image,
      t.label,
      x - textWidth(t.label, scale) / 2,
      bottom + tickLength + 2 * scale,
      scale,
      BLACK,
    );
  }
  for (const t of layout.yTicks) {
    const y = Math.round(t.at);
    fillRect(image, left - tickLength, y, tickLength, thin, BLACK);
    const x = left - tickLength - 2 * scale - textWidth(t.label, scale);
    drawText(image, t.label, x, y - Math.floor(ascent / 2), scale, BLACK);
  }
  const { xLabel, title } = layout;
  drawText(image, xLabel.text, xLabel.x - textWidth(xLabel.text, scale) / 2, xLabel.y, scale, BLACK);
  if (title) drawText(image, title.text, title.x - textWidth(title.text, scale) / 2, title.y, scale, BLACK);
  for (const item of layout.legend) {
    const y = item.y + Math.floor(ascent / 2);
    const sample: [number, number][] = [
      [item.x, y],
      [item.x + layout.legendSampleLength, y],
    ];
    const dash = item.series.dash.map((d) => d * thickness);
    drawPolyline(image, sample, item.series.color, thickness, dash, {
      left: 0,
      top: 0,
      right: width,
      bottom: height,
    });
    drawText(
      image,
      item.series.label,
      item.x + layout.legendSampleLength + layout.legendGap,
      item.y,
      scale,
      BLACK,
    );
  }

  // Flat-colour line art compresses well unfiltered; pngjs's adaptive filter choice costs ~4x the time.
  const png = new PNG({ width, height, colorType: 2, inputHasAlpha: true, filterType: 0 });
  png.data = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength);
  return PNG.sync.write(png, { colorType: 2, inputHasAlpha: true, filterType: 0 });
}
