// d2l's three training curves (train loss, train accuracy, test accuracy against epochs) in uPlot, from
// fit's records (metrics.jsonl's lines: batch points at fractional epochs, one epoch record each). The
// dashboard and the training page draw the same chart.
import uPlot from "uplot";

export interface CurveRecord {
  type: "batch" | "epoch";
  epoch: number;
  trainLoss?: number;
  trainAcc?: number;
  testAcc?: number;
}

export type CurveSeries = [number[], (number | null)[], (number | null)[], (number | null)[]];

/** Aligned series as the chart holds them: epochs, train loss, train acc, test acc. */
export function curveSeries(records: readonly CurveRecord[]): CurveSeries {
  const byEpoch = new Map<number, [number | null, number | null, number | null]>();
  for (const r of records) {
    const row = byEpoch.get(r.epoch) ?? [null, null, null];
    if (r.type === "batch") {
      row[0] = r.trainLoss ?? null;
      row[1] = r.trainAcc ?? null;
    } else row[2] = r.testAcc ?? null;
    byEpoch.set(r.epoch, row);
  }
  const xs = [...byEpoch.keys()].sort((a, b) => a - b);
  return [
    xs,
    xs.map((x) => byEpoch.get(x)![0]),
    xs.map((x) => byEpoch.get(x)![1]),
    xs.map((x) => byEpoch.get(x)![2]),
  ];
}

/** The chart in `el`; its x axis runs to at least `epochs()` (the run's length once known). */
export function curvesChart(el: HTMLElement, epochs: () => number): uPlot {
  return new uPlot(
    {
      width: Math.min(720, window.innerWidth - 40),
      height: 360,
      scales: {
        x: { time: false, range: (_u, min, max) => [0, Math.max(max, epochs(), min)] },
      },
      axes: [{ label: "epoch" }, {}],
      series: [
        { label: "epoch" },
        { label: "train loss", stroke: "#1f77b4", width: 2, spanGaps: true },
        { label: "train acc", stroke: "#bf00bf", width: 2, dash: [10, 5], spanGaps: true },
        {
          label: "test acc",
          stroke: "#008000",
          width: 2,
          dash: [10, 4, 2, 4],
          spanGaps: true,
          points: { show: true },
        },
      ],
    },
    [[], [], [], []],
    el,
  );
}
