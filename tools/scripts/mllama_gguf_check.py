#!/usr/bin/env python3
"""Check Lumen's mllama GGUFs against the Hugging Face checkpoint they were converted from,
independently of Lumen's code: gguf-py reads the GGUF, numpy reads the safetensors, and the
layout rules of the spec (MLLAMA_SPEC.md 4.2-4.5, Ollama's convert_mllama.go) are applied
here from scratch:

- names: Ollama's ordered string replacer (llama list + mllama list);
- text attn_q/attn_k and cross_attn_q_proj/k_proj: llama.cpp's row permutation over
  n_head / n_head_kv; vision attn_q/attn_k over the vision heads; q_norm/k_norm untouched;
- text cross gates raw; vision gates tanh(g); the positional gate written twice,
  v.position_embd.gate = 1 - tanh(g) and v.tile_position_embd.gate = tanh(g);
- rope_freqs.weight: llama.cpp's llama3 factors (torch-style float32 arithmetic);
- types: F32 file all F32; otherwise 1-D tensors and the four positional tables F32, the
  vision tower and projector F16 (Q8_0 file) or the file type, text matrices the file type
  (Q8_0 rows that are not whole 32-blocks: F16);
- every metadata key from config.json, preprocessor_config.json, tokenizer*.json and the chat
  template.

Every tensor's bytes must equal the expectation (F16 by numpy's round-to-nearest-even, Q8_0 by
gguf-py's reference quantizer) and every key its expected value; nothing extra may be present.

With --write-fixture, it writes what the Rust test (tools/tests/convert_mllama.rs) compares a
fresh conversion with: the expected keys (long arrays as length + sha256) and, per tensor,
the shape and per output type the ggml type and the sha256 of the expected bytes.

Usage:
  lumen-convert ../shared/fixtures/tiny-mllama --outtype f32 -o /tmp/mllama/tiny-mllama-f32.gguf
  (same for f16, q8_0)
  $VENV/bin/python tools/scripts/mllama_gguf_check.py \
      --model ../shared/fixtures/tiny-mllama --gguf f32=/tmp/mllama/tiny-mllama-f32.gguf \
      --gguf f16=/tmp/mllama/tiny-mllama-f16.gguf --gguf q8_0=/tmp/mllama/tiny-mllama-q8_0.gguf \
      --write-fixture tools/tests/fixtures/tiny_mllama_gguf.json
"""
import argparse
import hashlib
import json
import math
import os
import struct
import sys

import gguf
import numpy as np

LLAMA_REPLACEMENTS = [
    "lm_head", "output",
    "model.embed_tokens", "token_embd",
    "model.norm", "output_norm",
    "model.layers", "blk",
    "input_layernorm", "attn_norm",
    "self_attn.q_proj", "attn_q",
    "self_attn.k_proj", "attn_k",
    "self_attn.v_proj", "attn_v",
    "self_attn.o_proj", "attn_output",
    "mlp.gate_proj", "ffn_gate",
    "mlp.down_proj", "ffn_down",
    "mlp.up_proj", "ffn_up",
    "post_attention_layernorm", "ffn_norm",
]
MLLAMA_REPLACEMENTS = [
    "language_model.", "",
    "gate_attn", "attn_gate",
    "gate_ffn", "ffn_gate",
    "cross_attn.", "cross_attn_",
    "vision_model", "v",
    "class_embedding", "class_embd",
    "patch_embedding", "patch_embd",
    "gated_positional_embedding.tile_embedding", "tile_position_embd",
    "gated_positional_embedding.embedding", "position_embd.weight",
    "gated_positional_embedding", "position_embd",
    "embedding.weight", "weight",
    "pre_tile_positional_embedding", "pre_tile_position_embd",
    "post_tile_positional_embedding", "post_tile_position_embd",
    "layernorm_pre", "pre_ln",
    "layernorm_post", "post_ln",
    "global_transformer.layers", "global.blk",
    "transformer.layers", "blk",
    "mlp.fc1", "ffn_up",
    "mlp.fc2", "ffn_down",
    "multi_modal_projector", "mm.0",
]
PAIRS = list(zip(LLAMA_REPLACEMENTS[::2] + MLLAMA_REPLACEMENTS[::2],
                 LLAMA_REPLACEMENTS[1::2] + MLLAMA_REPLACEMENTS[1::2]))

