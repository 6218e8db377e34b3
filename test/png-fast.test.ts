// The direct PNG decoder (src/io/png-fast.ts) against pngjs + rgbaToImage, the path it short-cuts: the same
// floats bit for bit for every colour type it takes, every row filter, odd sizes, split image data and
// ancillary chunks; null (so that pngjs decides) for what it does not take; and on randomly mutated files,
// whenever it answers, pngjs answers the same. The native addon's decoder (native/png.cc, through
// src/io/png-native.ts) takes the same files and gives the same floats, on all of these and every mutation.
import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import fc from "fast-check";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { loadNativeAddon } from "../src/backend/native.js";
import { decodeImage, rgbaToImage, toGrey } from "../src/io/image.js";
import { crc32Table, decodePngFast, decodePngFastGrey } from "../src/io/png-fast.js";
import { decodePngNative, decodePngNativeGrey } from "../src/io/png-native.js";
import { vgg } from "../src/models/vgg.js";
import { bytesToInput, imageToInput } from "../src/serve/classify.js";
import { crc32 } from "./png-crc.js";

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** The chunks of a PNG file (after the signature), as [type, data]. */
function chunks(png: Uint8Array): [string, Buffer][] {
  const b = Buffer.from(png);
  const out: [string, Buffer][] = [];
  for (let at = 8; at < b.length; ) {
    const length = b.readUInt32BE(at);
    out.push([b.toString("latin1", at + 4, at + 8), b.subarray(at + 8, at + 8 + length)]);
    at += 12 + length;
  }
  return out;
}

function assemble(parts: [string, Uint8Array][]): Buffer {
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    ...parts.map(([t, d]) => chunk(t, d)),
  ]);
}

function randomRgba(width: number, height: number, seed: number): Buffer {
  const rgba = Buffer.alloc(4 * width * height);
  let s = seed >>> 0;
  for (let i = 0; i < rgba.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // Smooth areas as well as noise, so that every filter sees both.
    rgba[i] = i % 7 < 3 ? (i >> 3) & 0xff : s >>> 24;
  }
  return rgba;
}

function encode(
  width: number,
  height: number,
  colorType: 0 | 2 | 4 | 6,
  filterType: number,
  seed: number,
): Buffer {
  const png = new PNG({ width, height });
  png.data = randomRgba(width, height, seed);
  return PNG.sync.write(png, { colorType, inputColorType: 6, filterType } as Parameters<
    typeof PNG.sync.write
  >[1]);
}

function viaPngjs(bytes: Uint8Array) {
  const png = PNG.sync.read(Buffer.from(bytes));
  return rgbaToImage(png.data, png.width, png.height);
}

// `npm install` builds the addon, so a missing addon is a failure, not a skip.
const addon = loadNativeAddon();
if (addon instanceof Error) throw addon;

const bits = (a: { data: Float32Array } | null) => (a ? Buffer.from(a.data.buffer) : null);

/** The native decoder answers as png-fast.ts does: null for the same files, else the same size and floats. */
function assertNativeSame(bytes: Uint8Array, maxPixels: number, what: string): void {
  for (const [js, native, kind] of [
    [decodePngFast, decodePngNative, "colour"],
    [decodePngFastGrey, decodePngNativeGrey, "grey"],
  ] as const) {
    const want = js(bytes, maxPixels);
    const got = native(bytes, maxPixels);
    assert.equal(got === null, want === null, `${what} (${kind}): native ${got ? "took" : "refused"} it`);
    if (!got || !want) continue;
    assert.deepEqual([got.width, got.height], [want.width, want.height], `${what} (${kind})`);
    assert.deepEqual(bits(got), bits(want), `${what} (${kind}): different native floats`);
  }
}

function assertSame(bytes: Uint8Array, what: string): void {
  assertNativeSame(bytes, 1e8, what);
  const fast = decodePngFast(bytes, 1e8);
  assert.ok(fast, `${what}: the fast path refused it`);
  const slow = viaPngjs(bytes);
  assert.equal(fast.width, slow.width, what);
  assert.equal(fast.height, slow.height, what);
  assert.deepEqual(Buffer.from(fast.data.buffer), Buffer.from(slow.data.buffer), `${what}: different floats`);
  assertSameGrey(bytes, slow, what);
}

/** The luma plane straight from the bytes is toGrey of the colour planes, bit for bit. */
function assertSameGrey(bytes: Uint8Array, slow: ReturnType<typeof viaPngjs>, what: string): void {
  const grey = decodePngFastGrey(bytes, 1e8);
  assert.ok(grey, `${what}: the fast grey path refused it`);
  assert.equal(grey.width, slow.width, what);
  assert.equal(grey.height, slow.height, what);
  assert.deepEqual(
    Buffer.from(grey.data.buffer),
    Buffer.from(toGrey(slow).buffer),
    `${what}: different luma`,
  );
}

