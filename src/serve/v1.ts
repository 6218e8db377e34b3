// POST /v1/classify: one image as the body (PNG or JPEG, any size, colour or grey), or a JSON batch
// {"images": [base64, ...], "top": k, "invert": bool}; answers the top-k classes with probabilities, the
// numbers `vgg predict` prints for the same files. `?top=k` and `?invert=1` set the same for an image body.
import type { IncomingMessage } from "node:http";
import type { ClientTie } from "./batcher.js";
import { HttpError, mediaType, parseJson } from "./body.js";
import { bytesToInput, type RankedClass, topClasses } from "./classify.js";
import type { ModelService } from "./service.js";

const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "application/octet-stream"]);
export const DEFAULT_TOP = 5;

interface ClassifyRequest {
  images: Uint8Array[];
  labels: string[];
  top: number;
  invert: boolean;
  batch: boolean;
}

function topParameter(v: unknown, classes: number): number {
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
    throw new HttpError(400, `Expected top to be a positive integer but received ${JSON.stringify(v)}`);
  return Math.min(n, classes);
}

function fromJson(body: Buffer, classes: number): ClassifyRequest {
  const json = parseJson(body) as { images?: unknown; top?: unknown; invert?: unknown } | null;
  const images = json?.images;
  if (!Array.isArray(images) || images.length === 0 || images.some((s) => typeof s !== "string"))
    throw new HttpError(
      400,
      'Expected a JSON object {"images": ["<base64 PNG or JPEG>", ...]} with at least one image',
    );
  if (json?.invert !== undefined && typeof json.invert !== "boolean")
    throw new HttpError(
      400,
      `Expected invert to be true or false but received ${JSON.stringify(json.invert)}`,
    );
  return {
    // A data URL's "data:image/png;base64," prefix is allowed.
    images: (images as string[]).map((s) => Buffer.from(s.replace(/^data:[^,]*;base64,/, ""), "base64")),
    labels: images.map((_, i) => `images[${i}]`),
    top: json?.top === undefined ? DEFAULT_TOP : topParameter(json.top, classes),
    invert: json?.invert === true,
    batch: true,
  };
}

export function parseClassifyRequest(
  req: IncomingMessage,
  body: Buffer,
  query: URLSearchParams,
  classes: number,
): ClassifyRequest {
  const type = mediaType(req);
  if (type === "application/json") return fromJson(body, classes);
  if (!IMAGE_TYPES.has(type))
    throw new HttpError(
      415,
      `Expected Content-Type image/png, image/jpeg, application/octet-stream or application/json but received "${type || "none"}"`,
    );
  const invert = query.get("invert");
  if (invert !== null && !["0", "1", "true", "false"].includes(invert))
    throw new HttpError(400, `Expected invert to be 0, 1, true or false but received "${invert}"`);
  return {
    images: [body],
    labels: ["image"],
    top: query.has("top") ? topParameter(query.get("top"), classes) : DEFAULT_TOP,
    invert: invert === "1" || invert === "true",
    batch: false,
  };
}

/** Decodes and classifies; answers {"top": [...]} for an image body, {"results": [{"top": [...]}, ...]} for JSON. */
export async function classify(
  svc: ModelService,
  req: IncomingMessage,
  body: Buffer,
  query: URLSearchParams,
  tie?: ClientTie,
): Promise<{ top: RankedClass[] } | { results: { top: RankedClass[] }[] }> {
  const r = parseClassifyRequest(req, body, query, svc.config.numClasses);
  if (r.images.length > svc.maxImagesPerRequest)
    throw new HttpError(
      400,
      `Expected at most ${svc.maxImagesPerRequest} images per request but received ${r.images.length}`,
    );
  const size = svc.imageSize;
  const inputs = r.images.map((bytes, i) => {
    try {
      return bytesToInput(bytes, r.labels[i], svc.config, r.invert, svc.resize);
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
  });
  // One image is its own input; several are laid end to end.
  let input = inputs[0];
  if (inputs.length > 1) {
    input = new Float32Array(inputs.length * size);
    for (const [i, x] of inputs.entries()) input.set(x, i * size);
  }
  const logits = await svc.infer(input, r.images.length, tie);
  const k = svc.config.numClasses;
  const results = r.images.map((_, i) => ({
    top: topClasses(logits.subarray(i * k, (i + 1) * k), r.top, svc.names),
  }));
  return r.batch ? { results } : results[0];
}
