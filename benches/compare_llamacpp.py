#!/usr/bin/env python3
"""Prompt and generation speed of Lumen next to llama.cpp on the same GGUF file and threads.

llama.cpp comes from llama-cpp-python built natively (see BENCHMARKS.md for the build line);
its numbers are llama.cpp's own `llama_perf_context_print` timings. Lumen's come from the
timing line `lumen run` prints. Same prompt tokens, same number of generated tokens (greedy,
ignoring end of generation is not possible in `lumen run`, so the prompt is chosen to keep
both generating), mean ± sd over repetitions.

Usage: python benches/compare_llamacpp.py MODEL.gguf [--threads 1,2] [--reps 3]
                                          [--prompt-tokens 128] [--gen 64] [--lumen PATH]
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import textwrap

LLAMACPP_CHILD = textwrap.dedent(
    """
    import sys
    from llama_cpp import Llama
    model, threads, n_gen, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=True)
    toks = llm.tokenize(prompt.encode(), add_bos=False)
    print("PROMPT_TOKENS", len(toks), file=sys.stderr)
    llm.create_completion(prompt, max_tokens=n_gen, temperature=0.0, top_k=1)
    """
)

PERF = re.compile(r"(prompt eval|eval) time =\s*([\d.]+) ms /\s*(\d+) (?:tokens|runs)")
LUMEN = re.compile(r"prompt (\d+) tokens, ([\d.]+) tokens/s \| generation (\d+) tokens, ([\d.]+) tokens/s")


def run_llamacpp(python, model, threads, n_gen, prompt):
    out = subprocess.run([python, "-c", LLAMACPP_CHILD, model, str(threads), str(n_gen), prompt],
                         capture_output=True, text=True, check=True).stderr
    found = {}
    for kind, ms, n in PERF.findall(out):
        found[kind] = (int(n), int(n) / (float(ms) / 1e3))
    return found["prompt eval"], found["eval"]


def run_lumen(lumen, model, threads, n_gen, prompt):
    out = subprocess.run([lumen, "run", "-m", model, "-p", prompt, "-n", str(n_gen), "--temp", "0",
                          "-t", str(threads), "-c", "2048"], capture_output=True, text=True, check=True).stderr
    m = LUMEN.search(out)
    return (int(m.group(1)), float(m.group(2))), (int(m.group(3)), float(m.group(4)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=100)
    ap.add_argument("--lumen", default="target/release/lumen")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    words = ("The history of the city begins with a small village by the river, where farmers "
             "and fishermen traded goods every season and built houses of stone and wood. ").split()
    prompt = " ".join((words * 20)[: args.prompt_words])
    rows = []
    for t in [int(x) for x in args.threads.split(",")]:
        for name, fn in (("lumen", lambda: run_lumen(args.lumen, args.model, t, args.gen, prompt)),
                         ("llama.cpp", lambda: run_llamacpp(args.python, args.model, t, args.gen, prompt))):
            pp, tg = [], []
            for _ in range(args.reps):
                (n_p, p_ts), (n_g, g_ts) = fn()
                pp.append(p_ts)
                tg.append(g_ts)
            rows.append({"engine": name, "n_threads": t, "n_prompt": n_p, "n_gen": n_g,
                         "pp_ts": statistics.mean(pp), "pp_sd": statistics.pstdev(pp),
                         "tg_ts": statistics.mean(tg), "tg_sd": statistics.pstdev(tg)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"| engine | threads | prompt tokens | prompt t/s | gen tokens | gen t/s |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['n_threads']} | {r['n_prompt']} | {r['pp_ts']:.1f} ± {r['pp_sd']:.1f} "
              f"| {r['n_gen']} | {r['tg_ts']:.1f} ± {r['tg_sd']:.1f} |")
    print()
    print("| threads | lumen / llama.cpp prompt | lumen / llama.cpp gen |")
    print("|---|---|---|")
    for t in sorted({r["n_threads"] for r in rows}):
        l = next(r for r in rows if r["engine"] == "lumen" and r["n_threads"] == t)
        c = next(r for r in rows if r["engine"] == "llama.cpp" and r["n_threads"] == t)
        print(f"| {t} | {l['pp_ts'] / c['pp_ts']:.2f}× | {l['tg_ts'] / c['tg_ts']:.2f}× |")


if __name__ == "__main__":
    main()
