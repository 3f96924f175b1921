#!/usr/bin/env python3
"""Quantize one GGUF with llama.cpp (llama-cpp-python's `llama_model_quantize`) and with
`lumen-quantize`, then compare them tensor by tensor.

Usage:
  $VENV/bin/python tools/scripts/quantize_vs_llamacpp.py IN.gguf TYPE \\
      [--threads 2] [--lumen target/release/lumen-quantize] [--workdir DIR] \\
      [--allow-requantize] [--keep] [--json OUT.json]

For every tensor it prints both types, both RMSEs against the input's weights (dequantized to
f32 with gguf-py, so the reference is independent of both quantizers), their ratio
lumen/llama.cpp and whether the bytes are identical; then the worst ratio, the metadata key
sets and the wall-clock times of both runs (same threads, same machine, run back to back).
Exit status 1 if a type differs or a ratio exceeds 1.01.
"""

import argparse
import filecmp
import json
import os
import subprocess
import sys
import time

import numpy as np
from gguf import GGUFReader
from gguf import quants as gq

FILE_TYPES = {
    "F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
}


def run_llama(src, dst, ftype, threads, allow_requantize):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.allow_requantize = ftype, threads, allow_requantize
    t = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
    dt = time.perf_counter() - t
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc})")
    return dt


def run_lumen(exe, src, dst, name, threads, allow_requantize):
    cmd = [exe, src, dst, name, str(threads), "--force"]
    if allow_requantize:
        cmd.append("--allow-requantize")
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"lumen-quantize failed:\n{r.stderr}")
    return dt


def f32_of(t):
    data = np.asarray(t.data)
    return np.asarray(gq.dequantize(data, t.tensor_type), dtype=np.float64).reshape(-1)


def metadata_keys(r):
    return [k for k in r.fields if not k.startswith("GGUF.")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("type", choices=sorted(FILE_TYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lumen", default=os.path.join("target", "release", "lumen-quantize"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--allow-requantize", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep both outputs")
    ap.add_argument("--json", default=None, help="write the per-tensor table here")
    a = ap.parse_args()

    work = a.workdir or os.path.dirname(os.path.abspath(a.input))
    base = os.path.splitext(os.path.basename(a.input))[0]
    out_ll = os.path.join(work, f"{base}.{a.type}.llamacpp.gguf")
    out_lu = os.path.join(work, f"{base}.{a.type}.lumen.gguf")
    t_ll = run_llama(a.input, out_ll, FILE_TYPES[a.type], a.threads, a.allow_requantize)
    t_lu = run_lumen(a.lumen, a.input, out_lu, a.type, a.threads, a.allow_requantize)

    src, ll, lu = GGUFReader(a.input), GGUFReader(out_ll), GGUFReader(out_lu)
    ll_t = {t.name: t for t in ll.tensors}
    lu_t = {t.name: t for t in lu.tensors}
    rows, bad = [], 0
    print(f"{'tensor':<34} {'llama.cpp':>9} {'lumen':>6} {'rmse llama.cpp':>14} {'rmse lumen':>11}"
          f" {'ratio':>7} bytes")
    for t in src.tensors:
        x = f32_of(t)
        a_t, b_t = ll_t[t.name], lu_t[t.name]
        ra = float(np.sqrt(np.mean((f32_of(a_t) - x) ** 2)))
        rb = float(np.sqrt(np.mean((f32_of(b_t) - x) ** 2)))
        ratio = rb / ra if ra > 0 else (1.0 if rb == 0 else float("inf"))
        same = np.array_equal(np.asarray(a_t.data).view(np.uint8), np.asarray(b_t.data).view(np.uint8))
        ta, tb = a_t.tensor_type.name, b_t.tensor_type.name
        if ta != tb or ratio > 1.01:
            bad += 1
        rows.append({"tensor": t.name, "llama_type": ta, "lumen_type": tb, "rmse_llama": ra,
                     "rmse_lumen": rb, "ratio": ratio, "bytes_equal": bool(same)})
        print(f"{t.name:<34} {ta:>9} {tb:>6} {ra:>14.6e} {rb:>11.6e} {ratio:>7.4f} "
              f"{'same' if same else 'DIFF'}")
    worst = max(rows, key=lambda r: r["ratio"])
    n_same = sum(r["bytes_equal"] for r in rows)
    keys_ll, keys_lu = metadata_keys(ll), metadata_keys(lu)
    print(f"\n{a.type}: {len(rows)} tensors, {n_same} byte-identical, worst RMSE ratio "
          f"{worst['ratio']:.4f} ({worst['tensor']}), {bad} over 1.01 or with another type")
    print(f"metadata keys: {'same order' if keys_ll == keys_lu else 'differ'}"
          + ("" if keys_ll == keys_lu else f"\n  llama.cpp: {keys_ll}\n  lumen:     {keys_lu}"))
    print(f"file sizes: llama.cpp {os.path.getsize(out_ll)}, lumen {os.path.getsize(out_lu)}; "
          f"whole file identical: {filecmp.cmp(out_ll, out_lu, shallow=False)}")
    print(f"time at {a.threads} threads: llama.cpp {t_ll:.2f} s, lumen {t_lu:.2f} s, "
          f"lumen/llama.cpp {t_lu / t_ll:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"type": a.type, "threads": a.threads, "time_llama": t_ll,
                       "time_lumen": t_lu, "tensors": rows}, f, indent=1)
    if not a.keep:
        os.remove(out_ll)
        os.remove(out_lu)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
