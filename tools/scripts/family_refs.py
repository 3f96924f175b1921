"""Independent reference data for a real GGUF model, made by Hugging Face transformers.

transformers reads the GGUF itself (tokenizer rebuilt from the `tokenizer.ggml.*` metadata,
weights dequantized to float32 by gguf-py), so the outputs do not depend on Lumen's code.
Writes into OUT_DIR:

    tokens.json    [{"text", "ids" (add_special_tokens=False), "ids_special"? (=True)}]
    prompts.json   the 4 logits prompts, their ids (add_special_tokens=True), top-10 per prompt
    logits.npy     float32 [4, n_vocab], last-position logits of each prompt
    greedy.json    16-token greedy continuation of prompt 0, top1-top2 margin at each step
    chat.json      GGUF `tokenizer.chat_template` rendered by apply_chat_template
    versions.json  library versions, GGUF path/sha256, the transformers config it built

Run with a venv holding torch, transformers, tokenizers, gguf, sentencepiece, protobuf, jinja2
(one thread is enough; the two models used take a few minutes each):

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $VENV/bin/python tools/scripts/family_refs.py \
        MODEL.gguf tests/fixtures/refs/NAME
"""
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import gguf  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "1, 1, 2, 3, 5, 8, 13,",
]
GREEDY_STEPS = 16

COMMON_TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing spaces   ",
    "a  b   c\n\n\n  d",
    "\n",
    "\t\tindented with tabs\n\tand one tab",
    "    four spaces\n        eight spaces",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "class Foo:\n\tdef bar(self, x: int) -> str:\n\t\treturn f\"{x:>08d}\"  # comment\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i]; }",
    "1234567890 3.14159 1,000,000",
    "0.000001 -42 1e-9 0x1F 100%",
    "2024-01-15T12:34:56Z",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u6f22\u5b57",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00e0 la cr\u00e8me br\u00fbl\u00e9e",
    "e\u0301 (combining acute) vs \u00e9",
    "\U0001f600 \U0001f44d\U0001f3fd \U0001f680",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family \U0001f3f3\ufe0f\u200d\U0001f308 flag",
    "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5",
    "<html><body><p>Hi &amp; bye</p></body></html>",
    "https://example.com/path?query=1&b=2#frag",
    "   ",
    "Mixed\u00a0nbsp and \u2014 em dash \u2026 ellipsis \u201cquotes\u201d",
]
SPECIAL_TEXTS = {
    "qwen2": [
        "<|im_start|>user\nhi<|im_end|>",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|>text after eot",
        "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    ],
    "gemma3": [
        "<start_of_turn>user\nhi<end_of_turn>",
        "<start_of_turn>model\nHello!<end_of_turn>\n",
        "<bos>text after bos<eos>",
        "<start_of_turn>user\n\n\n\nmany newlines<end_of_turn>",
    ],
}
# strings whose ids are also recorded with add_special_tokens=True
SPECIAL_TOO = {"Hello world", "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"}

GET_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CONVERSATIONS = [
    {"name": "single_user", "messages": [{"role": "user", "content": "Hello! How are you?"}]},
    {
        "name": "system_multi_turn",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And times 3?"},
        ],
    },
    {
        "name": "tools",
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": [GET_WEATHER],
    },
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_string(reader, key):
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


@torch.no_grad()
def last_logits(model, ids):
    out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0, -1].float()


def main():
    gguf_path = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)

    reader = gguf.GGUFReader(str(gguf_path))
    arch = gguf_string(reader, "general.architecture")
    template = gguf_string(reader, "tokenizer.chat_template")
    del reader

    d, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()

    # --- tokens.json
    texts = COMMON_TEXTS + SPECIAL_TEXTS.get(arch, [])
    tokens = []
    for t in texts:
        e = {"text": t, "ids": tok.encode(t, add_special_tokens=False)}
        if t in SPECIAL_TOO:
            e["ids_special"] = tok.encode(t, add_special_tokens=True)
        e["decoded"] = tok.decode(e["ids"])
        tokens.append(e)
    dump(out / "tokens.json", tokens)

    # --- prompts.json + logits.npy
    prompt_entries, rows = [], []
    for p in PROMPTS:
        ids = tok.encode(p, add_special_tokens=True)
        lg = last_logits(model, ids)
        top = torch.topk(lg, 10)
        rows.append(lg.numpy().astype(np.float32))
        prompt_entries.append(
            {
                "text": p,
                "ids": ids,
                "top10_ids": top.indices.tolist(),
                "top10_logits": [float(x) for x in top.values],
            }
        )
    logits = np.stack(rows).astype(np.float32)
    np.save(out / "logits.npy", logits)
    dump(
        out / "prompts.json",
        {"add_special_tokens": True, "logits_shape": list(logits.shape), "prompts": prompt_entries},
    )

    # --- greedy.json (full recompute each step, no KV cache)
    ids = list(prompt_entries[0]["ids"])
    steps = []
    for _ in range(GREEDY_STEPS):
        lg = last_logits(model, ids)
        top = torch.topk(lg, 2)
        nxt = int(top.indices[0])
        steps.append(
            {
                "id": nxt,
                "token": tok.convert_ids_to_tokens(nxt),
                "top1_logit": float(top.values[0]),
                "top2_id": int(top.indices[1]),
                "margin": float(top.values[0] - top.values[1]),
            }
        )
        ids.append(nxt)
    dump(
        out / "greedy.json",
        {
            "prompt": PROMPTS[0],
            "prompt_ids": prompt_entries[0]["ids"],
            "ids": [s["id"] for s in steps],
            "text": tok.decode([s["id"] for s in steps]),
            "steps": steps,
        },
    )

    # --- chat.json
    chat = {"gguf_has_chat_template": template is not None, "template": template, "renders": []}
    if template is not None:
        assert tok.chat_template == template, "tokenizer did not take the GGUF template verbatim"
        for conv in CONVERSATIONS:
            tools = conv.get("tools")
            if tools is not None and "tools" not in template:
                continue
            kwargs = {"tools": tools} if tools is not None else {}
            rendered = tok.apply_chat_template(
                conv["messages"], tokenize=False, add_generation_prompt=True, **kwargs
            )
            entry = dict(conv)
            entry["add_generation_prompt"] = True
            entry["rendered"] = rendered
            entry["rendered_ids"] = tok.encode(rendered, add_special_tokens=False)
            chat["renders"].append(entry)
    dump(out / "chat.json", chat)

    # --- versions.json
    dump(
        out / "versions.json",
        {
            "gguf_file": name,
            "gguf_sha256": sha256(gguf_path),
            "architecture": arch,
            "python": sys.version.split()[0],
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            "numpy": np.__version__,
            "torch_dtype": "float32",
            "attn_implementation": "eager",
            "tokenizer_class": type(tok).__name__,
            "model_class": type(model).__name__,
            "hf_config": {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"},
        },
    )
    print(f"wrote {out}")


def _dist_version(pkg):
    from importlib.metadata import version

    return version(pkg)


if __name__ == "__main__":
    main()
