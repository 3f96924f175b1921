#!/usr/bin/env python3
"""Generate reference fixtures for lumen-kernels' block-format tests.

Usage:  python3 tools/gen_kernel_fixtures.py [OUT_DIR]     (default: tools/fixtures/kernels)

Needs numpy and llama.cpp's Python package `gguf` (gguf-py; written against 0.19.0).
Output is deterministic (fixed seeds), so re-running reproduces the same bytes.

What is written (all little-endian):

  <TYPE>.blocks.bin    raw ggml blocks of TYPE
  <TYPE>.dequant.f32   the expected dequantization of those blocks (f32)
  <TYPE>.qin.f32       f32 inputs for an activation quantizer
  <TYPE>.qout.bin      the expected quantized blocks for those inputs
  index.json           list of the above with counts and the source of each expectation

Where the expectations come from:

  * dequant: gguf-py's `gguf.quants.dequantize` for every type it supports
    (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K).
    Q8_1 is not in gguf-py: its elements are q*d exactly as Q8_0, so the expectation is gguf-py's
    Q8_0 dequantize of the same (d, qs) bytes with `s` dropped.  Q8_K is not in gguf-py either:
    its expectation is numpy `float32(d) * float32(q)` (an independent one-liner, source "numpy").
  * blocks: for types gguf-py can quantize (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the first part of the
    blocks is gguf-py's quantization of seeded random data; the rest (all types) are random raw
    bytes with the f16/f32 scale fields replaced by finite values (some f16 subnormals, zeros,
    negative scales) so no NaN/inf can appear.
  * quantize: gguf-py's `gguf.quants.quantize` for F16 (numpy astype, round-half-even),
    BF16 (gguf-py BF16, round-half-even like ggml_compute_fp32_to_bf16) and Q8_0
    (gguf-py's np_roundf = C roundf, ties AWAY from zero, like quantize_row_q8_0_ref).
    The inputs contain exact .5 ties after scaling (blocks whose amax is 127 or 254 give
    d = 1 or 2 exactly), so a ties-to-even quantizer would differ from the expectation.
    Q8_1 expectation: d and qs from gguf-py's Q8_0 quantizer (the reference algorithm is the
    same), s = f16(float32(sum(q)) * float32(d)) computed here with numpy (source "gguf-py+numpy").
    Q8_K expectation: a numpy re-implementation of quantize_row_q8_K_ref written for this script
    (source "numpy", not gguf-py): signed max, iscale = -127/max, round-half-even, min(127, q),
    bsums, d = 1/iscale, and all-zero blocks give d = 0, q = 0 and bsums = 0.
"""

import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

QK_K = 256

# name -> (ggml id, block elems, block bytes, [byte offsets of f16 scale fields])
TYPES = {
    "F32": (0, 1, 4, []),
    "F16": (1, 1, 2, []),
    "BF16": (30, 1, 2, []),
    "Q4_0": (2, 32, 18, [0]),
    "Q4_1": (3, 32, 20, [0, 2]),
    "Q5_0": (6, 32, 22, [0]),
    "Q5_1": (7, 32, 24, [0, 2]),
    "Q8_0": (8, 32, 34, [0]),
    "Q8_1": (9, 32, 36, [0, 2]),
    "Q2_K": (10, 256, 84, [80, 82]),
    "Q3_K": (11, 256, 110, [108]),
    "Q4_K": (12, 256, 144, [0, 2]),
    "Q5_K": (13, 256, 176, [0, 2]),
    "Q6_K": (14, 256, 210, [208]),
    "Q8_K": (15, 256, 292, []),
}

N_RAW_32 = 192  # random raw blocks for 32-element types
N_QUANT_32 = 64  # blocks made by gguf-py's quantizer (types it can quantize)
N_RAW_K = 40  # random raw blocks for 256-element types
N_SCALAR = 4096  # elements for F32/F16/BF16


def random_scales(rng, n):
    """Finite f16 scale values: mostly moderate, some subnormal, some zero/negative."""
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), size=n)).astype(np.float32)
    sign = np.where(rng.random(n) < 0.2, -1.0, 1.0).astype(np.float32)
    v = (mag * sign).astype(np.float16)
    special = rng.random(n)
    v = np.where(special < 0.05, np.float16(0.0), v)
    sub = rng.integers(1, 0x400, size=n).astype(np.uint16).view(np.float16)  # f16 subnormals
    v = np.where((special >= 0.05) & (special < 0.10), sub, v)
    return v.astype(np.float16)


