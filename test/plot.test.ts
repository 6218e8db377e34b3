import assert from "node:assert/strict";
import { test } from "node:test";
import { PNG } from "pngjs";
import {
  createImage,
  drawText,
  FONT_CHARACTERS,
  GLYPH_HEIGHT,
  GLYPH_WIDTH,
  glyphRows,
  textWidth,
} from "../src/train/bitmap-font.js";
import { type CurvePoint, curvesPng, curvesSvg } from "../src/train/plot.js";

const COLORS = {
  "train loss": [0x1f, 0x77, 0xb4],
  "train acc": [0xbf, 0x00, 0xbf],
  "test acc": [0x00, 0x80, 0x00],
} as const;
type Label = keyof typeof COLORS;

/** d2l-style history: `perEpoch` train points within each epoch, one test point at each epoch's end. */
function history(epochs: number, perEpoch: number): CurvePoint[] {
  const points: CurvePoint[] = [];
  for (let e = 0; e < epochs; e++) {
    for (let b = 1; b <= perEpoch; b++) {
      const x = e + b / perEpoch;
      points.push({ epoch: x, trainLoss: 2.3 * Math.exp(-x) + 0.2, trainAcc: 0.9 - 0.6 * Math.exp(-x) });
    }
    points.push({ epoch: e + 1, testAcc: 0.88 - 0.5 * Math.exp(-(e + 1)) });
  }
  return points;
}

/** Checks that every tag is closed in order and attribute values are quoted: enough for a browser to parse. */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const match of svg.matchAll(/<(\/?)([a-zA-Z]+)((?:\s+[a-zA-Z:-]+="[^"<>]*")*)\s*(\/?)>/g)) {
    const [, closing, name, , selfClosing] = match;
    if (closing) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
    else if (!selfClosing) stack.push(name!);
  }
  assert.deepEqual(stack, [], "unclosed elements");
  const stripped = svg.replace(/<[^<>]*>/g, "");
  assert.doesNotMatch(stripped, /[<>]/, "stray angle brackets outside tags");
  assert.doesNotMatch(stripped, /&(?!amp;|lt;|gt;|quot;|apos;)/, "unescaped ampersand");
}

function polylinePoints(svg: string, label: Label): [number, number][] {
  const match = svg.match(new RegExp(`<polyline data-series="${label}"[^>]*points="([^"]*)"`));
  assert.ok(match, `no polyline for ${label}`);
  if (match[1] === "") return [];
  return match[1]!.split(" ").map((pair) => pair.split(",").map(Number) as [number, number]);
}

function decode(bytes: Uint8Array): PNG {
  return PNG.sync.read(Buffer.from(bytes));
}

function pixelIs(png: PNG, x: number, y: number, rgb: readonly number[]): boolean {
  const i = (y * png.width + x) * 4;
  return png.data[i] === rgb[0] && png.data[i + 1] === rgb[1] && png.data[i + 2] === rgb[2];
}

function countColor(png: PNG, rgb: readonly number[]): number {
  let count = 0;
  for (let y = 0; y < png.height; y++)
    for (let x = 0; x < png.width; x++) count += pixelIs(png, x, y, rgb) ? 1 : 0;
  return count;
}

