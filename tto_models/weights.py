"""Deterministic weights and streaming safetensors files, shared by every stand-in model builder.

Every tensor is filled from its own ``torch.Generator``, seeded from the builder's seed and the tensor's
name, so filling does not depend on iteration order and the same seed gives byte-identical files.
ComfyUI's ops skip weight init, so an unfilled tensor would hold garbage: builders fill everything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import struct
import sys
import zlib
from typing import Callable, Iterable

import torch

#: Bumped whenever any builder's output changes; part of the demo manifest.
TINY_VERSION = "tiny-models-1"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hashes(path: pathlib.Path) -> dict | None:
    """{relative file: sha256} for a file (its name) or a folder (every file under it); None if absent."""
    if path.is_file():
        return {path.name: file_sha256(path)}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def seeded_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from (seed, tensor name): filling does not depend on iteration order."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(name.encode("utf-8"))) % (2**63 - 1)
    g = torch.Generator(device="cpu")
    g.manual_seed(mixed)
    return g


def seeded_normal(shape, std: float, seed: int, name: str) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=seeded_generator(seed, name), dtype=torch.float32).mul_(std)


def fill_module_(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Overwrite every parameter and persistent buffer of ``module`` from the seed.

    Biases are zeros, one-dimensional weights (norm scales) ones, everything else N(0, std).
    """
    with torch.no_grad():
        tensors = dict(module.named_parameters())
        persistent = module.state_dict(keep_vars=True)
        for name, buf in module.named_buffers():
            if name in persistent and buf.is_floating_point():
                tensors[name] = buf
        for name in sorted(tensors):
            t = tensors[name]
            if name.endswith("bias"):
                t.zero_()
            elif t.ndim == 1:
                t.fill_(1.0)
            else:
                t.copy_(seeded_normal(t.shape, std, seed, name).to(t.dtype))



_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors(path, specs: Iterable[tuple[str, tuple[int, ...]]], make: Callable[[str, tuple], torch.Tensor],
                       dtype: torch.dtype, metadata: dict | None = None) -> pathlib.Path:
    """Write a safetensors file tensor by tensor. ``make(name, shape)`` returns a float tensor."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; this writer assumes a little-endian host")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = sorted((name, tuple(int(s) for s in shape)) for name, shape in specs)
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    offset = 0
    for name, shape in specs:
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in specs:
            t = make(name, shape)
            if tuple(t.shape) != shape:
                raise AssertionError(f"{name}: made {tuple(t.shape)}, expected {shape}")
            f.write(t.to(dtype).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)
    return path



def conv_shapes(prefix: str, c_out: int, c_in: int, kernel: tuple[int, ...], bias: bool = True) -> list:
    out = [(f"{prefix}.weight", (c_out, c_in, *kernel))]
    if bias:
        out.append((f"{prefix}.bias", (c_out,)))
    return out



def conv_fill(seed: int, gains: Callable[[str], float]) -> Callable[[str, tuple], torch.Tensor]:
    """Conv weights N(0, gain^2 / fan_in), biases zero, norm scales (gamma) one."""
    def make(name: str, shape: tuple) -> torch.Tensor:
        if name.endswith(".bias"):
            return torch.zeros(shape)
        if name.endswith(".gamma"):
            return torch.ones(shape)
        fan_in = math.prod(shape[1:])
        return seeded_normal(shape, gains(name) / math.sqrt(fan_in), seed, name)
    return make