test("every colour type, filter and odd size decodes to pngjs's floats bit for bit", () => {
  let seed = 1;
  for (const colorType of [0, 2, 4, 6] as const)
    for (const filterType of [0, 1, 2, 3, 4, -1])
      for (const [w, h] of [
        [1, 1],
        [7, 3],
        [32, 32],
        [33, 17],
      ])
        assertSame(
          encode(w, h, colorType, filterType, seed++),
          `colour ${colorType} filter ${filterType} ${w}x${h}`,
        );
});

test("image data split over several IDAT chunks, and ancillary chunks, decode the same", () => {
  const png = encode(29, 11, 6, -1, 7);
  const parts = chunks(png);
  const idat = Buffer.concat(parts.filter(([t]) => t === "IDAT").map(([, d]) => d));
  const ihdr = parts[0][1];
  const gamma = Buffer.alloc(4);
  gamma.writeUInt32BE(45455);
  const split = assemble([
    ["IHDR", ihdr],
    ["gAMA", gamma],
    ["tEXt", Buffer.from("Comment\0split", "latin1")],
    ["IDAT", idat.subarray(0, 5)],
    ["IDAT", idat.subarray(5, 40)],
    ["IDAT", idat.subarray(40)],
    ["IEND", new Uint8Array(0)],
  ]);
  assertSame(split, "split IDAT");
});

test("what the fast path does not take returns null", () => {
  const png = encode(9, 5, 2, -1, 3);
  const [ihdr, ...rest] = chunks(png);
  const withIhdr = (edit: (d: Buffer) => void) => {
    const d = Buffer.from(ihdr[1]);
    edit(d);
    return assemble([["IHDR", d], ...rest]);
  };
  const rows = (bytesPerRow: number, h: number) => deflateSync(Buffer.alloc(h * (bytesPerRow + 1)));
  const cases: [string, Uint8Array][] = [
    [
      "16 bits per sample",
      PNG.sync.write(Object.assign(new PNG({ width: 3, height: 2 }), { data: randomRgba(3, 2, 1) }), {
        bitDepth: 16,
      } as Parameters<typeof PNG.sync.write>[1]),
    ],
    ["interlaced", withIhdr((d) => (d[12] = 1))],
    ["palette", withIhdr((d) => (d[9] = 3))],
    ["a transparent colour (tRNS)", assemble([ihdr, ["tRNS", Buffer.from([0, 1, 0, 2, 0, 3])], ...rest])],
    ["an unknown critical chunk", assemble([ihdr, ["ABCD", Buffer.from([1])], ...rest])],
    [
      "a bad checksum",
      (() => {
        const b = Buffer.from(png);
        b[b.length - 20] ^= 1;
        return b;
      })(),
    ],
    ["no IEND", Buffer.from(png).subarray(0, png.length - 12)],
    ["too few rows", assemble([ihdr, ["IDAT", rows(27, 4)], ["IEND", new Uint8Array(0)]])],
    [
      "an unknown row filter",
      assemble([ihdr, ["IDAT", deflateSync(Buffer.alloc(5 * 28, 9))], ["IEND", new Uint8Array(0)]]),
    ],
    ["more pixels than allowed", withIhdr((d) => d.writeUInt32BE(1 << 20, 0))],
  ];
  for (const [what, bytes] of cases) {
    assert.equal(decodePngFast(bytes, 1e6), null, what);
    assert.equal(decodePngFastGrey(bytes, 1e6), null, `${what} (grey)`);
    assert.equal(decodePngNative(bytes, 1e6), null, `${what} (native)`);
    assert.equal(decodePngNativeGrey(bytes, 1e6), null, `${what} (native grey)`);
  }
});

