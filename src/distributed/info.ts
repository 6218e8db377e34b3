// `vgg info --distributed` (under mpirun): the MPI library, every rank's host, and the all-reduce's
// latency and bandwidth measured between the ranks. Rank 0 prints; every rank takes part.
import { formatBandwidth, measureAllreduce } from "./bandwidth.js";
import { DataParallel } from "./data-parallel.js";

export async function printDistributedInfo(json: boolean): Promise<void> {
  const dp = DataParallel.start({ timeoutSeconds: 120 });
  const hosts = await dp.allgather(dp.host);
  const latency = await measureAllreduce(dp, 8, 50);
  const large = await measureAllreduce(dp, 64e6, 5);
  dp.finalize();
  if (!dp.isRoot) return;
  const info = {
    library: dp.library,
    ranks: dp.size,
    hosts,
    latencySeconds: latency.seconds,
    allreduceBytes: large.bytes,
    allreduceSeconds: large.seconds,
    busBandwidthBytesPerSecond: large.busBandwidth,
  };
  if (json) {
    console.log(JSON.stringify(info, null, 2));
    return;
  }
  console.log(`MPI: ${dp.library}`);
  console.log(`ranks: ${dp.size} (${hosts.map((h, r) => `rank ${r} on ${h}`).join(", ")})`);
  console.log(`all-reduce of 8 bytes: ${(latency.seconds * 1e6).toFixed(1)} us`);
  console.log(
    `all-reduce of ${(large.bytes / 1e6).toFixed(0)} MB (float32 sum, in place): ${(large.seconds * 1e3).toFixed(1)} ms` +
      (dp.size > 1
        ? `, bus bandwidth ${formatBandwidth(large.busBandwidth)} (bytes x 2(N-1)/N / time)`
        : " (one rank: no communication; run under mpirun -np N)"),
  );
}
