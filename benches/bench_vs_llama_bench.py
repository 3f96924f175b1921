#!/usr/bin/env python3
"""`lumen bench` next to llama.cpp's own `llama-bench`, same files, same threads, engines
alternating, one table of tokens/s and Lumen ÷ llama.cpp ratios.

Each round runs, for every model, `lumen bench -o json` then `llama-bench -o json` with the same
`-p`, `-n`, `-t` and `-r`; the figure for an engine is its best round mean (the slow periods of a
shared host fall on either engine). `--kernels avx2` sets `LUMEN_KERNELS` for Lumen (the AVX2
level on an AVX-512 machine); llama.cpp runs as built.

llama-bench comes from a native build of the llama.cpp tree that the llama-cpp-python sdist
vendors (`cmake -DGGML_NATIVE=ON`, targets llama-bench …; see BENCHMARKS.md). For the AVX2
level, compare with an AVX2-only build of the same tree (`-DGGML_NATIVE=OFF -DGGML_AVX=ON
-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF
-DGGML_AVX_VNNI=OFF`), so that neither engine runs instructions an AVX2-only CPU lacks.

Usage: python3 benches/bench_vs_llama_bench.py --llama-bench PATH MODEL.gguf [MODEL2.gguf …]
           [-p 512] [-n 128] [-t 2] [-r 2] [--rounds 2] [--kernels avx2] [--lumen target/release/lumen]
"""
import argparse
import json
import os
import subprocess
import sys


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out[out.index("["):])


def rows_by_test(rows):
    """{"pp512": t/s, "tg128": t/s} from llama-bench-style JSON rows."""
    out = {}
    for r in rows:
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        out[test] = r["avg_ts"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--lumen", default="target/release/lumen")
    ap.add_argument("-p", default="512")
    ap.add_argument("-n", default="128")
    ap.add_argument("-t", default="2")
    ap.add_argument("-r", default="2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kernels", default=None, help="LUMEN_KERNELS for Lumen (e.g. avx2)")
    a = ap.parse_args()

    env = dict(os.environ)
    if a.kernels:
        env["LUMEN_KERNELS"] = a.kernels
    common = ["-p", a.p, "-n", a.n, "-t", a.t, "-r", a.r]
    best = {}  # (model, engine, test) -> best t/s
    for rnd in range(a.rounds):
        for m in a.models:
            for engine, cmd, e in [
                ("lumen", [a.lumen, "bench", "-m", m, *common, "-o", "json"], env),
                ("llama.cpp", [a.llama_bench, "-m", m, *common, "-o", "json"], None),
            ]:
                for test, ts in rows_by_test(run_json(cmd, e)).items():
                    key = (m, engine, test)
                    best[key] = max(best.get(key, 0.0), ts)
                    print(f"round {rnd + 1} {os.path.basename(m)} {engine} {test}: {ts:.2f} t/s",
                          file=sys.stderr)
    tests = sorted({k[2] for k in best}, key=lambda t: (t[:2] != "pp", t))
    level = a.kernels or "default"
    print(f"| file | test | Lumen t/s ({level}) | llama.cpp t/s | Lumen / llama.cpp |")
    print("|---|---|---:|---:|---:|")
    for m in a.models:
        for t in tests:
            lu, ll = best.get((m, "lumen", t)), best.get((m, "llama.cpp", t))
            if lu and ll:
                print(f"| {os.path.basename(m)} | {t} | {lu:.2f} | {ll:.2f} | {lu / ll:.2f}× |")


if __name__ == "__main__":
    main()
