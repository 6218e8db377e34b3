// A 5x7 bitmap font (with 2 descender rows) and the few raster primitives the PNG curves need:
// an RGBA image, filled rectangles and text. No anti-aliasing: every pixel is either set or left alone.

/** An RGBA8 image, row-major, 4 bytes per pixel. */
export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export type Rgb = readonly [number, number, number];

/** Glyph cell: 5 columns, rows 0..6 above the baseline, rows 7..8 for descenders (g, j, p, q, y, ","). */
export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 9;
/** Horizontal distance between the left edges of consecutive glyphs, in font pixels. */
export const GLYPH_ADVANCE = 6;

// Each glyph is 7 (or 9, with descenders) rows of 5 cells, "#" = ink, separated by spaces.
const GLYPH_ROWS: Record<string, string> = {
  " ": "..... ..... ..... ..... ..... ..... .....",
  "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
  "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
  "2": ".###. #...# ....# ...#. ..#.. .#... #####",
  "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
  "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
  "5": "##### #.... ####. ....# ....# #...# .###.",
  "6": "..##. .#... #.... ####. #...# #...# .###.",
  "7": "##### ....# ...#. ..#.. .#... .#... .#...",
  "8": ".###. #...# #...# .###. #...# #...# .###.",
  "9": ".###. #...# #...# .#### ....# ...#. .##..",
  A: ".###. #...# #...# ##### #...# #...# #...#",
  B: "####. #...# #...# ####. #...# #...# ####.",
  C: ".###. #...# #.... #.... #.... #...# .###.",
  D: "###.. #..#. #...# #...# #...# #..#. ###..",
  E: "##### #.... #.... ####. #.... #.... #####",
  F: "##### #.... #.... ####. #.... #.... #....",
  G: ".###. #...# #.... #.### #...# #...# .####",
  H: "#...# #...# #...# ##### #...# #...# #...#",
  I: ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
  J: "..### ...#. ...#. ...#. ...#. #..#. .##..",
  K: "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
  L: "#.... #.... #.... #.... #.... #.... #####",
  M: "#...# ##.## #.#.# #.#.# #...# #...# #...#",
  N: "#...# #...# ##..# #.#.# #..## #...# #...#",
  O: ".###. #...# #...# #...# #...# #...# .###.",
  P: "####. #...# #...# ####. #.... #.... #....",
  Q: ".###. #...# #...# #...# #.#.# #..#. .##.#",
  R: "####. #...# #...# ####. #.#.. #..#. #...#",
  S: ".#### #.... #.... .###. ....# ....# ####.",
  T: "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
  U: "#...# #...# #...# #...# #...# #...# .###.",
  V: "#...# #...# #...# #...# #...# .#.#. ..#..",
  W: "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
  X: "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
  Y: "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
  Z: "##### ....# ...#. ..#.. .#... #.... #####",
  a: "..... ..... .###. ....# .#### #...# .####",
  b: "#.... #.... #.##. ##..# #...# #...# ####.",
  c: "..... ..... .###. #.... #.... #...# .###.",
  d: "....# ....# .##.# #..## #...# #...# .####",
  e: "..... ..... .###. #...# ##### #.... .###.",
  f: "..##. .#..# .#... ###.. .#... .#... .#...",
  g: "..... ..... .#### #...# #...# .#### ....# #...# .###.",
  h: "#.... #.... #.##. ##..# #...# #...# #...#",
  i: "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
  j: "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##..",
  k: "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
  l: ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
  m: "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#",
  n: "..... ..... #.##. ##..# #...# #...# #...#",
  o: "..... ..... .###. #...# #...# #...# .###.",
  p: "..... ..... ####. #...# #...# ####. #.... #.... #....",
  q: "..... ..... .#### #...# #...# .#### ....# ....# ....#",
  r: "..... ..... #.##. ##..# #.... #.... #....",
  s: "..... ..... .###. #.... .###. ....# ####.",
  t: ".#... .#... ###.. .#... .#... .#..# ..##.",
  u: "..... ..... #...# #...# #...# #..## .##.#",
  v: "..... ..... #...# #...# #...# .#.#. ..#..",
  w: "..... ..... #...# #...# #.#.# #.#.# .#.#.",
  x: "..... ..... #...# .#.#. ..#.. .#.#. #...#",
  y: "..... ..... #...# #...# #...# .#### ....# #...# .###.",
  z: "..... ..... ##### ...#. ..#.. .#... #####",
  ".": "..... ..... ..... ..... ..... .##.. .##..",
  ",": "..... ..... ..... ..... ..... .##.. .##.. ..#.. .#...",
  "-": "..... ..... ..... .###. ..... ..... .....",
  "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
  "=": "..... ..... ##### ..... ##### ..... .....",
  _: "..... ..... ..... ..... ..... ..... #####",
  ":": "..... .##.. .##.. ..... .##.. .##.. .....",
  "/": "....# ....# ...#. ..#.. .#... #.... #....",
  "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
  ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
  "%": "##..# ##..# ...#. ..#.. .#... #..## #..##",
  "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
};

