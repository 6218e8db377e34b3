#!/usr/bin/python3
"""Writes test/fixtures/safetensors/torch_mixed.safetensors and its expected values.

Run by hand with Debian's python3-torch:  /usr/bin/python3 scripts/make_safetensors_fixture.py
Reverse direction: /usr/bin/python3 scripts/make_safetensors_fixture.py --verify FILE loads a file written
by vgg-ts (the fixture's module tensors re-encoded) into the same PyTorch module with strict
load_state_dict and checks every tensor equals the fixture's.
The `safetensors` Python package is not installed here, so the file is written with struct + json
following the format spec (as the reference writer does: sorted names, header space-padded to a
multiple of 8). The tensor bytes come from torch itself, so F16/BF16/I64 encodings are PyTorch's.
The expected values are torch's own conversion of each tensor to float32, stored as uint32 bit
patterns so NaN, infinities and -0 survive JSON exactly.
"""

import json
import os
import struct
import sys

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "safetensors")

DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
}


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the same 2 bytes as int16
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def save(tensors: dict, metadata: dict, path: str) -> None:
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        data = tensor_bytes(tensors[name])
        header[name] = {
            "dtype": DTYPE_NAMES[tensors[name].dtype],
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


def load(path: str) -> tuple:
    """A plain reader for --verify (the strict checks live in vgg-ts; this one only asserts basics)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = blob[8 + n :]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[begin:end])
        dtype = TORCH_DTYPES[info["dtype"]]
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.zeros(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
    return tensors, metadata


def verify(path: str) -> None:
    written, metadata = load(path)
    fixture, _ = load(os.path.join(OUT, "torch_mixed.safetensors"))
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    model.load_state_dict(written, strict=True)
    for name, t in model.state_dict().items():
        # load_state_dict casts silently, so compare the dtypes as written (I64 num_batches_tracked).
        assert written[name].dtype == fixture[name].dtype, f"{name}: {written[name].dtype} != {fixture[name].dtype}"
        assert torch.equal(t, fixture[name]), f"{name} differs"
    print(f"OK: {len(written)} tensors loaded strictly into PyTorch, all equal; metadata {metadata}")


def float32_bits(t: torch.Tensor) -> list:
    return t.float().contiguous().view(torch.int32).flatten().tolist()


def main() -> None:
    torch.manual_seed(0)
    # A real module's state dict: BatchNorm brings the I64 num_batches_tracked scalar.
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    model.train()
    model(torch.randn(4, 1, 5, 5))  # moves running stats and num_batches_tracked away from defaults
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}

    specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-5, float("inf"), float("-inf"), float("nan")]
    tensors["extra.half"] = torch.tensor(specials, dtype=torch.float16).reshape(2, 5)
    tensors["extra.bf16"] = torch.tensor(specials + [3.0e38, -1.0e-38], dtype=torch.bfloat16).reshape(3, 4)
    tensors["extra.double"] = torch.tensor([[0.1, -1e300], [1e-300, 123456789.125]], dtype=torch.float64)
    tensors["extra.i32"] = torch.tensor([-(2**31), 2**31 - 1, 0], dtype=torch.int32)
    tensors["extra.u8"] = torch.tensor([[0, 1], [128, 255]], dtype=torch.uint8)
    tensors["extra.empty"] = torch.zeros(0, 3)
    metadata = {"format": "pt", "producer": "scripts/make_safetensors_fixture.py"}

    os.makedirs(OUT, exist_ok=True)
    save(tensors, metadata, os.path.join(OUT, "torch_mixed.safetensors"))
    expected = {
        "metadata": metadata,
        "tensors": {
            name: {
                "dtype": DTYPE_NAMES[t.dtype],
                "shape": list(t.shape),
                "float32_bits": float32_bits(t),
            }
            for name, t in sorted(tensors.items())
        },
    }
    with open(os.path.join(OUT, "torch_mixed.expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(sys.argv[2])
    else:
        main()
