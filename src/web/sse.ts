// Server-Sent Events: every event is kept (a run is a few thousand small records) so a page that connects
// late, or reconnects, gets the whole story first and then the live tail. A client that stops reading is
// dropped once its unsent backlog passes a limit, so it can neither stall the sender nor grow memory.
import type { ServerResponse } from "node:http";
import { SECURITY_HEADERS } from "./http.js";

export interface DashboardEvent {
  /** SSE event name: config, record, progress, samples, end. */
  event: string;
  data: unknown;
}

/** Unsent bytes a client may accumulate before it is disconnected. */
export const MAX_CLIENT_BACKLOG = 1 << 20;

function frame(e: DashboardEvent): string {
  return `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

export class SseHub {
  /** Each client with its backlog limit (the limit plus its replay, which may be larger). */
  private readonly clients = new Map<ServerResponse, number>();
  private readonly log: string[] = [];
  /** Events replaced rather than appended (the latest progress, the latest sample grid). */
  private readonly latest = new Map<string, string>();
  private heartbeat: NodeJS.Timeout;
  dropped = 0;

  constructor(
    private readonly maxBacklog = MAX_CLIENT_BACKLOG,
    heartbeatMs = 15_000,
  ) {
    // A comment line now and then lets both ends notice a vanished peer.
    this.heartbeat = setInterval(() => this.write(": ping\n\n"), heartbeatMs);
    this.heartbeat.unref();
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Appends to the history (or replaces the latest of its kind) and sends to every client. */
  publish(e: DashboardEvent, mode: "append" | "latest" = "append"): void {
    const text = frame(e);
    if (mode === "append") this.log.push(text);
    else this.latest.set(e.event, text);
    this.write(text);
  }

  /** Forgets the history (a new run in the same folder); clients are told to start over. */
  reset(): void {
    this.log.length = 0;
    this.latest.clear();
    this.write(frame({ event: "reset", data: null }));
  }

  attach(res: ServerResponse): void {
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no",
    });
    res.socket?.setNoDelay(true);
    const replay = `retry: 1000\n\n${frame({ event: "reset", data: null })}${this.log.join("")}${[...this.latest.values()].join("")}`;
    // The replay is not held against the backlog limit: a long run's history may exceed it.
    this.clients.set(res, this.maxBacklog + Buffer.byteLength(replay));
    res.on("close", () => this.clients.delete(res));
    res.write(replay);
  }

  close(): void {
    clearInterval(this.heartbeat);
    for (const res of this.clients.keys()) res.end();
    this.clients.clear();
  }

  private write(text: string): void {
    for (const [res, limit] of this.clients) this.send(res, text, limit);
  }

  private send(res: ServerResponse, text: string, limit: number): void {
    if (res.destroyed) return;
    res.write(text);
    if (res.writableLength > limit) {
      this.dropped++;
      this.clients.delete(res);
      res.destroy();
    }
  }
}
