"""Whole-step throughput of d2l's VGG (vgg(conv_arch) with channel counts divided by a ratio) in PyTorch
on this CPU, for bench/train-compare.ts. Run with Debian's /usr/bin/python3 (python3-torch).
argv: mode(train|infer) resize batch iters threads ratio channels_last(0|1) [precision(fp32|bf16)]; prints one
JSON object. bf16 runs the forward pass and the loss under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's
CPU mixed precision: float32 weights, convolutions and linear layers in bf16."""
import contextlib
import json
import sys
import time

import torch
from torch import nn

mode, resize, batch, iters, threads, ratio, channels_last = sys.argv[1:8]
resize, batch, iters, threads, ratio = int(resize), int(batch), int(iters), int(threads), int(ratio)
channels_last = channels_last == "1"
precision = sys.argv[8] if len(sys.argv) > 8 else "fp32"
if precision not in ("fp32", "bf16"):
    sys.exit(f'Expected precision "fp32" or "bf16" but received "{precision}"')
torch.set_num_threads(threads)
torch.manual_seed(0)


def vgg_block(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(conv_arch, size):
    blocks, in_channels = [], 1
    for num_convs, out_channels in conv_arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    s = size // 32
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(in_channels * s * s, 4096), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 10))


arch = [(n, c // ratio) for n, c in ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))]
net = vgg(arch, resize)
x = torch.rand(batch, 1, resize, resize)
y = torch.randint(0, 10, (batch,))
if channels_last:
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()


def autocast():
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def step():
    if mode == "infer":
        net.eval()
        with torch.no_grad(), autocast():
            net(x)
        return
    net.train()
    opt.zero_grad()
    with autocast():
        loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()


step()
times = []
for _ in range(iters):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
times.sort()
med = times[len(times) // 2]
print(json.dumps({"images_per_s": batch / med, "median_step_s": med, "torch": torch.__version__, "precision": precision}))