ALWAYS_F32 = {"v.position_embd.weight", "v.tile_position_embd.weight",
              "v.pre_tile_position_embd.weight", "v.post_tile_position_embd.weight"}
FILE_TYPE_IDS = {"f32": 0, "f16": 1, "q8_0": 7}
T = gguf.GGMLQuantizationType


def go_replace(name):
    """Go's strings.NewReplacer: left to right, at each position the first listed match."""
    out, i = [], 0
    while i < len(name):
        for old, new in PAIRS:
            if name.startswith(old, i):
                out.append(new)
                i += len(old)
                break
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        raw = data[s:e]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dtypes[info["dtype"]]).astype(np.float32)
        out[name] = arr.reshape(info["shape"])
    return out


def permute(w, heads):
    """llama.cpp's LlamaModel.permute: pairs (i, i + d/2) of each head become adjacent rows."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(text):
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    if rope.get("rope_type", rope.get("type")) != "llama3":
        return None
    base = text.get("rope_theta", rope.get("rope_theta", 10000.0))
    dim = text.get("head_dim", text["hidden_size"] // text["num_attention_heads"])
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    # torch: 1.0 / (base ** (arange(0, dim, 2, float32) / dim)), all float32.
    exps = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = np.float32(1.0) / np.power(np.float32(base), exps, dtype=np.float32)
    out = []
    for f in freqs:
        wavelen = np.float32(2 * math.pi) / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (np.float32(old) / wavelen - np.float32(low)) / np.float32(high - low)
            out.append(np.float32(1) / ((np.float32(1) - smooth) / np.float32(factor) + smooth))
    return np.array(out, dtype=np.float32)


def expected_tensors(model_dir, cfg):
    """{gguf name: float32 array in PyTorch order (what the GGUF holds, before typing)}."""
    text, vision = cfg["text_config"], cfg["vision_config"]
    n_head = text["num_attention_heads"]
    n_head_kv = text.get("num_key_value_heads", n_head)
    v_heads = vision["attention_heads"]
    st = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    out = {}
    factors = llama3_rope_factors(text)
    if factors is not None:
        out["rope_freqs.weight"] = factors
    for hf, w in st.items():
        name = go_replace(hf)
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name.startswith("v."):
            if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
                w = permute(w, v_heads)
            elif name == "v.position_embd.gate":
                g = w.astype(np.float64)
                out["v.tile_position_embd.gate"] = np.tanh(g).astype(np.float32)
                w = (1.0 - np.tanh(g)).astype(np.float32)
            elif name.endswith("_gate") or name.endswith(".gate"):
                w = np.tanh(w.astype(np.float64)).astype(np.float32)
        elif name.endswith("attn_q.weight") or name.endswith("attn_q_proj.weight"):
            w = permute(w, n_head)
        elif name.endswith("attn_k.weight") or name.endswith("attn_k_proj.weight"):
            w = permute(w, n_head_kv)
        assert name not in out, name
        out[name] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def expected_type(name, arr, ft):
    if ft == "f32" or arr.ndim <= 1 or name in ALWAYS_F32:
        return T.F32
    if ft == "f16":
        return T.F16
    if name.startswith("v.") or name.startswith("mm."):
        return T.F16
    return T.Q8_0 if arr.shape[-1] % 32 == 0 else T.F16


def expected_bytes(arr, ty):
    if ty == T.F32:
        return arr.astype("<f4").tobytes()
    if ty == T.F16:
        return arr.astype("<f2").tobytes()
    return gguf.quants.quantize(arr.reshape(-1, arr.shape[-1]), ty).tobytes()


def token_list(model_dir):
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
    by_id = dict((i, t) for t, i in tok["model"]["vocab"].items())
    special = {}
    for a in tok.get("added_tokens", []):
        by_id[a["id"]] = a["content"]
        special[a["id"]] = a.get("special", False)
    n = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n)]
    types = []
    for i in range(n):
        if i not in by_id:
            types.append(5)  # UNUSED
        elif i in special:
            t = by_id[i]
            looks = t.startswith("<|") and t.endswith("|>")
            types.append(3 if special[i] or looks else 4)  # CONTROL / USER_DEFINED
        else:
            types.append(1)  # NORMAL
    merges = []
    for m in tok["model"]["merges"]:
        merges.append(m if isinstance(m, str) else " ".join(p.replace(" ", "\u0120") for p in m))
    ids = {t: i for i, t in by_id.items()}
    return tokens, types, merges, ids


def f32(x):
    return float(np.float32(x))


def expected_keys(model_dir, cfg, ft):
    text, vision = cfg["text_config"], cfg["vision_config"]
    pre = json.load(open(os.path.join(model_dir, "preprocessor_config.json")))
    tc = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    tokens, types, merges, ids = token_list(model_dir)
    template = open(os.path.join(model_dir, "chat_template.jinja"), encoding="utf-8").read()
    hd = text["hidden_size"] // text["num_attention_heads"]
    a = "mllama."
    return {
        "general.architecture": "mllama",
        "general.file_type": FILE_TYPE_IDS[ft],
        "general.quantization_version": 2,
        a + "vocab_size": text["vocab_size"],
        a + "block_count": text["num_hidden_layers"],
        a + "context_length": text["max_position_embeddings"],
        a + "embedding_length": text["hidden_size"],
        a + "feed_forward_length": text["intermediate_size"],
        a + "attention.head_count": text["num_attention_heads"],
        a + "attention.head_count_kv": text["num_key_value_heads"],
        a + "rope.dimension_count": hd,
        a + "rope.freq_base": f32(text["rope_theta"]),
        a + "attention.layer_norm_rms_epsilon": f32(text["rms_norm_eps"]),
        a + "attention.cross_attention_layers": text["cross_attention_layers"],
        a + "vision.block_count": vision["num_hidden_layers"],
        a + "vision.global.block_count": vision["num_global_layers"],
        a + "vision.intermediate_layers_indices": vision["intermediate_layers_indices"],
        a + "vision.embedding_length": vision["hidden_size"],
        a + "vision.feed_forward_length": vision["intermediate_size"],
        a + "vision.attention.head_count": vision["attention_heads"],
        a + "vision.attention.layer_norm_epsilon": f32(vision["norm_eps"]),
        a + "vision.image_size": vision["image_size"],
        a + "vision.patch_size": vision["patch_size"],
        a + "vision.max_num_tiles": vision["max_num_tiles"],
        a + "vision.num_channels": vision["num_channels"],
        a + "vision.image_mean": [f32(x) for x in pre["image_mean"]],
        a + "vision.image_std": [f32(x) for x in pre["image_std"]],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": ids[tc["bos_token"]],
        "tokenizer.ggml.eos_token_id": ids[tc["eos_token"]],
        "tokenizer.ggml.padding_token_id": ids[tc["pad_token"]],
        "tokenizer.chat_template": template,
    }


def field_value(f):
    v = f.contents()
    return v


def summarize(value):
    """Long lists (the vocabulary) as length + sha256 of their JSON, for the fixture."""
    if isinstance(value, list) and len(value) > 64:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return {"len": len(value), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    return value


# Keys that are not from the checkpoint's hyper-parameters and are only checked for presence.
FREE_KEYS = {"general.type", "general.name", "general.size_label",
             "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
             "tokenizer.ggml.add_sep_token"}


def check_file(path, ft, model_dir, cfg, tensors, errors):
    r = gguf.GGUFReader(path)
    keys = expected_keys(model_dir, cfg, ft)
    present = {k for k in r.fields if not k.startswith("GGUF.")}
    for k, want in keys.items():
        if k not in r.fields:
            errors.append(f"{ft}: key {k} missing")
            continue
        got = field_value(r.fields[k])
        if got != want:
            errors.append(f"{ft}: key {k}: got {summarize(got)!r:.200}, want {summarize(want)!r:.200}")
    for k in sorted(present - set(keys) - FREE_KEYS):
        errors.append(f"{ft}: unexpected key {k}")
    names = {t.name for t in r.tensors}
    for n in sorted(set(tensors) - names):
        errors.append(f"{ft}: tensor {n} missing")
    for n in sorted(names - set(tensors)):
        errors.append(f"{ft}: unexpected tensor {n}")
    digests = {}
    for t in r.tensors:
        if t.name not in tensors:
            continue
        want = tensors[t.name]
        ty = expected_type(t.name, want, ft)
        shape = [int(d) for d in t.shape]
        if shape != list(reversed(want.shape)):
            errors.append(f"{ft}: {t.name}: shape {shape}, want {list(reversed(want.shape))}")
            continue
        if t.tensor_type != ty:
            errors.append(f"{ft}: {t.name}: type {t.tensor_type.name}, want {ty.name}")
            continue
        exp = expected_bytes(want, ty)
        got = t.data.tobytes()
        if got != exp:
            if t.name == "rope_freqs.weight":
                g = np.frombuffer(got, dtype="<f4")
                if np.allclose(g, want, rtol=1e-6, atol=0):
                    exp = got  # float32 pow may differ in the last bit between libms
                else:
                    errors.append(f"{ft}: {t.name}: {g} != {want}")
            else:
                errors.append(f"{ft}: {t.name}: bytes differ from the expectation")
        digests[t.name] = (ty.name, hashlib.sha256(exp).hexdigest())
    return keys, digests


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the HF checkpoint directory")
    ap.add_argument("--gguf", action="append", required=True,
                    help="OUTTYPE=PATH with OUTTYPE f32, f16 or q8_0 (repeatable)")
    ap.add_argument("--write-fixture", help="write the expectations as JSON here")
    args = ap.parse_args()
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    tensors = expected_tensors(args.model, cfg)
    errors, fixture_tensors, fixture_keys = [], {}, {}
    for spec in args.gguf:
        ft, path = spec.split("=", 1)
        keys, digests = check_file(path, ft, args.model, cfg, tensors, errors)
        fixture_keys[ft] = {k: summarize(v) for k, v in keys.items()}
        for name, (ty, digest) in digests.items():
            entry = fixture_tensors.setdefault(
                name, {"shape": list(reversed(tensors[name].shape)), "types": {}, "sha256": {}})
            entry["types"][ft] = ty
            entry["sha256"][ft] = digest
        print(f"{ft}: {path}: {len(digests)} tensors, {len(keys)} keys checked")
    for e in errors:
        print("MISMATCH", e)
    if errors:
        sys.exit(1)
    print(f"OK: every tensor and key equals the independent expectation "
          f"({len(tensors)} tensors)")
    if args.write_fixture:
        fixture = {
            "about": "Expected mllama GGUF of ../shared/fixtures/tiny-mllama per output type: "
                     "written by tools/scripts/mllama_gguf_check.py from the safetensors and "
                     "the spec's transforms (not from Lumen's output).",
            "keys": fixture_keys,
            "tensors": dict(sorted(fixture_tensors.items())),
        }
        with open(args.write_fixture, "w", encoding="utf-8") as f:
            json.dump(fixture, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {args.write_fixture}")


if __name__ == "__main__":
    main()
