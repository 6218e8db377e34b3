// Learning-rate schedules, evaluated per iteration: constant, step (x gamma every stepSize epochs) and
// cosine (to 0 at the end), each with an optional linear warm-up from 0 over the first warmupEpochs.
export type ScheduleName = "constant" | "step" | "cosine";

export interface ScheduleOptions {
  name: ScheduleName;
  baseLr: number;
  epochs: number;
  stepsPerEpoch: number;
  warmupEpochs?: number;
  stepSize?: number;
  gamma?: number;
}

/** The learning rate for iteration `step` (0-based, counted over the whole run). */
export function learningRate(o: ScheduleOptions, step: number): number {
  const total = o.epochs * o.stepsPerEpoch;
  const warmup = (o.warmupEpochs ?? 0) * o.stepsPerEpoch;
  if (step < warmup) return (o.baseLr * (step + 1)) / warmup;
  switch (o.name) {
    case "constant":
      return o.baseLr;
    case "step":
      return o.baseLr * (o.gamma ?? 0.1) ** Math.floor(step / o.stepsPerEpoch / (o.stepSize ?? 30));
    case "cosine": {
      const t = (step - warmup) / Math.max(1, total - warmup);
      return 0.5 * o.baseLr * (1 + Math.cos(Math.PI * Math.min(1, t)));
    }
  }
}
