// Worker-thread entry of `vgg train --dashboard`: the HTTP server and its event stream live here, so
// pages are answered while the training thread is inside a kernel. The training thread only posts
// messages (a structured clone of a small record), which never waits on a client.
import { parentPort, workerData } from "node:worker_threads";
import { startDashboardServer } from "./dashboard-server.js";
import type { DashboardEvent } from "./sse.js";

export type ToWorker =
  | { op: "publish"; event: DashboardEvent; mode: "append" | "latest" }
  | { op: "close"; event: DashboardEvent };
export type FromWorker = { op: "ready"; url: string } | { op: "error"; message: string } | { op: "closed" };

const port = parentPort;
if (!port) throw new Error("dashboard-worker.js runs only as a worker thread");
const post = (m: FromWorker) => port.postMessage(m);
const { host, port: tcpPort, assets } = workerData as { host: string; port: number; assets?: string };

try {
  const server = await startDashboardServer({ host, port: tcpPort, assets });
  port.on("message", async (m: ToWorker) => {
    if (m.op === "publish") server.hub.publish(m.event, m.mode);
    else {
      server.hub.publish(m.event);
      // Give pages a moment to receive the final event before the connections close.
      await new Promise((r) => setTimeout(r, 200));
      await server.close();
      post({ op: "closed" });
      port.close();
    }
  });
  post({ op: "ready", url: server.url });
} catch (e) {
  post({ op: "error", message: (e as Error).message });
  port.close();
}
