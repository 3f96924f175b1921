#!/usr/bin/env python3
"""Last-position logits from llama.cpp (llama-cpp-python) for the SmolLM2 reference prompts,
and their relative L2 distance to the Hugging Face float32 reference.

Usage: python tools/scripts/llamacpp_logits.py MODEL.gguf [REFS_DIR] [THREADS]
"""
import json
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

model = sys.argv[1]
refs = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/refs/smollm2")
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
index = json.loads((refs / "index.json").read_text())
llm = Llama(model_path=model, n_ctx=512, n_threads=threads, logits_all=True, verbose=False)
for p in index["prompts"]:
    llm.reset()
    llm.eval(p["prompt_ids"])
    ours = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    ref = np.load(refs / p["last_logits_file"]).astype(np.float64)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(json.dumps({"tag": p["tag"], "rel_l2_vs_hf": round(float(rel), 5),
                      "top1": int(ours.argmax()), "ref_top1": int(ref.argmax())}))
