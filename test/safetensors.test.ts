import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  SafetensorsError,
  type SafetensorsInput,
  writeSafetensors,
} from "../src/io/safetensors.js";

const FIXTURES = fileURLToPath(new URL("../../test/fixtures/safetensors/", import.meta.url));

/** A file from raw parts: the header text as given (no padding) and `data` bytes of data section. */
function rawFile(header: string, data: number | Uint8Array = 0, claimedLength?: bigint): Uint8Array {
  const headerBytes = new TextEncoder().encode(header);
  const dataBytes = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + headerBytes.length + dataBytes.length);
  new DataView(out.buffer).setBigUint64(0, claimedLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(dataBytes, 8 + headerBytes.length);
  return out;
}

function withByte(bytes: Uint8Array, index: number, value: number): Uint8Array {
  bytes[index] = value;
  return bytes;
}

function f32(values: number[]): Float32Array {
  return new Float32Array(values);
}

test("round trip keeps names in map order, shapes, values and metadata", () => {
  const tensors = new Map<string, SafetensorsInput>([
    ["features.10.weight", { shape: [2, 3], data: f32([1, -2, 3.5, 0, -0, 1e-30]) }],
    ["2", { shape: [], data: f32([7]) }],
    ["1", { shape: [3], data: f32([Number.NaN, Number.POSITIVE_INFINITY, -1]) }],
    ["empty", { shape: [0, 4], data: f32([]) }],
  ]);
  const bytes = encodeSafetensors(tensors, { format: "pt", note: 'quotes " and \u00e9' });
  const { tensors: back, metadata } = decodeSafetensors(bytes);
  assert.deepEqual([...back.keys()], ["features.10.weight", "2", "1", "empty"]);
  for (const [name, entry] of tensors) {
    const got = back.get(name)!;
    assert.equal(got.dtype, "F32");
    assert.equal(got.sourceDtype, "F32");
    assert.deepEqual(got.shape, entry.shape);
    assert.deepEqual(got.data, entry.data); // deepEqual compares NaN and -0 by Object.is
  }
  assert.deepEqual(metadata, { format: "pt", note: 'quotes " and \u00e9' });
});

test("encoded header is space-padded to a multiple of 8 with contiguous offsets", () => {
  const bytes = encodeSafetensors(
    new Map([
      ["a", { shape: [3], data: f32([1, 2, 3]) }],
      ["b", { shape: [1], data: f32([4]) }],
    ]),
  );
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.equal(
    header.trimEnd(),
    '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}',
  );
  assert.match(header, /^[^ ]*} *$/);
  assert.equal(bytes.length, 8 + n + 16);
  // Little-endian float32 bytes of 1.0 start the data section.
  assert.deepEqual([...bytes.subarray(8 + n, 8 + n + 4)], [0x00, 0x00, 0x80, 0x3f]);
});

test("an entry may be written as I64 (BatchNorm num_batches_tracked), values rounded", () => {
  const bytes = encodeSafetensors(
    new Map<string, SafetensorsInput>([
      ["bn.num_batches_tracked", { shape: [3], data: f32([7, 2.6, -3.5]), dtype: "I64" }],
    ]),
  );
  const entry = decodeSafetensors(bytes).tensors.get("bn.num_batches_tracked")!;
  assert.equal(entry.sourceDtype, "I64");
  assert.deepEqual(entry.data, f32([7, 3, -3])); // Math.round: -3.5 rounds towards +infinity
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(new DataView(bytes.buffer).getBigInt64(8 + n, true), 7n);
});

test("an empty map encodes a valid file with no tensors", () => {
  const { tensors, metadata } = decodeSafetensors(encodeSafetensors(new Map()));
  assert.equal(tensors.size, 0);
  assert.deepEqual(metadata, {});
});

test("encoding rejects inconsistent input with a clear message", () => {
  const cases: [Map<string, SafetensorsInput>, Record<string, string> | undefined, string][] = [
    [
      new Map([["w", { shape: [2, 3], data: f32([1, 2, 3, 4, 5]) }]]),
      undefined,
      'Expected tensor "w" data of length 6 (shape [2, 3]) but received 5',
    ],
    [
      new Map([["w", { shape: [2, -3], data: f32([]) }]]),
      undefined,
      'Expected tensor "w" shape to be an array of non-negative integers but received [2,-3]',
    ],
    [
      new Map([["__metadata__", { shape: [1], data: f32([1]) }]]),
      undefined,
      'Expected a tensor name other than "__metadata__" (reserved for metadata) but received it',
    ],
    [
      new Map<string, SafetensorsInput>([["n", { shape: [2], data: f32([1, Number.NaN]), dtype: "I64" }]]),
      undefined,
      'Expected finite values for I64 tensor "n" but received NaN at index 1',
    ],
    [
      new Map([["w", { shape: [1], data: f32([1]), dtype: "F16" as "F32" }]]),
      undefined,
      'Expected tensor "w" dtype to be "F32" or "I64" but received "F16"',
    ],
    [
      new Map([["w", { shape: [2], data: [1, 2] as unknown as Float32Array }]]),
      undefined,
      'Expected tensor "w" data to be a Float32Array but received [1,2]',
    ],
    [
      new Map(),
      { epoch: 3 as unknown as string },
      'Expected metadata["epoch"] to be a string but received 3',
    ],
  ];
  for (const [tensors, metadata, message] of cases) {
    assert.throws(() => encodeSafetensors(tensors, metadata), { message });
  }
});

