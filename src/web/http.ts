// The small HTTP layer both web servers share: static files that cannot escape their folder, request
// bodies refused past a size limit, a Host check (a page on 127.0.0.1 must not answer to another name a
// DNS-rebinding site points at it) and the headers every response carries.
import { createReadStream, realpathSync, statSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, resolve, sep } from "node:path";

/** Largest request body accepted; the servers only serve GETs, so anything bigger is refused early. */
export const MAX_BODY_BYTES = 64 * 1024;

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".map": "application/json",
  ".safetensors": "application/octet-stream",
};

const SECURITY_HEADERS = {
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "Content-Security-Policy":
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'",
};

export function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * Resolves a URL path inside `root`, or returns null when it would leave it (`..`, encoded `%2e%2e`,
 * backslashes, NUL bytes, symlinks pointing out) or names nothing readable.
 */
export function resolveStatic(root: string, urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return null;
  const realRoot = realpathSync(root);
  const candidate = resolve(realRoot, `.${decoded.startsWith("/") ? "" : "/"}${decoded}`);
  if (candidate !== realRoot && !candidate.startsWith(realRoot + sep)) return null;
  let real: string;
  try {
    real = realpathSync(candidate);
    if (!statSync(real).isFile()) return null;
  } catch {
    return null;
  }
  return real.startsWith(realRoot + sep) ? real : null;
}

/** Streams a file with its content type; `cache` false for files that change (weights of a running run). */
export function sendFile(req: IncomingMessage, res: ServerResponse, path: string, cache = true): void {
  const size = statSync(path).size;
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    "Content-Type": CONTENT_TYPES[extname(path)] ?? "application/octet-stream",
    "Content-Length": size,
    "Cache-Control": cache ? "max-age=60" : "no-store",
  });
  if (req.method === "HEAD") res.end();
  else createReadStream(path).pipe(res);
}

/** The Host header values a server answers, kept for the last host and port asked (one per server). */
let hostsFor: { host: string; port: number; names: Set<string> } | null = null;

function allowedHosts(host: string, port: number): Set<string> {
  if (hostsFor?.host === host && hostsFor.port === port) return hostsFor.names;
  const names = new Set([host, "127.0.0.1", "localhost", "[::1]"]);
  if (host.includes(":") && !host.startsWith("[")) names.add(`[${host}]`);
  hostsFor = { host, port, names: new Set([...names].flatMap((n) => [n, `${n}:${port}`])) };
  return hostsFor.names;
}

/**
 * The checks every request passes before routing; returns false after answering it. Only GET and HEAD
 * exist; a body (which they never need) over MAX_BODY_BYTES is refused with 413 without reading it.
 */
export function admitRequest(
  req: IncomingMessage,
  res: ServerResponse,
  server: { host: string; port: number },
): boolean {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > MAX_BODY_BYTES) {
    res.setHeader("Connection", "close");
    sendText(res, 413, `Expected a request body of at most ${MAX_BODY_BYTES} bytes but received ${declared}`);
    req.destroy();
    return false;
  }
  let received = 0;
  req.on("data", (chunk: Buffer) => {
    received += chunk.length;
    if (received > MAX_BODY_BYTES) req.destroy();
  });
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    sendText(res, 405, `Expected a GET or HEAD request but received ${req.method}`);
    return false;
  }
  if (!hostAllowed(req, server)) {
    sendText(
      res,
      421,
      `Expected the Host header to name this server but received "${req.headers.host ?? ""}"`,
    );
    return false;
  }
  return true;
}

/** 0.0.0.0 / :: (all interfaces) serve any name; otherwise only the bound address and localhost. */
export function hostAllowed(req: IncomingMessage, server: { host: string; port: number }): boolean {
  const anyInterface = server.host === "0.0.0.0" || server.host === "::";
  return anyInterface || allowedHosts(server.host, server.port).has((req.headers.host ?? "").toLowerCase());
}

export function urlPath(req: IncomingMessage): string {
  const raw = req.url ?? "/";
  const q = raw.indexOf("?");
  return q < 0 ? raw : raw.slice(0, q);
}

export { SECURITY_HEADERS };