def raw_blocks(rng, name, n):
    _, elems, size, f16_offsets = TYPES[name]
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off in f16_offsets:
        b[:, off:off + 2] = random_scales(rng, n).view(np.uint8).reshape(n, 2)
    if name == "Q8_K":
        d = (rng.uniform(-1e-2, 1e-2, size=n)).astype(np.float32)
        d[0] = 0.0
        b[:, 0:4] = d.view(np.uint8).reshape(n, 4)
    # first raw block: extreme quants (all 0x00), second: all 0xFF, with a plain scale
    b[0, :] = 0
    b[1, :] = 0xFF
    for off in f16_offsets:
        b[0, off:off + 2] = np.array([0.5], dtype=np.float16).view(np.uint8)
        b[1, off:off + 2] = np.array([-0.25], dtype=np.float16).view(np.uint8)
    if name == "Q8_K":
        b[0, 0:4] = np.array([0.5], dtype=np.float32).view(np.uint8)
        b[1, 0:4] = np.array([-0.25], dtype=np.float32).view(np.uint8)
    return b


def scalar_raw(rng, name):
    if name == "F32":
        bits = rng.integers(0, 2**32, size=N_SCALAR, dtype=np.uint64).astype(np.uint32)
        exp = (bits >> 23) & 0xFF
        bits = np.where(exp == 0xFF, bits & ~np.uint32(0x40000000), bits)  # no inf/nan
        return bits.view(np.uint8).reshape(-1, 4)
    bits = rng.integers(0, 2**16, size=N_SCALAR, dtype=np.uint32).astype(np.uint16)
    if name == "F16":
        exp = (bits >> 10) & 0x1F
        bits = np.where(exp == 0x1F, bits & ~np.uint16(0x4000), bits)
    else:  # BF16
        exp = (bits >> 7) & 0xFF
        bits = np.where(exp == 0xFF, bits & ~np.uint16(0x4000), bits)
    return bits.astype(np.uint16).view(np.uint8).reshape(-1, 2)


def dequant_expected(name, blocks):
    """Expected f32 output and its source."""
    if name == "Q8_1":
        as_q80 = np.concatenate([blocks[:, 0:2], blocks[:, 4:36]], axis=1)
        return gq.dequantize(as_q80.copy(), T.Q8_0).reshape(-1), "gguf-py (Q8_0 dequantize of d, qs)"
    if name == "Q8_K":
        d = blocks[:, 0:4].copy().view(np.float32).reshape(-1, 1)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).astype(np.float32).reshape(-1), "numpy d*q"
    out = gq.dequantize(blocks.reshape(-1).copy(), T[name])
    return np.asarray(out, dtype=np.float32).reshape(-1), "gguf-py"


