// One HTTP server for both pages: the built assets (dist/web) as static files, an index page, and a few
// routes of the caller's (the dashboard's event stream, the classifier's weights).
import { existsSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { admitRequest, resolveStatic, sendFile, sendText, urlPath } from "./http.js";

/** dist/web, written by `npm run build:web` (this file runs from dist/src/web). */
export const ASSETS_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

export function assetsDir(page: string, dir = ASSETS_DIR): string {
  if (!existsSync(join(dir, page)))
    throw new Error(
      `Expected the built web pages in ${dir} but ${page} is missing; build them with \`npm run build:web\``,
    );
  return dir;
}

export interface WebServerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** The page served at "/". */
  index: string;
  assets?: string;
  /** Answers a route and returns true, or returns false to fall through to the static files. */
  route?: (path: string, req: IncomingMessage, res: ServerResponse) => boolean;
}

export interface WebServer {
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

/** The request handler of startWebServer, for a server that also answers other routes (vgg serve's API). */
export function webRequestHandler(
  o: WebServerOptions,
  bound: { host: string; port: number },
): (req: IncomingMessage, res: ServerResponse) => void {
  const root = assetsDir(o.index, o.assets);
  return (req, res) => {
    try {
      if (!admitRequest(req, res, bound)) return;
      const path = urlPath(req);
      if (o.route?.(path, req, res)) return;
      const file = resolveStatic(root, path === "/" ? `/${o.index}` : path);
      if (file) sendFile(req, res, file);
      else sendText(res, 404, `Not found: ${path}`);
    } catch (e) {
      if (!res.headersSent) sendText(res, 500, (e as Error).message);
      else res.destroy();
    }
  };
}

export async function startWebServer(o: WebServerOptions): Promise<WebServer> {
  const bound = { host: o.host, port: o.port };
  const server = createServer(webRequestHandler(o, bound));
  // Bound the time a client may take to send its headers, so idle half-open sockets do not pile up.
  server.headersTimeout = 10_000;
  server.requestTimeout = 0; // the event stream is a request that never ends
  await new Promise<void>((ok, fail) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      fail(
        e.code === "EADDRINUSE"
          ? new Error(
              `Port ${o.port} on ${o.host} is already in use; choose another with --port (0 picks a free one)`,
            )
          : e,
      ),
    );
    server.listen(o.port, o.host, ok);
  });
  const port = (server.address() as AddressInfo).port;
  bound.port = port;
  const shownHost = o.host.includes(":") ? `[${o.host}]` : o.host;
  return {
    url: `http://${shownHost}:${port}/`,
    host: o.host,
    port,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}
