// Property-based and mutation fuzzing of the safetensors reader and writer. Every input must either
// decode to self-consistent tensors or throw a SafetensorsError: never another error type (a RangeError
// from a typed-array allocation, a stack overflow), never a hang. Seeds are fixed so failures replay.
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import {
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsContents,
  SafetensorsError,
  type SafetensorsInput,
} from "../src/io/safetensors.js";

const FIXTURE = fileURLToPath(
  new URL("../../test/fixtures/safetensors/torch_mixed.safetensors", import.meta.url),
);

/** Decodes, asserting the only failure mode is SafetensorsError and any success is self-consistent. */
function decodeOrReject(bytes: Uint8Array): SafetensorsContents | undefined {
  let result: SafetensorsContents;
  try {
    result = decodeSafetensors(bytes, "fuzz.safetensors");
  } catch (error) {
    assert.ok(error instanceof SafetensorsError, `unexpected ${String(error)}`);
    assert.match(error.message, /^Invalid safetensors file "fuzz\.safetensors": Expected /);
    return undefined;
  }
  for (const [name, entry] of result.tensors) {
    assert.equal(
      entry.data.length,
      entry.shape.reduce((n, d) => n * d, 1),
      name,
    );
    assert.ok(entry.data.length <= bytes.length, name); // at most one element per byte of input
  }
  return result;
}

test("mutated and truncated real files decode consistently or fail with SafetensorsError", () => {
  const original = new Uint8Array(fs.readFileSync(FIXTURE));
  const mutation = fc.record({
    edits: fc.array(fc.tuple(fc.nat({ max: original.length - 1 }), fc.integer({ min: 0, max: 255 })), {
      maxLength: 6,
    }),
    cut: fc.option(fc.nat({ max: original.length })),
  });
  let accepted = 0;
  fc.assert(
    fc.property(mutation, ({ edits, cut }) => {
      const bytes = original.slice(0, cut ?? original.length);
      for (const [at, value] of edits) if (at < bytes.length) bytes[at] = value;
      if (decodeOrReject(bytes) !== undefined) accepted++;
    }),
    { seed: 20240601, numRuns: 3000 },
  );
  assert.ok(accepted > 0, "some mutations (in tensor data) must still decode");
});

// Headers that are valid JSON and nearly valid safetensors, so the checks past JSON.parse get exercised.
const dtypeArb = fc.constantFrom("F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "f32", "");
const entryArb = fc.record({
  dtype: dtypeArb,
  shape: fc.array(fc.oneof(fc.nat({ max: 5 }), fc.integer({ min: -2, max: 2 ** 40 }), fc.double()), {
    maxLength: 3,
  }),
  data_offsets: fc.tuple(fc.nat({ max: 64 }), fc.nat({ max: 64 })),
});
const headerArb = fc.record({
  entries: fc.dictionary(
    fc.string({ maxLength: 4 }),
    fc.oneof({ weight: 5, arbitrary: entryArb }, fc.jsonValue()),
    {
      maxKeys: 4,
    },
  ),
  metadata: fc.option(fc.dictionary(fc.string({ maxLength: 3 }), fc.oneof(fc.string(), fc.integer()))),
  dataLength: fc.nat({ max: 64 }),
});

test("random near-valid headers decode consistently or fail with SafetensorsError", () => {
  let accepted = 0;
  fc.assert(
    fc.property(headerArb, ({ entries, metadata, dataLength }) => {
      const header = metadata === null ? entries : { ...entries, __metadata__: metadata };
      const text = new TextEncoder().encode(JSON.stringify(header));
      const bytes = new Uint8Array(8 + text.length + dataLength);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(text.length), true);
      bytes.set(text, 8);
      if (decodeOrReject(bytes) !== undefined) accepted++;
    }),
    { seed: 7, numRuns: 3000 },
  );
  assert.ok(accepted > 0);
});

test("encode then decode is the identity on random tensors, names and metadata", () => {
  const name = fc.string({ unit: "binary", maxLength: 8 }).filter((s) => s !== "__metadata__");
  const tensor = fc.array(fc.nat({ max: 4 }), { maxLength: 3 }).chain((shape) =>
    fc
      .float32Array({
        minLength: shape.reduce((n, d) => n * d, 1),
        maxLength: shape.reduce((n, d) => n * d, 1),
      })
      .map((data): SafetensorsInput => ({ shape, data })),
  );
  const input = fc.record({
    tensors: fc.uniqueArray(fc.tuple(name, tensor), { selector: ([n]) => n, maxLength: 5 }),
    metadata: fc.dictionary(fc.string({ unit: "binary", maxLength: 5 }), fc.string({ unit: "binary" }), {
      maxKeys: 3,
    }),
  });
  fc.assert(
    fc.property(input, ({ tensors, metadata }) => {
      const map = new Map(tensors);
      const bytes = encodeSafetensors(map, metadata);
      const back = decodeSafetensors(bytes);
      assert.deepEqual([...back.tensors.keys()], [...map.keys()]);
      for (const [key, entry] of map) {
        assert.deepEqual(back.tensors.get(key)!.shape, entry.shape);
        assert.deepEqual(back.tensors.get(key)!.data, entry.data);
      }
      assert.deepEqual(back.metadata, Object.fromEntries(Object.entries(metadata)));
    }),
    { seed: 11, numRuns: 200 },
  );
});

test("duplicate keys are found wherever they are and however they are spelled", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 6 }), fc.boolean(), (key, inMetadata) => {
      // Spell the second copy with every UTF-16 unit \u-escaped; JSON.parse would silently keep one.
      const escaped = `"${key
        .split("")
        .map((ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`)
        .join("")}"`;
      const first = JSON.stringify(key);
      const text = inMetadata
        ? `{"__metadata__":{${first}:"a",${escaped}:"b"}}`
        : `{${first}:{},${escaped}:{}}`;
      const bytes = new Uint8Array(8 + Buffer.byteLength(text));
      new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length - 8), true);
      bytes.set(Buffer.from(text), 8);
      const where = inMetadata ? 'inside "__metadata__"' : "at the top level";
      assert.throws(() => decodeSafetensors(bytes), {
        message: `Invalid safetensors data: Expected unique keys in the header but ${first} appears twice ${where}`,
      });
    }),
    { seed: 3, numRuns: 500 },
  );
});