def quant_inputs(rng, elems, n_blocks):
    """Quantizer inputs with edge cases; n_blocks blocks of `elems` values."""
    x = rng.standard_normal((n_blocks, elems)).astype(np.float32)
    x[0, :] = 0.0  # all zero
    x[1, :] = 0.75  # constant
    x[2, :] = -np.abs(x[2, :])  # negative only
    x[3, :] *= 1e-3
    x[3, elems // 3] = 1e4  # one huge outlier
    # exact ties: amax 127 -> d = 1, id = 1;   amax 254 -> d = 2, id = 0.5
    ties = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 100.5, -100.5, 126.5, -126.5])
    x[4, :] = np.resize(ties, elems)
    x[4, elems - 1] = 127.0
    x[5, :] = np.resize(ties * 2, elems)
    x[5, 0] = -254.0
    x[6, :] = rng.integers(-127, 128, size=elems) + 0.5  # more ties, signed max -127 below
    x[6, elems // 2] = -127.0
    x[7, :] *= 1e-30  # tiny values
    return x.astype(np.float32)


def q8_0_quant(x):
    return np.asarray(gq.quantize(x, T.Q8_0), dtype=np.uint8).reshape(-1, 34)


def q8_1_quant(x):
    q80 = q8_0_quant(x)
    # d as computed by the reference (f32, before rounding to f16) for s = sum * d
    d32 = (np.abs(x).max(axis=1) / np.float32(127)).astype(np.float32)
    qsum = q80[:, 2:].copy().view(np.int8).astype(np.int32).sum(axis=1)
    s = (qsum.astype(np.float32) * d32).astype(np.float32).astype(np.float16)
    return np.concatenate([q80[:, 0:2], s.view(np.uint8).reshape(-1, 2), q80[:, 2:]], axis=1)


def q8_k_quant(x):
    n = x.shape[0]
    out = np.zeros((n, 292), dtype=np.uint8)
    for i in range(n):
        row = x[i]
        imax = int(np.argmax(np.abs(row)))  # first index of the largest |x| (strict >)
        amax = np.abs(row[imax])
        if amax == 0:
            continue  # d = 0, qs = 0, bsums = 0
        iscale = np.float32(-127.0) / row[imax]
        v = np.round((iscale * row).astype(np.float32))  # np.round: half to even
        q = np.minimum(v, 127).astype(np.int8)
        bsums = q.astype(np.int16).reshape(16, 16).sum(axis=1).astype(np.int16)
        d = (np.float32(1.0) / iscale).astype(np.float32)
        out[i, 0:4] = np.array([d], dtype=np.float32).view(np.uint8)
        out[i, 4:260] = q.view(np.uint8)
        out[i, 260:292] = bsums.view(np.uint8)
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures", "kernels")
    os.makedirs(out_dir, exist_ok=True)
    index = {"generator": "tools/gen_kernel_fixtures.py", "gguf_py_version": None, "dequant": [], "quantize": []}
    try:
        from importlib.metadata import version

        index["gguf_py_version"] = version("gguf")
    except Exception:  # pragma: no cover
        pass

    for k, name in enumerate(TYPES):
        rng = np.random.default_rng(1000 + k)
        ggml_id, elems, size, _ = TYPES[name]
        if elems == 1:
            blocks = scalar_raw(rng, name)
        else:
            parts = []
            if name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
                x = rng.standard_normal((N_QUANT_32, 32)).astype(np.float32)
                x *= np.exp(rng.uniform(-6, 3, size=(N_QUANT_32, 1))).astype(np.float32)
                x[0, :] = 0.0
                q = np.asarray(gq.quantize(x, T[name]), dtype=np.uint8).reshape(-1, size)
                parts.append(q)
            parts.append(raw_blocks(rng, name, N_RAW_32 if elems == 32 else N_RAW_K))
            blocks = np.concatenate(parts, axis=0)
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
        assert blocks.shape[1] == size
        expected, source = dequant_expected(name, blocks)
        assert expected.shape[0] == blocks.shape[0] * elems
        assert np.all(np.isfinite(expected)), name
        blocks.tofile(os.path.join(out_dir, f"{name}.blocks.bin"))
        expected.astype("<f4").tofile(os.path.join(out_dir, f"{name}.dequant.f32"))
        index["dequant"].append(
            {"type": name, "id": ggml_id, "n_blocks": int(blocks.shape[0]), "block_bytes": size,
             "block_elems": elems, "blocks": f"{name}.blocks.bin", "expected": f"{name}.dequant.f32",
             "source": source})

    quantizers = {
        "F16": (32, lambda x: np.asarray(gq.quantize(x, T.F16)).view(np.uint8), "gguf-py"),
        "BF16": (32, lambda x: np.asarray(gq.quantize(x, T.BF16), dtype=np.uint8), "gguf-py"),
        "Q8_0": (32, q8_0_quant, "gguf-py"),
        "Q8_1": (32, q8_1_quant, "gguf-py+numpy"),
        "Q8_K": (256, q8_k_quant, "numpy"),
    }
    for k, (name, (elems, fn, source)) in enumerate(quantizers.items()):
        rng = np.random.default_rng(2000 + k)
        n_blocks = 48 if elems == 32 else 16
        x = quant_inputs(rng, elems, n_blocks)
        if name in ("F16", "BF16"):
            # add values that round at exact ties / subnormals for the float formats
            x[8, :16] = np.array([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 65519.0, 65520.0, 1e-6, -1e-7,
                                  6e-8, 2**-25, 3e38, -3e38, 1e-40, -1e-40, 0.0, -0.0], dtype=np.float32)
        with np.errstate(over="ignore"):  # F16 of +-3e38 is +-inf, as in C
            y = fn(x.reshape(-1) if name in ("F16", "BF16") else x)
        y = np.ascontiguousarray(y).view(np.uint8).reshape(-1)
        x.astype("<f4").tofile(os.path.join(out_dir, f"{name}.qin.f32"))
        y.tofile(os.path.join(out_dir, f"{name}.qout.bin"))
        index["quantize"].append(
            {"type": name, "n_elems": int(x.size), "input": f"{name}.qin.f32", "expected": f"{name}.qout.bin",
             "source": source})

    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(out_dir, p)) for p in os.listdir(out_dir))
    print(f"wrote {out_dir} ({total} bytes)")


if __name__ == "__main__":
    main()
