#!/usr/bin/env python3
"""Writes test/fixtures/resize.json: inputs and outputs of torch's bilinear resize
(F.interpolate(mode="bilinear", align_corners=False, antialias=False)) for the data pipeline's resize test.

Run by hand with Debian's torch:  /usr/bin/python3 scripts/make_resize_fixture.py
Inputs are uint8 images scaled to [0, 1] exactly as the pipeline does (x / 255). To keep the fixture small,
large outputs are stored as a subset of rows (all of their columns): both borders and a contiguous block from
the middle, which covers every phase of the interpolation. Values are little-endian float32, base64-encoded.
"""

import base64
import json
import os

import torch
import torch.nn.functional as F

# (name, input height, input width, output height, output width)
CASES = [
    ("28->224", 28, 28, 224, 224),
    ("28->32", 28, 28, 32, 32),
    ("28->20", 28, 28, 20, 20),
    ("28->14", 28, 28, 14, 14),
    ("28x28->40x17", 28, 28, 40, 17),
    ("13x9->30x5", 13, 9, 30, 5),
    ("28->1", 28, 28, 1, 1),
]
MAX_STORED = 4096  # values per case; beyond that, keep a subset of rows


def chosen_rows(out_h, out_w):
    if out_h * out_w <= MAX_STORED:
        return list(range(out_h))
    n = max(7, MAX_STORED // out_w)
    middle = out_h // 2 - 3
    picks = {0, 1, 2, out_h - 3, out_h - 2, out_h - 1}
    picks.update(range(middle, middle + n - 6))
    return sorted(picks)


def main():
    gen = torch.Generator().manual_seed(1234)
    cases = []
    for name, ih, iw, oh, ow in CASES:
        pixels = torch.randint(0, 256, (ih, iw), generator=gen, dtype=torch.uint8)
        x = pixels.float().div(255).reshape(1, 1, ih, iw)
        y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
        y = y.reshape(oh, ow)
        rows = chosen_rows(oh, ow)
        cases.append(
            {
                "name": name,
                "inH": ih,
                "inW": iw,
                "outH": oh,
                "outW": ow,
                "pixels": pixels.flatten().tolist(),
                "rows": rows,
                "values": base64.b64encode(y[rows].contiguous().numpy().astype("<f4").tobytes()).decode(),
            }
        )
    out = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "resize.json")
    with open(out, "w") as f:
        json.dump({"generator": "scripts/make_resize_fixture.py", "torch": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
