// The dashboard's server: the page, its assets and the event stream at /events.
import { startWebServer, type WebServer } from "./server.js";
import { SseHub } from "./sse.js";

export interface DashboardServer extends WebServer {
  hub: SseHub;
}

export async function startDashboardServer(o: {
  host: string;
  port: number;
  assets?: string;
}): Promise<DashboardServer> {
  const hub = new SseHub();
  const server = await startWebServer({
    ...o,
    index: "dashboard.html",
    route: (path, _req, res) => {
      if (path !== "/events") return false;
      hub.attach(res);
      return true;
    },
  });
  return {
    ...server,
    hub,
    close: async () => {
      hub.close();
      await server.close();
    },
  };
}