test("reads the fixture written from PyTorch: F32, F16, BF16, F64, I64, I32, U8 and metadata", () => {
  const file = path.join(FIXTURES, "torch_mixed.safetensors");
  const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, "torch_mixed.expected.json"), "utf8")) as {
    metadata: Record<string, string>;
    tensors: Record<string, { dtype: string; shape: number[]; float32_bits: number[] }>;
  };
  const { tensors, metadata } = readSafetensors(file);
  assert.deepEqual(metadata, expected.metadata);
  // Map order is file (data offset) order, which the writer made sorted.
  assert.deepEqual([...tensors.keys()], Object.keys(expected.tensors));
  const seen = new Set<string>();
  for (const [name, want] of Object.entries(expected.tensors)) {
    const got = tensors.get(name)!;
    seen.add(want.dtype);
    assert.equal(got.sourceDtype, want.dtype, name);
    assert.deepEqual(got.shape, want.shape, name);
    // Bit-exact against torch's own .float() conversion; NaN payloads may differ, NaN-ness may not.
    const bits = new Int32Array(got.data.buffer, got.data.byteOffset, got.data.length);
    want.float32_bits.forEach((b, i) => {
      if (Number.isNaN(got.data[i])) assert.ok(Number.isNaN(new Float32Array(new Int32Array([b]).buffer)[0]));
      else assert.equal(bits[i], b, `${name}[${i}]`);
    });
  }
  assert.deepEqual([...seen].sort(), ["BF16", "F16", "F32", "F64", "I32", "I64", "U8"]);
  assert.ok(tensors.get("1.num_batches_tracked")!.data[0] === 1);
  assert.deepEqual(tensors.get("extra.u8")!.data, f32([0, 1, 128, 255]));
});

