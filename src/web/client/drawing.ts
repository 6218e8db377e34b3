// What the classifier and training pages share: the drawing canvas (light strokes on black, like
// Fashion-MNIST's pictures; when the pen lifts, the drawing's pixels go to `onDrawn`) and the top-5 list.
import { type RgbImage, rgbaToImage } from "../../io/image.js";
import type { Ranked } from "./classify.js";

/** The RGB pixels of `source` drawn at width x height. */
export function pixels(source: CanvasImageSource, width: number, height: number): RgbImage {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true })!;
  ctx.drawImage(source, 0, 0);
  return rgbaToImage(ctx.getImageData(0, 0, width, height).data, width, height);
}

/** Makes `canvas` drawable; `clear` blanks it. */
export function drawingCanvas(
  canvas: HTMLCanvasElement,
  clear: HTMLElement,
  onDrawn: (image: RgbImage) => void,
): void {
  const ctx = canvas.getContext("2d", { willReadFrequently: true })!;
  const blank = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  blank();
  let last: [number, number] | null = null;
  const at = (e: PointerEvent): [number, number] => {
    const r = canvas.getBoundingClientRect();
    return [
      ((e.clientX - r.left) * canvas.width) / r.width,
      ((e.clientY - r.top) * canvas.height) / r.height,
    ];
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = canvas.width / 14;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...p);
    ctx.stroke();
    last = p;
  });
  const finish = () => {
    if (!last) return;
    last = null;
    onDrawn(pixels(canvas, canvas.width, canvas.height));
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  clear.addEventListener("click", blank);
}

/** The ranked classes as bars in `list` (an <ol>). */
export function showRanking(list: HTMLElement, result: readonly Ranked[]): void {
  list.replaceChildren();
  for (const r of result) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = r.name;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(r.probability * 100).toFixed(1)}%`;
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = `${(r.probability * 100).toFixed(1)}%`;
    li.append(name, bar, p);
    list.append(li);
  }
}
