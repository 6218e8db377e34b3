// `vgg serve`'s HTTP server: the inference API (POST /v1/classify, the Open Inference Protocol under
// /v2, Prometheus metrics at /metrics) and, unless API-only, the in-browser classifier page on the same
// port. Limits: bodies up to maxBodyBytes (413), known media types (415), a bounded queue (503 with
// Retry-After), a per-request timeout (504). drain() stops accepting, answers every request already
// received, then stops the model thread: what SIGTERM does.
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { loadNativeAddon } from "../backend/native.js";
import { hostAllowed, urlPath } from "../web/http.js";
import { type WebServerOptions, webRequestHandler } from "../web/server.js";
import { ClientTie, ClosedError, QueueFullError, RequestTimeoutError } from "./batcher.js";
import { HttpError, mediaType, parseJson, readBody, sendJson } from "./body.js";
import { type RouteLabel, ServeMetrics } from "./metrics.js";
import { type ModelSource, ModelThreads, servingLayout } from "./model-thread.js";
import { ModelService, type ServiceOptions } from "./service.js";
import { classify } from "./v1.js";
import { inferResponse, MODEL_VERSION, modelMetadata, parseInferRequest, serverMetadata } from "./v2.js";

export interface InferenceServerOptions extends ServiceOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  source: ModelSource;
  /** Model threads; absent: servingLayout's default. */
  workers?: number;
  maxBodyBytes: number;
  /** The classifier page and its routes on the same port; absent: the API only. */
  page?: Omit<WebServerOptions, "host" | "port">;
}

export interface InferenceServer {
  url: string;
  port: number;
  service: ModelService;
  metrics: ServeMetrics;
  /** Stops accepting, answers every request already received, stops the model thread. */
  drain(): Promise<void>;
}

const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }
).version;
const RETRY_AFTER = { "Retry-After": "1" };
const NO_QUERY = new URLSearchParams();

function routeLabel(path: string): RouteLabel {
  if (path === "/v1/classify") return "classify";
  if (path.endsWith("/infer")) return "infer";
  if (path.startsWith("/v2/health") || path.endsWith("/ready")) return "health";
  if (path === "/metrics") return "metrics";
  return path.startsWith("/v2") ? "metadata" : "other";
}

function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(400, `Expected a URL-encoded path segment but received "${part}"`);
  }
}

const isApiPath = (path: string) => path === "/metrics" || path === "/v2" || /^\/v[12]\//.test(path);

function methodAllowed(req: IncomingMessage, allowed: "GET" | "POST"): void {
  const ok = allowed === "GET" ? req.method === "GET" || req.method === "HEAD" : req.method === "POST";
  if (!ok)
    throw new HttpError(
      405,
      `Expected ${allowed === "GET" ? "GET or HEAD" : "POST"} but received ${req.method}`,
      {
        Allow: allowed === "GET" ? "GET, HEAD" : "POST",
      },
    );
}

/** 400s and 404s for the request, 503 / 504 for the queue's refusals, 500 for anything unforeseen. */
function errorAnswer(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof QueueFullError || e instanceof ClosedError)
    return new HttpError(503, e.message, RETRY_AFTER);
  if (e instanceof RequestTimeoutError) return new HttpError(504, e.message);
  return new HttpError(500, `internal error: ${(e as Error).message}`);
}