test("curvesSvg draws three series with one vertex per finite point, a legend and axis text", () => {
  const svg = curvesSvg(history(3, 5), { numEpochs: 10 });
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="640" height="480"/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  assertWellFormed(svg);
  assert.equal(polylinePoints(svg, "train loss").length, 15);
  assert.equal(polylinePoints(svg, "train acc").length, 15);
  assert.equal(polylinePoints(svg, "test acc").length, 3);
  for (const [label, rgb] of Object.entries(COLORS)) {
    assert.match(svg, new RegExp(`>${label}</text>`), `legend text ${label}`);
    const hex = `#${rgb.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
    assert.ok(
      (svg.match(new RegExp(`stroke="${hex}"`, "g")) ?? []).length >= 2,
      `${label} line and legend sample`,
    );
  }
  assert.match(svg, />epoch<\/text>/);
  // x axis reaches numEpochs even though only 3 epochs ran; y runs from 0 to past the largest loss (2.04).
  assert.match(svg, />10<\/text>/);
  assert.match(svg, />0\.0<\/text>/);
  assert.match(svg, />2\.5<\/text>/);
  assert.doesNotMatch(svg, />3\.0<\/text>/);
});

test("curvesSvg maps epochs and values linearly: later epochs to the right, larger values higher", () => {
  const svg = curvesSvg(
    [1, 2, 3, 4].map((epoch) => ({ epoch, testAcc: epoch / 4 })),
    { numEpochs: 4 },
  );
  const pts = polylinePoints(svg, "test acc");
  const dx = pts.slice(1).map(([x], i) => x - pts[i]![0]);
  const dy = pts.slice(1).map(([, y], i) => y - pts[i]![1]);
  for (const d of dx) assert.ok(d > 0 && Math.abs(d - dx[0]!) < 0.02, `uneven x steps ${dx}`);
  for (const d of dy) assert.ok(d < 0 && Math.abs(d - dy[0]!) < 0.02, `uneven y steps ${dy}`);
});

test("curvesSvg skips NaN and infinite values and epochs, and never writes NaN into the file", () => {
  const points = history(2, 4);
  points[1]!.trainLoss = Number.NaN;
  points[2]!.trainAcc = Number.POSITIVE_INFINITY;
  points.push({ epoch: Number.NaN, trainLoss: 1, trainAcc: 1, testAcc: 1 });
  points.push({ epoch: 3, trainLoss: undefined, testAcc: Number.NaN });
  const svg = curvesSvg(points, { numEpochs: 3 });
  assertWellFormed(svg);
  assert.doesNotMatch(svg, /NaN|Infinity|undefined/);
  assert.equal(polylinePoints(svg, "train loss").length, 7);
  assert.equal(polylinePoints(svg, "train acc").length, 7);
  assert.equal(polylinePoints(svg, "test acc").length, 2);
});

test("curvesSvg of no points is empty axes from epoch 1 to numEpochs with the legend", () => {
  for (const svg of [curvesSvg([]), curvesSvg([], { numEpochs: 5 })]) {
    assertWellFormed(svg);
    for (const label of Object.keys(COLORS) as Label[]) {
      assert.deepEqual(polylinePoints(svg, label), []);
      assert.match(svg, new RegExp(`>${label}</text>`));
    }
    assert.match(svg, />1\.0<\/text>/);
  }
  assert.match(curvesSvg([], { numEpochs: 5 }), />5<\/text>/);
});

test("curvesSvg marks a lone first point and escapes the title", () => {
  const svg = curvesSvg([{ epoch: 1, testAcc: 0.5 }], { title: `Fashion-MNIST <vgg11> & "friends"` });
  assertWellFormed(svg);
  assert.match(svg, />Fashion-MNIST &lt;vgg11&gt; &amp; &quot;friends&quot;<\/text>/);
  assert.match(svg, /<circle [^>]*fill="#008000"/);
});

test("curvesPng decodes to the requested size and has pixels of each line colour", () => {
  for (const [width, height] of [
    [640, 480],
    [320, 240],
    [1000, 700],
  ] as const) {
    const options = width === 640 ? { numEpochs: 10 } : { numEpochs: 10, width, height };
    const png = decode(curvesPng(history(4, 5), options));
    assert.equal(png.width, width);
    assert.equal(png.height, height);
    const empty = decode(curvesPng([], options));
    for (const [label, rgb] of Object.entries(COLORS)) {
      // The legend sample alone has the colour too, so the data must add pixels beyond the empty chart's.
      const withData = countColor(png, rgb);
      const legendOnly = countColor(empty, rgb);
      assert.ok(legendOnly > 0, `${label} legend sample at ${width}x${height}`);
      assert.ok(
        withData > legendOnly + 50,
        `${label} line at ${width}x${height}: ${withData} vs ${legendOnly}`,
      );
    }
  }
});

test("curvesPng draws each line where curvesSvg puts its vertices", () => {
  const points = history(5, 3);
  const svg = curvesSvg(points, { numEpochs: 6 });
  const png = decode(curvesPng(points, { numEpochs: 6 }));
  // The solid line covers every vertex (within a pixel of rounding); dashed lines cover most of them.
  for (const [label, minShare] of [
    ["train loss", 1],
    ["train acc", 0.5],
    ["test acc", 0.5],
  ] as const) {
    const vertices = polylinePoints(svg, label);
    let hits = 0;
    for (const [x, y] of vertices) {
      let near = false;
      for (let dy = -1; dy <= 1 && !near; dy++) {
        for (let dx = -1; dx <= 1 && !near; dx++) {
          near = pixelIs(png, Math.round(x) + dx, Math.round(y) + dy, COLORS[label]);
        }
      }
      hits += near ? 1 : 0;
    }
    assert.ok(hits >= minShare * vertices.length, `${label}: ${hits} of ${vertices.length} vertices drawn`);
  }
});

test("curvesPng dashes train acc and test acc but not train loss", () => {
  // Flat lines at 0.5: the row through them is all colour for a solid line, interrupted for a dashed one.
  const flat = (key: "trainLoss" | "trainAcc" | "testAcc") => [1, 10].map((epoch) => ({ epoch, [key]: 0.5 }));
  for (const [key, label, dashed] of [
    ["trainLoss", "train loss", false],
    ["trainAcc", "train acc", true],
    ["testAcc", "test acc", true],
  ] as const) {
    const points = flat(key);
    const [[x0, y], [x1]] = polylinePoints(curvesSvg(points), label) as [[number, number], [number, number]];
    const png = decode(curvesPng(points));
    const row = Math.round(y);
    let on = 0;
    let off = 0;
    for (let x = Math.ceil(x0) + 2; x < Math.floor(x1) - 2; x++) {
      if (pixelIs(png, x, row, COLORS[label])) on++;
      else off++;
    }
    assert.ok(on > 0.5 * (on + off), `${label} mostly drawn: ${on} on, ${off} off`);
    if (dashed) assert.ok(off > 0.1 * (on + off), `${label} has gaps: ${on} on, ${off} off`);
    else assert.equal(off, 0, `${label} is solid`);
  }
});

test("curvesPng of no points, NaN-only points and a single point is a valid image", () => {
  const cases: CurvePoint[][] = [
    [],
    [{ epoch: Number.NaN }],
    [{ epoch: 1, trainLoss: Number.NaN, trainAcc: Number.NaN, testAcc: Number.NaN }],
    [{ epoch: 1, trainLoss: 2.3, trainAcc: 0.1, testAcc: 0.1 }],
    [{ epoch: 0.5, trainLoss: 1e6 }],
  ];
  for (const points of cases) {
    const png = decode(curvesPng(points, { numEpochs: 10 }));
    assert.equal(png.width, 640);
    assert.equal(png.height, 480);
  }
});

test("curves reject sizes too small for a chart and a non-integer numEpochs, with the exact message", () => {
  assert.throws(() => curvesSvg([], { width: 100 }), {
    name: "RangeError",
    message:
      "Expected width to be an integer in [160, 8192] but received 100; curves need room for axes, ticks and a legend",
  });
  assert.throws(() => curvesPng([], { height: 480.5 }), {
    message:
      "Expected height to be an integer in [160, 8192] but received 480.5; curves need room for axes, ticks and a legend",
  });
  assert.throws(() => curvesSvg([], { numEpochs: 0 }), {
    message: "Expected numEpochs to be a positive integer but received 0",
  });
  // The smallest allowed size still lays out (legend wraps onto several rows).
  const png = decode(curvesPng(history(2, 2), { width: 160, height: 160 }));
  assert.equal(png.width, 160);
});

test("bitmap font: every glyph is 5 columns by 7 or 9 rows, and drawText puts its pixels in place", () => {
  assert.ok(FONT_CHARACTERS.length >= 10 + 26 + 26 + 1);
  for (const ch of "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.") {
    assert.ok(FONT_CHARACTERS.includes(ch), `glyph for ${ch}`);
    const rows = glyphRows(ch);
    assert.equal(rows.length, GLYPH_HEIGHT);
    for (const row of rows) assert.match(row, new RegExp(`^[#.]{${GLYPH_WIDTH}}$`));
    if (ch !== " ") assert.ok(rows.join("").includes("#"), `${ch} has ink`);
  }
  // Distinct glyphs, so labels like "0.8" and "0.6" cannot render alike.
  const shapes = new Set(FONT_CHARACTERS.map((ch) => glyphRows(ch).join("/")));
  assert.equal(shapes.size, FONT_CHARACTERS.length);

  const scale = 2;
  const image = createImage(20, 20, [255, 255, 255]);
  drawText(image, "7", 3, 1, scale, [0, 0, 0]);
  const rows = glyphRows("7");
  for (let y = 0; y < 20; y++) {
    for (let x = 0; x < 20; x++) {
      const gx = Math.floor((x - 3) / scale);
      const gy = Math.floor((y - 1) / scale);
      const ink = gx >= 0 && gx < GLYPH_WIDTH && gy >= 0 && gy < GLYPH_HEIGHT && rows[gy]![gx] === "#";
      assert.equal(image.data[(y * 20 + x) * 4], ink ? 0 : 255, `pixel (${x}, ${y})`);
    }
  }
  assert.equal(textWidth("0.5", 1), 17);
  assert.deepEqual(glyphRows("\u00e9"), glyphRows("?"));
});