test("image data streams at the edges: both decoders take and refuse the same", () => {
  const png = encode(9, 5, 2, -1, 3);
  const [ihdr, ...rest] = chunks(png);
  const stream = Buffer.concat(rest.filter(([t]) => t === "IDAT").map(([, d]) => d));
  const withData = (...idat: Uint8Array[]) =>
    assemble([ihdr, ...idat.map((d): [string, Uint8Array] => ["IDAT", d]), ["IEND", new Uint8Array(0)]]);
  const badCheck = Buffer.from(stream);
  badCheck[badCheck.length - 1] ^= 1;
  const dictionary = Buffer.from(stream);
  dictionary[1] |= 0x20; // FDICT: a preset dictionary nobody gave
  dictionary[1] += 31 - ((dictionary[0] * 256 + dictionary[1]) % 31 || 31); // keep the header check valid
  const cases: [string, Uint8Array, boolean][] = [
    ["bytes after the stream's end (ignored)", withData(stream, Buffer.from([1, 2, 3])), true],
    [
      "an empty IDAT between two halves",
      withData(stream.subarray(0, 7), new Uint8Array(0), stream.subarray(7)),
      true,
    ],
    ["one IDAT per byte", withData(...Array.from(stream, (b) => Buffer.from([b]))), true],
    ["a row more than the header says", withData(deflateSync(Buffer.alloc(6 * 28))), false],
    ["a byte more than the header says", withData(deflateSync(Buffer.alloc(5 * 28 + 1))), false],
    ["the stream cut short", withData(stream.subarray(0, stream.length - 2)), false],
    ["a wrong Adler-32", withData(badCheck), false],
    ["a preset dictionary", withData(dictionary), false],
    ["not a zlib stream", withData(Buffer.from("not zlib at all")), false],
  ];
  for (const [what, bytes, taken] of cases) {
    assert.equal(decodePngFast(bytes, 1e6) !== null, taken, what);
    assertNativeSame(bytes, 1e6, what);
  }
});

test("on mutated files, whenever the fast path answers, pngjs answers the same", () => {
  const bases = [encode(6, 4, 0, -1, 11), encode(5, 5, 4, -1, 12), encode(8, 3, 6, -1, 13)];
  let answered = 0;
  fc.assert(
    fc.property(
      fc.nat(bases.length - 1),
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 3 }),
      (which, edits) => {
        const bytes = Buffer.from(bases[which]);
        for (const [at, v] of edits) bytes[at % bytes.length] = v;
        assertNativeSame(bytes, 1e6, "mutated");
        const fast = decodePngFast(bytes, 1e6);
        assert.equal(
          decodePngFastGrey(bytes, 1e6) === null,
          fast === null,
          "the grey path takes the same files",
        );
        if (!fast) return;
        answered++;
        const slow = viaPngjs(bytes);
        assert.deepEqual(Buffer.from(fast.data.buffer), Buffer.from(slow.data.buffer));
        assertSameGrey(bytes, slow, "mutated");
      },
    ),
    { seed: 4242, numRuns: 3000 },
  );
  // Edits that land on a checksum itself, or change a byte to its own value, leave a valid file.
  assert.ok(answered > 0);
});

test("the fallback CRC-32 (Node before 20.15) equals the reference one", () => {
  const bytes = randomRgba(37, 3, 5);
  for (const [from, to] of [
    [0, 0],
    [0, 1],
    [3, 200],
    [0, bytes.length],
  ])
    assert.equal(crc32Table(bytes, from, to), crc32(bytes.subarray(from, to)), `bytes ${from}..${to}`);
});

test("bytesToInput (the luma path for 1-channel models) gives imageToInput(decodeImage()) bit for bit", () => {
  const rgba = randomRgba(20, 13, 9);
  const files: [string, Uint8Array][] = [
    ["RGBA PNG", encode(20, 13, 6, -1, 21)],
    ["grey + alpha PNG", encode(32, 32, 4, -1, 22)],
    ["grey PNG", encode(28, 28, 0, 4, 23)],
    [
      "16-bit PNG (pngjs)",
      PNG.sync.write(Object.assign(new PNG({ width: 20, height: 13 }), { data: rgba }), {
        bitDepth: 16,
      } as Parameters<typeof PNG.sync.write>[1]),
    ],
    ["JPEG", jpeg.encode({ data: rgba, width: 20, height: 13 }, 90).data],
  ];
  const grey = vgg([[1, 4]], { inChannels: 1, inputSize: 32, numClasses: 10, widthRatio: 1 }).config;
  const rgb = vgg([[1, 4]], { inChannels: 3, inputSize: 32, numClasses: 10, widthRatio: 1 }).config;
  for (const [what, bytes] of files)
    for (const cfg of [grey, rgb])
      for (const invert of [false, true])
        for (const resize of [undefined, 32, 13]) {
          const want = imageToInput(decodeImage(bytes, what), cfg, invert, resize);
          const got = bytesToInput(bytes, what, cfg, invert, resize);
          assert.deepEqual(
            Buffer.from(got.buffer, got.byteOffset, got.byteLength),
            Buffer.from(want.buffer, want.byteOffset, want.byteLength),
            `${what}, ${cfg.inChannels} channel(s), invert ${invert}, resize ${resize}`,
          );
        }
  // The same errors as decodeImage.
  for (const bad of [new Uint8Array(0), Buffer.from("not an image"), encode(4, 4, 6, 0, 1).subarray(0, 40)])
    assert.throws(
      () => bytesToInput(bad, "bad.png", grey),
      (e: Error) => {
        assert.throws(() => decodeImage(bad, "bad.png"), { message: e.message });
        return true;
      },
    );
});