export async function startInferenceServer(o: InferenceServerOptions): Promise<InferenceServer> {
  let metrics: ServeMetrics | undefined;
  const layout = servingLayout(o.workers, o.source.runtime?.threads);
  const thread = await ModelThreads.start(
    { ...o.source, runtime: { ...o.source.runtime, threads: layout.threads } },
    layout.workers,
  );
  let connections = 0;
  // The native kernel pool is one per process (shared by the model threads): a batch alone takes its
  // threads, and while the cores are shared (two batches, or one and requests waiting for this thread)
  // each batch runs its kernels on its own model thread. With one model thread its batch keeps the pool:
  // no other batch could use the core it would leave.
  const addon = thread.backend === "native" ? loadNativeAddon() : null;
  const pool = addon instanceof Error ? null : addon;
  const service = new ModelService(thread, {
    ...o,
    onBatch: (n, s) => metrics?.batch(n, s),
    // One request per connection (HTTP/1.1 without pipelining): the open connections bound who can send.
    senders: () => connections,
    onShared:
      pool && layout.threads > 1 && layout.workers > 1 ? (shared) => pool.markCoresBusy(shared) : undefined,
  });
  let active = 0;
  metrics = new ServeMetrics(
    () => service.batcher.depth,
    o.maxBatch,
    () => active,
    () => service.batcher.running,
  );
  const served = metrics;
  const bound = { host: o.host, port: o.port };
  const page = o.page ? webRequestHandler({ ...o.page, host: o.host, port: o.port }, bound) : null;
  let draining = false;
  let onIdle: (() => void) | null = null;

  const getRoutes: Record<string, (res: ServerResponse) => void | Promise<void>> = {
    "/v2/health/live": (res) => sendJson(res, 200, { live: true }),
    "/v2/health/ready": (res) => sendJson(res, service.ready ? 200 : 503, { ready: service.ready }),
    "/v2": (res) => sendJson(res, 200, serverMetadata(PACKAGE_VERSION)),
    "/metrics": async (res) => {
      const text = await served.registry.metrics();
      res.writeHead(200, {
        "Content-Type": served.registry.contentType,
        "Content-Length": Buffer.byteLength(text),
      });
      res.end(text);
    },
  };

  async function answer(
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
    tie: ClientTie,
  ): Promise<void> {
    if (!hostAllowed(req, bound))
      throw new HttpError(
        421,
        `Expected the Host header to name this server but received "${req.headers.host ?? ""}"`,
      );
    if (draining) throw new HttpError(503, "the server is shutting down", RETRY_AFTER);
    const url = req.url ?? "/";
    const query = url.includes("?") ? new URL(url, "http://x").searchParams : NO_QUERY;
    const fixed = getRoutes[path];
    if (fixed) {
      methodAllowed(req, "GET");
      return fixed(res);
    }
    // A full queue refuses before the body is read and decoded: under overload, refusing stays cheap.
    const full = () => {
      if (!service.batcher.hasRoom(1)) throw service.batcher.fullError();
    };
    if (path === "/v1/classify") {
      methodAllowed(req, "POST");
      full();
      const body = await readBody(req, o.maxBodyBytes);
      return sendJson(res, 200, await classify(service, req, body, query, tie));
    }
    const m = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer)?$/.exec(path);
    if (!m) throw new HttpError(404, `Not found: ${path}`);
    const [name, version] = [decodePart(m[1]), m[2] === undefined ? undefined : decodePart(m[2])];
    if (name !== service.name)
      throw new HttpError(404, `Unknown model "${name}"; this server serves "${service.name}"`);
    if (version !== undefined && version !== MODEL_VERSION)
      throw new HttpError(
        404,
        `Unknown version "${version}" of model "${name}"; it has version "${MODEL_VERSION}"`,
      );
    if (m[3] === "/ready") {
      methodAllowed(req, "GET");
      return sendJson(res, service.ready ? 200 : 503, { name, ready: service.ready });
    }
    if (m[3] === undefined) {
      methodAllowed(req, "GET");
      return sendJson(res, 200, modelMetadata(service));
    }
    methodAllowed(req, "POST");
    full();
    const type = mediaType(req);
    if (type !== "" && type !== "application/json")
      throw new HttpError(415, `Expected Content-Type application/json but received "${type}"`);
    const request = parseInferRequest(parseJson(await readBody(req, o.maxBodyBytes)), service);
    const logits = await service.infer(request.input, request.n, tie);
    sendJson(res, 200, inferResponse(service, request, logits));
  }

  const server = createServer((req, res) => {
    const path = urlPath(req);
    if (!isApiPath(path)) {
      if (page) page(req, res);
      else sendJson(res, 404, { error: `Not found: ${path} (this server answers the API only)` });
      return;
    }
    const started = performance.now();
    const route = routeLabel(path);
    active++;
    // A client that closes its connection before the answer withdraws its images from the queue.
    const tie = new ClientTie();
    res.once("close", () => {
      if (!res.writableFinished) tie.gone();
      // 499, as nginx logs it: the client closed the connection before the answer.
      served.request(
        route,
        res.writableFinished ? res.statusCode : 499,
        (performance.now() - started) / 1000,
      );
      if (--active === 0) onIdle?.();
    });
    answer(path, req, res, tie).catch((e: unknown) => {
      const err = errorAnswer(e);
      if (res.headersSent) res.destroy();
      else
        sendJson(
          res,
          err.status,
          { error: err.message },
          draining ? { ...err.headers, Connection: "close" } : err.headers,
        );
    });
  });
  server.on("connection", (socket) => {
    connections++;
    socket.once("close", () => connections--);
  });
  // Bound the time a client may take to send its headers and its body, so slow clients cannot pile up.
  server.headersTimeout = 10_000;
  server.requestTimeout = o.requestTimeoutMs > 0 ? Math.max(o.requestTimeoutMs, 10_000) : 0;
  await new Promise<void>((ok, fail) => {
    server.once("error", (e: NodeJS.ErrnoException) => {
      thread.close();
      fail(
        e.code === "EADDRINUSE"
          ? new Error(
              `Port ${o.port} on ${o.host} is already in use; choose another with --port (0 picks a free one)`,
            )
          : e,
      );
    });
    server.listen(o.port, o.host, ok);
  });
  bound.port = (server.address() as AddressInfo).port;
  const shownHost = o.host.includes(":") ? `[${o.host}]` : o.host;

  let drained: Promise<void> | null = null;
  const drain = () => {
    drained ??= (async () => {
      draining = true;
      server.close();
      server.closeIdleConnections();
      // Requests already received still join batches, which now start without waiting for the delay.
      service.batcher.flush();
      if (active > 0) await new Promise<void>((ok) => (onIdle = ok));
      await service.close();
      server.closeAllConnections();
    })();
    return drained;
  };
  return { url: `http://${shownHost}:${bound.port}/`, port: bound.port, service, metrics: served, drain };
}
