#!/usr/bin/env python3
"""Perplexity of a GGUF model on a text file, by llama.cpp, with `llama-perplexity`'s method.

llama-cpp-python ships the llama.cpp library but not the `llama-perplexity` tool, so this script
drives the library the way that tool does (tools/perplexity/perplexity.cpp, `perplexity()`):

- the whole text is tokenized once, with BOS when the vocabulary asks for it, special-token
  text left as plain text;
- fewer than 2 * n_ctx tokens is an error; the text is cut into n_ctx-token chunks
  (tokens / n_ctx of them, or --chunks), each evaluated from an empty KV cache;
- the first token of every chunk is replaced by BOS (when the vocabulary adds BOS);
- only the second half is scored: the logits at positions first = n_ctx/2 … n_ctx-2 predict
  tokens first+1 … n_ctx-1 (n_ctx - first - 1 tokens per chunk);
- nll = max + log(sum exp(logit - max)) - logit[token], exp in float32 summed in double;
- after each chunk the running exp(mean nll) is printed as `[i]x.xxxx,`; the final estimate is
  `PPL = exp(mean) +/- ppl * sqrt((mean(nll^2) - mean^2) / (count - 1))`.

Usage:
  python benches/perplexity_llamacpp.py -m MODEL.gguf -f TEXT [-c 512] [-b N] [-t N]
                                        [--chunks N] [--json OUT.json]

--json writes the numbers (--with-tokens adds the token ids, so tests can check tokenization).
"""
import argparse
import json
import math
import sys

import numpy as np
from llama_cpp import Llama


def chunk_nlls(logits, chunk, first):
    """Negative log-likelihoods of chunk[first+1:] from the logits at positions first..n-2."""
    out = []
    for j in range(first, len(chunk) - 1):
        row = logits[j]
        mx = row.max()
        sum_exp = np.exp(row - mx).astype(np.float64).sum()
        out.append(float(mx) + math.log(sum_exp) - float(row[chunk[j + 1]]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("-c", "--ctx-size", type=int, default=512)
    ap.add_argument("-b", "--batch-size", type=int, default=512)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=-1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--with-tokens", action="store_true", help="also write the token ids to --json")
    args = ap.parse_args()
    n_ctx = args.ctx_size

    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_batch=min(args.batch_size, n_ctx),
                n_threads=args.threads, n_threads_batch=args.threads, logits_all=True,
                verbose=False)
    text = open(args.file, encoding="utf-8").read()
    add_bos = llm._model.add_bos_token()
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if len(tokens) < 2 * n_ctx:
        sys.exit(f"{args.file}: {len(tokens)} tokens; at least {2 * n_ctx} are needed for -c {n_ctx}")
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = n_chunk_max if args.chunks < 0 else min(args.chunks, n_chunk_max)
    first = n_ctx // 2
    print(f"{len(tokens)} tokens, {n_chunk} chunks of {n_ctx}, add_bos={add_bos}", file=sys.stderr, flush=True)

    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        fed = list(chunk)
        if add_bos:
            fed[0] = llm.token_bos()
        llm.reset()
        llm.eval(fed)
        logits = np.asarray(llm.scores[:n_ctx], dtype=np.float32)
        for v in chunk_nlls(logits, chunk, first):
            nll += v
            nll2 += v * v
            count += 1
        running.append(math.exp(nll / count))
        print(f"[{i + 1}]{running[-1]:.4f},", end="", flush=True)
    print()
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    err = ppl * math.sqrt(var / (count - 1)) if var > 0 else float("nan")
    print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "engine": "llama-cpp-python (llama.cpp library), llama-perplexity's method",
                "model": args.model.rsplit("/", 1)[-1],
                "text": args.file.rsplit("/", 1)[-1],
                "n_ctx": n_ctx, "n_batch": min(args.batch_size, n_ctx), "add_bos": add_bos,
                "n_tokens": len(tokens), "n_chunks": n_chunk, "count": count,
                "running_ppl": running, "ppl": ppl, "ppl_err": err,
                **({"tokens": tokens} if args.with_tokens else {}),
            }, f)
            f.write("\n")


if __name__ == "__main__":
    main()
