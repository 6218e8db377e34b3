// Training: fit (a whole run), the loop, evaluation, learning-rate schedules, checkpoints and curves.
export * from "./checkpoint.js";
export type { EpochSummary, TrainCallback, TrainRunInfo } from "./events.js";
export * from "./fit.js";
export { type CurvePoint, curvesPng, curvesSvg } from "./plot.js";
export * from "./schedule.js";
export * from "./trainer.js";