test("writeSafetensors and readSafetensors round trip through a file", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vgg-st-"));
  try {
    const file = path.join(dir, "model.safetensors");
    const data = f32(Array.from({ length: 1000 }, (_, i) => Math.sin(i)));
    writeSafetensors(file, new Map([["w", { shape: [10, 100], data }]]), { epoch: "3" });
    const back = readSafetensors(file);
    assert.deepEqual(back.tensors.get("w")!.data, data);
    assert.deepEqual(back.metadata, { epoch: "3" });
    assert.deepEqual(fs.readdirSync(dir), ["model.safetensors"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("errors from readSafetensors name the file", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vgg-st-"));
  try {
    const file = path.join(dir, "broken.safetensors");
    fs.writeFileSync(file, rawFile("{}", 4));
    assert.throws(() => readSafetensors(file), {
      name: "SafetensorsError",
      message:
        `Invalid safetensors file "${file}": Expected the tensors to cover the 4-byte data section ` +
        "but they end at 0, leaving 4 unused bytes",
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const T = (name: string, dtype: string, shape: number[], begin: number, end: number) =>
  `${JSON.stringify(name)}:{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":[${begin},${end}]}`;

const malformed: [string, Uint8Array, string][] = [
  [
    "truncated before the length",
    new Uint8Array(5),
    "Expected at least 8 bytes (the header length) but received 5; the file is truncated",
  ],
  [
    "header length larger than the file",
    rawFile("{}", 20, 1000n),
    "Expected a header length of at most 22 bytes (the rest of the file) but received 1000; the file is truncated",
  ],
  [
    "huge header length",
    rawFile("{}", 0, 2n ** 64n - 1n),
    "Expected a header length of at most 100000000 bytes but received 18446744073709551615; the file is corrupt",
  ],
  [
    "header length zero",
    rawFile("", 0),
    'Expected a header length of at least 2 bytes ("{}") but received 0',
  ],
  [
    "truncated data section",
    rawFile(`{${T("w", "F32", [2, 3], 0, 24)}}`, 16),
    'Expected tensor "w" data_offsets to lie within the 16-byte data section but received [0, 24]',
  ],
  [
    "invalid UTF-8",
    withByte(rawFile('{"?":{}}'), 10, 0xff),
    "Expected the header to be valid UTF-8 but it is not",
  ],
  ["not an object", rawFile("[1, 2]"), 'Expected the header to start with "{" but received "["'],
  ["byte-order mark", rawFile("\ufeff{}"), 'Expected the header to start with "{" but received "\ufeff"'],
  ["leading space", rawFile(" {}"), 'Expected the header to start with "{" but received " "'],
  [
    "bad JSON",
    rawFile('{"a":'),
    "Expected the header to be valid JSON but parsing failed: Unexpected end of JSON input",
  ],
  [
    "trailing comma",
    rawFile('{"a":1,}'),
    "Expected the header to be valid JSON but parsing failed: Expected double-quoted property name in JSON at position 7",
  ],
  [
    "deeply nested JSON",
    rawFile(`{"__metadata__":{"a":${"[".repeat(100_000)}${"]".repeat(100_000)}}}`),
    "Expected the header JSON to nest at most 8 levels deep but received deeper nesting at character 27",
  ],
  [
    "duplicate tensor name",
    rawFile(`{${T("w", "F32", [1], 0, 4)},${T("w", "F32", [1], 4, 8)}}`, 8),
    'Expected unique keys in the header but "w" appears twice at the top level',
  ],
  [
    "duplicate name spelled with an escape",
    rawFile(`{${T("ab", "F32", [1], 0, 4)},"\\u0061b":{}}`, 4),
    'Expected unique keys in the header but "ab" appears twice at the top level',
  ],
  [
    "duplicate field inside a tensor",
    rawFile('{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', 4),
    'Expected unique keys in the header but "dtype" appears twice inside "w"',
  ],
  [
    "unknown dtype",
    rawFile(`{${T("w", "F8_E4M3", [4], 0, 4)}}`, 4),
    'Expected tensor "w" dtype to be one of F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8 ' +
      'but received "F8_E4M3" (BOOL and float8 dtypes are not supported)',
  ],
  [
    "missing dtype",
    rawFile('{"w":{"shape":[1],"data_offsets":[0,4]}}', 4),
    'Expected tensor "w" dtype to be one of F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8 ' +
      "but received nothing (BOOL and float8 dtypes are not supported)",
  ],
  [
    "shape/byte mismatch",
    rawFile(`{${T("w", "F32", [2, 3], 0, 20)}}`, 20),
    'Expected tensor "w" to span 24 bytes (shape [2, 3] of F32, 4 bytes each) but data_offsets [0, 20] span 20 bytes',
  ],
  [
    "shape whose product overflows float64",
    rawFile(`{${T("w", "F16", [2 ** 40, 2 ** 40], 0, 8)}}`, 8),
    'Expected tensor "w" to span 2417851639229258349412352 bytes (shape [1099511627776, 1099511627776] of F16, ' +
      "2 bytes each) but data_offsets [0, 8] span 8 bytes",
  ],
  [
    "negative shape",
    rawFile(`{${T("w", "F32", [-1], 0, 0)}}`),
    'Expected tensor "w" shape to be an array of non-negative integers but received [-1]',
  ],
  [
    "fractional shape",
    rawFile(`{${T("w", "F32", [1.5], 0, 4)}}`, 4),
    'Expected tensor "w" shape to be an array of non-negative integers but received [1.5]',
  ],
  [
    "begin after end",
    rawFile(`{${T("w", "F32", [1], 8, 4)}}`, 8),
    'Expected tensor "w" data_offsets to be [begin, end] with 0 <= begin <= end but received [8,4]',
  ],
  [
    "offsets out of range",
    rawFile(`{${T("w", "F32", [1], 2 ** 40, 2 ** 40 + 4)}}`, 4),
    'Expected tensor "w" data_offsets to lie within the 4-byte data section but received [1099511627776, 1099511627780]',
  ],
  [
    "overlapping offsets",
    rawFile(`{${T("a", "F32", [2], 0, 8)},${T("b", "F32", [2], 4, 12)}}`, 12),
    'Expected tensor "b" data_offsets [4, 12] not to overlap tensor "a" [0, 8]',
  ],
  [
    "empty tensor inside another",
    rawFile(`{${T("a", "F32", [2], 0, 8)},${T("e", "F32", [0], 4, 4)}}`, 8),
    'Expected tensor "e" data_offsets [4, 4] not to overlap tensor "a" [0, 8]',
  ],
  [
    "hole between tensors",
    rawFile(`{${T("a", "F32", [1], 0, 4)},${T("b", "F32", [1], 8, 12)}}`, 12),
    'Expected tensor "b" data_offsets [8, 12] to begin at 4, right after tensor "a", but it leaves a hole of 4 bytes',
  ],
  [
    "hole at the start",
    rawFile(`{${T("a", "F32", [1], 4, 8)}}`, 8),
    'Expected tensor "a" data_offsets [4, 8] to begin at 0, right after the start of the data section, ' +
      "but it leaves a hole of 4 bytes",
  ],
  [
    "trailing bytes",
    rawFile(`{${T("a", "F32", [1], 0, 4)}}`, 6),
    "Expected the tensors to cover the 6-byte data section but they end at 4, leaving 2 unused bytes",
  ],
  [
    "tensor entry not an object",
    rawFile('{"w":[0,4]}', 4),
    'Expected tensor "w" to be an object {dtype, shape, data_offsets} but received [0,4]',
  ],
  [
    "unknown tensor field",
    rawFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"strides":[1]}}', 4),
    'Expected tensor "w" to have only dtype, shape and data_offsets but received field "strides"',
  ],
  [
    "metadata value not a string",
    rawFile('{"__metadata__":{"epoch":3}}'),
    'Expected __metadata__["epoch"] to be a string but received 3',
  ],
  [
    "metadata not an object",
    rawFile('{"__metadata__":"x"}'),
    'Expected __metadata__ to be an object of strings but received "x"',
  ],
];

test("malformed files are rejected with exact messages", () => {
  for (const [label, bytes, message] of malformed) {
    assert.throws(
      () => decodeSafetensors(bytes, "bad.safetensors"),
      (error: unknown) => {
        assert.ok(error instanceof SafetensorsError, `${label}: ${error}`);
        assert.equal(error.message, `Invalid safetensors file "bad.safetensors": ${message}`, label);
        return true;
      },
    );
  }
});

test("without a source the message says 'data'", () => {
  assert.throws(() => decodeSafetensors(new Uint8Array(3)), {
    message:
      "Invalid safetensors data: Expected at least 8 bytes (the header length) but received 3; the file is truncated",
  });
});

test("a header over the cap is rejected from its length alone, before any of it is decoded", () => {
  // 100 MB of real JSON padding: the claimed length is checked before a byte of it is decoded.
  const header = 100_000_008;
  const bytes = new Uint8Array(8 + header).fill(0x20);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(header), true);
  bytes[8] = 0x7b;
  bytes[9] = 0x7d;
  // Count the text decodes and JSON parses the refusal costs: none.
  const { decode } = TextDecoder.prototype;
  const { parse } = JSON;
  let decoded = 0;
  TextDecoder.prototype.decode = function (this: TextDecoder, ...args) {
    decoded++;
    return decode.apply(this, args);
  };
  JSON.parse = (...args: Parameters<typeof JSON.parse>) => {
    decoded++;
    return parse(...args);
  };
  try {
    assert.throws(() => decodeSafetensors(bytes), {
      message:
        "Invalid safetensors data: Expected a header length of at most 100000000 bytes but received 100000008; the file is corrupt",
    });
  } finally {
    TextDecoder.prototype.decode = decode;
    JSON.parse = parse;
  }
  assert.equal(decoded, 0, "the header was decoded before its length was checked");
  // The same file is fine when the caller raises the cap.
  assert.equal(decodeSafetensors(bytes, undefined, { maxHeaderBytes: header }).tensors.size, 0);
});

test("header claims never drive allocation: a tiny file claiming a huge tensor fails fast", () => {
  const bytes = rawFile(`{${T("w", "F32", [2 ** 30, 2 ** 20], 0, 2 ** 52)}}`, 8);
  const before = process.memoryUsage().arrayBuffers;
  assert.throws(() => decodeSafetensors(bytes), SafetensorsError);
  assert.ok(process.memoryUsage().arrayBuffers - before < 1_000_000);
});

test('a "__proto__" key stays an ordinary name, for tensors and metadata alike', () => {
  const bytes = rawFile(`{"__metadata__":{"__proto__":"x"},${T("__proto__", "F32", [1], 0, 4)}}`, 4);
  const { tensors, metadata } = decodeSafetensors(bytes);
  assert.equal(Object.getPrototypeOf(metadata), Object.prototype);
  assert.deepEqual(Object.entries(metadata), [["__proto__", "x"]]);
  assert.deepEqual([...tensors.keys()], ["__proto__"]);
  const again = decodeSafetensors(encodeSafetensors(new Map(), metadata)).metadata;
  assert.deepEqual(Object.entries(again), [["__proto__", "x"]]);
});
