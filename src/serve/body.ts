// Request bodies and answers of the inference API: a body read up to a size limit, errors that carry
// their HTTP status, and JSON answers (the Open Inference Protocol's errors are {"error": "..."}).
import type { IncomingMessage, ServerResponse } from "node:http";
import { SECURITY_HEADERS } from "../web/http.js";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    ...headers,
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** The media type of a request without its parameters ("application/json; charset=utf-8" -> "application/json"). */
export function mediaType(req: IncomingMessage): string {
  return (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
}

/**
 * The whole body, refused with 413 as soon as it is known to exceed `limit` bytes: at once from its
 * Content-Length, else when the bytes received pass it (the rest is then read and dropped, so that the
 * client, still sending, receives the answer instead of a reset connection).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (size: string) =>
    new HttpError(413, `Expected a request body of at most ${limit} bytes but received ${size}`, {
      Connection: "close",
    });
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.reject(tooLarge(String(declared)));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let refused = false;
    req.on("data", (chunk: Buffer) => {
      if (refused) return;
      received += chunk.length;
      if (received > limit) {
        refused = true;
        chunks.length = 0;
        reject(tooLarge(`more (${received} so far)`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!refused) resolve(Buffer.concat(chunks, received));
    });
    req.on("error", reject);
  });
}

/** Parses a JSON body, or 400 with the parser's reason. */
export function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (e) {
    throw new HttpError(400, `Expected a JSON body but it does not parse: ${(e as Error).message}`);
  }
}
