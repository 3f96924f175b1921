#!/usr/bin/env python3
"""Compare two GGUF files value by value: every metadata key (arrays element-wise) and every
tensor (type, shape, and the largest absolute difference of the dequantized values).
Exit status 1 if the key sets or tensor sets differ.

Usage: python tools/scripts/gguf_diff.py A.gguf B.gguf   (needs gguf-py and numpy)
"""
import sys

import numpy as np
import gguf
from gguf.quants import dequantize


def fields(r):
    return {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}


def main(a_path, b_path):
    a, b = gguf.GGUFReader(a_path), gguf.GGUFReader(b_path)
    fa, fb = fields(a), fields(b)
    status = 0
    for k in sorted(set(fa) | set(fb)):
        if k not in fa or k not in fb:
            print(f"key {k}: only in {'A' if k in fa else 'B'}")
            status = 1
            continue
        va, vb = fa[k].contents(), fb[k].contents()
        if va != vb:
            print(f"key {k}: differs: {str(va)[:80]!r} vs {str(vb)[:80]!r}")
    ta = {t.name: t for t in a.tensors}
    tb = {t.name: t for t in b.tensors}
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            print(f"tensor {name}: only in {'A' if name in ta else 'B'}")
            status = 1
            continue
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            print(f"tensor {name}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
            status = 1
            continue
        dx = dequantize(x.data, x.tensor_type).astype(np.float64).ravel()
        dy = dequantize(y.data, y.tensor_type).astype(np.float64).ravel()
        same_bytes = bytes(x.data.tobytes()) == bytes(y.data.tobytes())
        print(f"tensor {name}: {x.tensor_type.name} bytes {'identical' if same_bytes else 'differ'}, "
              f"max |diff| {np.abs(dx - dy).max():.3g}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
