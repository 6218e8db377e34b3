"""Times the same per-layer convolutions (forward, input gradient, weight gradient) and square SGEMMs in
PyTorch on 2 threads, for bench/bench.ts. Reads a JSON spec on stdin, prints one JSON object on stdout.
Run by the bench with Debian's /usr/bin/python3 (python3-torch)."""
import json
import sys
import time

import torch

torch.set_num_threads(2)
spec = json.load(sys.stdin)
iters = spec["iters"]


def median_time(fn):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


gemm = {}
for size in spec["gemm"]:
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    c = torch.empty(size, size)
    gemm[str(size)] = median_time(lambda: torch.mm(a, b, out=c))

layers = []
with torch.no_grad():
    for layer in spec["layers"]:
        x = torch.randn(layer["n"], layer["cIn"], layer["h"], layer["w"])
        w = torch.randn(layer["cOut"], layer["cIn"], layer["k"], layer["k"])
        bias = torch.randn(layer["cOut"])
        stride, pad = layer["stride"], layer["pad"]
        y = torch.nn.functional.conv2d(x, w, bias, stride, pad)
        dy = torch.randn_like(y)
        fwd = median_time(lambda: torch.relu_(torch.nn.functional.conv2d(x, w, bias, stride, pad)))
        bwd_in = median_time(lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride, pad))
        bwd_w = median_time(lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride, pad))
        layers.append({"name": layer["name"], "forward": fwd, "backwardInput": bwd_in, "backwardWeight": bwd_w})

print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "gemm": gemm, "layers": layers}))
