#!/usr/bin/env python3
"""`lumen bench` next to llama.cpp with llama-bench's method, same file, same threads, one run.

llama.cpp comes from llama-cpp-python (built natively, AMX compiled out; see BENCHMARKS.md).
For each thread count and repetition it does what llama-bench does: pp = one batch of N random
tokens into an empty context, tg = N single-token decodes from an empty context, timed with
wall clock around llama-cpp-python's eval (its perf
counters read zero in this version; the Python call overhead is a few µs per token), one warm-up run first. Lumen's numbers
come from `lumen bench -o json`. Prints both tables and Lumen ÷ llama.cpp ratios.

With `--rounds K` the two engines alternate K times (each round: Lumen `-r R`, then llama.cpp
R reps), and each engine's figure is the mean ± sd of its K round means. This spreads a shared
host's slow periods over both engines instead of letting one engine's whole run fall into one.

Usage: python benches/llama_bench_compare.py MODEL.gguf [MODEL2.gguf …] [-p 512] [-n 128]
                                             [-t 1,2] [-r 3] [--rounds 1] [--lumen target/release/lumen]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, random, statistics, sys, time
    import llama_cpp
    from llama_cpp import Llama
    model, threads, n_prompt, n_gen, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    llm = Llama(model_path=model, n_ctx=max(n_prompt, n_gen) + 16, n_batch=max(n_prompt, 1), n_ubatch=max(n_prompt, 1),
                n_threads=threads, n_threads_batch=threads, verbose=False)
    rng = random.Random(1234)
    n_vocab = llm.n_vocab()
    def run(kind, n):
        llm.reset()
        toks = [rng.randrange(n_vocab) for _ in range(n)]
        start = time.perf_counter()
        if kind == "pp":
            llm.eval(toks)
        else:
            for t in toks:
                llm.eval([t])
        return n / (time.perf_counter() - start)
    rows = []
    for kind, n in (("pp", n_prompt), ("tg", n_gen)):
        if n <= 0:
            continue
        run(kind, n)
        ts = [run(kind, n) for _ in range(reps)]
        rows.append({"n_prompt": n if kind == "pp" else 0, "n_gen": n if kind == "tg" else 0, "n_threads": threads,
                     "avg_ts": sum(ts) / len(ts), "stddev_ts": (statistics.stdev(ts) if len(ts) > 1 else 0.0)})
    print(json.dumps(rows))
    """
)


def llamacpp(python, model, threads, n_prompt, n_gen, reps):
    out = subprocess.run([python, "-c", CHILD, model, str(threads), str(n_prompt), str(n_gen), str(reps)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"llama.cpp failed on {model}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def lumen(binary, model, threads, n_prompt, n_gen, reps):
    out = subprocess.run([binary, "bench", "-m", model, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
                          "-r", str(reps), "-o", "json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lumen failed on {model}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def label(row):
    return f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"


def combine(rounds):
    """One row per test from several rounds: a single round as measured, else mean ± sd of
    the round means."""
    if len(rounds) == 1:
        return rounds[0]
    out = {}
    for test in rounds[0]:
        means = [r[test]["avg_ts"] for r in rounds]
        out[test] = dict(rounds[0][test], avg_ts=statistics.mean(means), stddev_ts=statistics.stdev(means))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", default="2")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--lumen", default="target/release/lumen")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    print("| model | threads | test | lumen t/s | llama.cpp t/s | lumen ÷ llama.cpp |")
    print("|---|---:|---:|---:|---:|---:|")
    for model in args.models:
        for t in [int(x) for x in args.t.split(",")]:
            ours_rounds, theirs_rounds = [], []
            for _ in range(args.rounds):
                ours_rounds.append({label(r): r for r in lumen(args.lumen, model, t, args.p, args.n, args.r)})
                theirs_rounds.append({label(r): r for r in llamacpp(args.python, model, t, args.p, args.n, args.r)})
            ours, theirs = combine(ours_rounds), combine(theirs_rounds)
            for test in ours:
                o, c = ours[test], theirs[test]
                print(f"| {os.path.basename(model)} | {t} | {test} | {o['avg_ts']:.2f} ± {o['stddev_ts']:.2f} "
                      f"| {c['avg_ts']:.2f} ± {c['stddev_ts']:.2f} | {o['avg_ts'] / c['avg_ts']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