/** Glyph bitmaps: GLYPH_HEIGHT rows, each a GLYPH_WIDTH-bit mask with bit 4 = leftmost column. */
const GLYPHS: ReadonlyMap<string, readonly number[]> = new Map(
  Object.entries(GLYPH_ROWS).map(([char, rows]) => {
    const masks = rows.split(" ").map((row) => {
      let mask = 0;
      for (const cell of row) mask = (mask << 1) | (cell === "#" ? 1 : 0);
      return mask;
    });
    while (masks.length < GLYPH_HEIGHT) masks.push(0);
    return [char, masks] as const;
  }),
);

/** The characters the font can draw; anything else is drawn as "?". */
export const FONT_CHARACTERS: readonly string[] = Object.keys(GLYPH_ROWS);

/** Rows of "#"/"." for a character, as the font draws it (for tests and debugging). */
export function glyphRows(char: string): string[] {
  const masks = GLYPHS.get(char) ?? GLYPHS.get("?")!;
  return masks.map((mask) => {
    let row = "";
    for (let col = GLYPH_WIDTH - 1; col >= 0; col--) row += (mask >> col) & 1 ? "#" : ".";
    return row;
  });
}

/** Width in pixels of `text` drawn at `scale` (no trailing gap after the last glyph). */
export function textWidth(text: string, scale: number): number {
  return text.length === 0 ? 0 : (text.length * GLYPH_ADVANCE - (GLYPH_ADVANCE - GLYPH_WIDTH)) * scale;
}

/** Height in pixels of a line of text above the baseline (capitals and digits) at `scale`. */
export function textAscent(scale: number): number {
  return 7 * scale;
}

export function createImage(width: number, height: number, background: Rgb): RgbaImage {
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < data.length; i += 4) {
    data[i] = background[0];
    data[i + 1] = background[1];
    data[i + 2] = background[2];
    data[i + 3] = 255;
  }
  return { width, height, data };
}

/** Fills the rectangle [x, x + w) x [y, y + h), clipped to the image. */
export function fillRect(image: RgbaImage, x: number, y: number, w: number, h: number, color: Rgb): void {
  const x0 = Math.max(0, Math.round(x));
  const y0 = Math.max(0, Math.round(y));
  const x1 = Math.min(image.width, Math.round(x + w));
  const y1 = Math.min(image.height, Math.round(y + h));
  for (let py = y0; py < y1; py++) {
    for (let px = x0; px < x1; px++) {
      const i = (py * image.width + px) * 4;
      image.data[i] = color[0];
      image.data[i + 1] = color[1];
      image.data[i + 2] = color[2];
      image.data[i + 3] = 255;
    }
  }
}

/**
 * Draws `text` with its top-left corner at (x, y): each font pixel becomes a `scale` x `scale` square.
 * Characters without a glyph are drawn as "?".
 */
export function drawText(
  image: RgbaImage,
  text: string,
  x: number,
  y: number,
  scale: number,
  color: Rgb,
): void {
  let offset = 0;
  for (const char of text) {
    const masks = GLYPHS.get(char) ?? GLYPHS.get("?")!;
    for (let row = 0; row < GLYPH_HEIGHT; row++) {
      const mask = masks[row]!;
      if (mask === 0) continue;
      for (let col = 0; col < GLYPH_WIDTH; col++) {
        if (((mask >> (GLYPH_WIDTH - 1 - col)) & 1) === 0) continue;
        fillRect(image, x + (offset + col) * scale, y + row * scale, scale, scale, color);
      }
    }
    offset += GLYPH_ADVANCE;
  }
}
