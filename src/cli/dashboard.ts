// `vgg dashboard DIR` (a finished or running run, followed through its files) and the options of
// `vgg train --dashboard`, whose page is the same.
import { type Command, Command as CommandClass } from "commander";
import { startDashboardServer } from "../web/dashboard-server.js";
import { RunFollower } from "../web/run-follower.js";
import { TrainDashboard } from "../web/train-dashboard.js";

export const DEFAULT_HOST = "127.0.0.1";
export const DASHBOARD_PORT = 6006;

export interface ListenFlags {
  host: string;
  port: number;
}

export interface DashboardFlags {
  dashboard?: boolean;
  host?: string;
  port?: number;
}

function portNumber(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new Error(`Expected --port to be an integer in [0, 65535] (0: any free port) but received "${v}"`);
  return n;
}

/** --host and --port; the default host is loopback only, so nothing is exposed unless asked. */
export function addListenOptions(cmd: Command, port: number): Command {
  return cmd
    .option("--host <address>", "address to listen on (0.0.0.0: all interfaces)", DEFAULT_HOST)
    .option("--port <n>", "TCP port (0: any free port)", portNumber, port);
}

export function addDashboardOptions(cmd: Command): Command {
  return addListenOptions(
    cmd.option("--dashboard", "serve a live dashboard of the run (see --host, --port)"),
    DASHBOARD_PORT,
  );
}

/** Starts the live dashboard's server thread and says where it is. */
export async function startTrainDashboard(flags: DashboardFlags): Promise<TrainDashboard> {
  const dashboard = await TrainDashboard.start({
    host: flags.host ?? DEFAULT_HOST,
    port: flags.port ?? DASHBOARD_PORT,
  });
  console.log(`Dashboard: ${dashboard.url}`);
  return dashboard;
}

export function dashboardCommand(): Command {
  return addListenOptions(new CommandClass("dashboard"), DASHBOARD_PORT)
    .description("serve the training dashboard for a run folder (finished, or still training)")
    .argument("<dir>", "the run's --out folder (holds metrics.jsonl)")
    .option("--data-dir <dir>", "Fashion-MNIST folder, for the grid of test pictures")
    .action(async (dir: string, flags: ListenFlags & { dataDir?: string }) => {
      const server = await startDashboardServer({ host: flags.host, port: flags.port });
      const follower = new RunFollower(dir, server.hub, { dataDir: flags.dataDir });
      await follower.poll();
      console.log(`Dashboard for ${dir}: ${server.url} (Ctrl-C to stop)`);
      await new Promise<void>((resolve) => process.once("SIGINT", resolve));
      follower.stop();
      await server.close();
    });
}
