// Measures the all-reduce between the ranks: the latency of a tiny message and the bandwidth of a large
// one. A ring all-reduce moves 2 (N - 1) / N times the message through each rank's link, so the "bus"
// bandwidth bytes x 2 (N - 1) / N / seconds is the link speed it achieved (NCCL's busbw), comparable
// across N.
import type { DataParallel } from "./data-parallel.js";

export interface AllreduceMeasurement {
  bytes: number;
  /** Median seconds of one all-reduce. */
  seconds: number;
  /** bytes / seconds. */
  algorithmBandwidth: number;
  /** bytes x 2 (N - 1) / N / seconds (0 on one rank). */
  busBandwidth: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * All-reduces `bytes` of float32 `reps` times after a warm-up; every rank must call it together. The
 * warm-up's sums are checked element by element (small integers, so exact in any order): a message
 * larger than the communication thread's pieces exercises their boundaries and the last, shorter one.
 */
export async function measureAllreduce(
  dp: DataParallel,
  bytes: number,
  reps: number,
): Promise<AllreduceMeasurement> {
  const pattern = (i: number) => (i % 7) + 1;
  const buf = new Float32Array(Math.max(1, Math.round(bytes / 4)));
  for (let i = 0; i < buf.length; i++) buf[i] = (dp.rank + 1) * pattern(i);
  await dp.allreduce([buf]);
  const ranksSum = (dp.size * (dp.size + 1)) / 2;
  for (let i = 0; i < buf.length; i++)
    if (buf[i] !== ranksSum * pattern(i))
      throw new Error(
        `the all-reduce of ${buf.length} floats gave a wrong sum at element ${i}: expected ${ranksSum * pattern(i)} but received ${buf[i]}`,
      );
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    await dp.barrier();
    const t0 = performance.now();
    await dp.allreduce([buf]);
    times.push((performance.now() - t0) / 1000);
  }
  // The slowest rank's median, so that every rank reports the same figure.
  const worst = await slowest(dp, median(times));
  const n = buf.length * 4;
  return {
    bytes: n,
    seconds: worst,
    algorithmBandwidth: n / worst,
    busBandwidth: dp.size > 1 ? (n * 2 * (dp.size - 1)) / dp.size / worst : 0,
  };
}

async function slowest(dp: DataParallel, seconds: number): Promise<number> {
  const all = await dp.allgather(String(seconds));
  return Math.max(...all.map(Number));
}

/** "1.23 GB/s (9.8 Gbit/s)". */
export function formatBandwidth(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e9).toFixed(2)} GB/s (${((bytesPerSecond * 8) / 1e9).toFixed(1)} Gbit/s)`;
}
