#!/usr/bin/env python3
"""Interop check for the converter: llama.cpp (llama-cpp-python) runs Lumen's conversion of
../shared/fixtures/tiny-llama and llama.cpp's own conversion of it; prints, per prompt, the
largest absolute logit difference between the two files (all positions), each file against
transformers' reference logits, and whether the greedy continuations equal transformers'.

Usage: python tools/scripts/interop_tiny_llama.py LUMEN.gguf LLAMACPP.gguf [FIXTURE_DIR]
(needs llama-cpp-python and numpy; llamacpp's file comes from llamacpp_convert_reference.sh)
"""
import json
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama


def run(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def greedy(llm, ids, n):
    llm.reset()
    out = []
    for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(tok)
        if len(out) == n:
            break
    return out


def main(ours_path, theirs_path, fixture):
    refs = json.loads((fixture / "refs.json").read_text())
    kw = dict(n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    ours, theirs = Llama(model_path=ours_path, **kw), Llama(model_path=theirs_path, **kw)
    worst = 0.0
    cases = [(p["prompt"], p["ids"], fixture / p["all_logits"], p["greedy16"]) for p in refs["prompts"]]
    cases.append(("300 random ids (last position)", refs["long"]["ids"], fixture / refs["long"]["last_logits"], None))
    for name, ids, ref_file, greedy_ref in cases:
        a, b = run(ours, ids), run(theirs, ids)
        ref = np.load(ref_file).astype(np.float64)
        if ref.ndim == 1:
            a, b = a[-1], b[-1]
        d = float(np.abs(a - b).max())
        worst = max(worst, d)
        row = {"case": name, "lumen_vs_llamacpp_conversion": d,
               "lumen_file_vs_hf": float(np.abs(a - ref).max()),
               "llamacpp_file_vs_hf": float(np.abs(b - ref).max())}
        if greedy_ref is not None:
            row["greedy_lumen_file_eq_hf"] = greedy(ours, ids, 16) == greedy_ref
            row["greedy_llamacpp_file_eq_hf"] = greedy(theirs, ids, 16) == greedy_ref
        print(json.dumps(row))
    print(json.dumps({"max_abs_diff_between_conversions": worst, "within_1e-4": worst <= 1e-4}))


if __name__ == "__main__":
    fixture = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parents[2] / "../shared/fixtures/tiny-llama"
    main(sys.argv[1], sys.argv[2], fixture.resolve())
