#!/usr/bin/env python3
"""Float-exactness fixtures for six architectures: tiny random checkpoints built offline with
transformers, converted to F32 GGUF by llama.cpp's own convert_hf_to_gguf.py, and transformers'
float32 (eager attention) logits at every position of two fixed token-id sequences.

Usage: python tools/scripts/family_fixtures.py LLAMA_CPP_DIR [--out DIR] [--only NAME ...]
                                                [--save-hf DIR]

  LLAMA_CPP_DIR  a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/)
  --out          default: tests/fixtures/families (relative to the repository root)
  --only         any of: qwen2 qwen3 gemma2 gemma3 phi3 llama-mistral
  --save-hf      also keep each tiny Hugging Face checkpoint directory (config.json,
                 generation_config.json, model.safetensors, tokenizer files) as DIR/<name>/, the
                 input `lumen convert` is compared on (tools/tests/fixtures/families_hf, used by
                 tools/tests/convert_families.rs); byte-deterministic like the rest

Run from the repository root with a venv holding torch, transformers (5.x), numpy, gguf,
sentencepiece and tokenizers; one CPU thread is enough (about a minute per architecture):

    OMP_NUM_THREADS=1 $VENV/bin/python tools/scripts/family_fixtures.py LLAMA_CPP_DIR

Writes, per architecture, OUT/<name>/ (name = the GGUF architecture; llama-mistral for Mistral):

    model.gguf   the F32 file written by llama.cpp's converter (`--outtype f32`)
    logits.npy   float32 [n_seqs, seq_len, n_vocab], transformers' logits at every position
    ids.json     {"sequences": [[...], [...]], "config": {the Hugging Face config dict}}
    logits_full_attention.npy   (phi3 and llama-mistral only) the same forward with
                 sliding_window=None, i.e. what the GGUF alone describes (see README.md)

and OUT/README.md, generated from an independent read of each GGUF with gguf-py (keys, block-0
tensors, what the converter did to each weight compared with the Hugging Face checkpoint).

Everything is seeded: the tokenizers are trained on text generated here, weights are drawn from a
torch.Generator, so a re-run with the same library versions rewrites identical files.

Tokenizers are tiny and only there because the converter needs one: qwen2/qwen3 get a byte-level
BPE (tokenizers) with Qwen2's pre-tokenizer regex; the others a SentencePiece BPE model with byte
fallback. llama.cpp's converter identifies BPE pre-tokenizers by hashing the token ids of a fixed
string, which no freshly trained vocabulary matches, so the conversion runs through a small driver
(this file, `--convert` mode, in a subprocess) that monkeypatches
`conversion.base.TextModel.get_vocab_base_pre` to return "qwen2" for the two Qwen models, then
calls convert_hf_to_gguf.main() unchanged. Tokenization is not what these fixtures test.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEQ_LEN = 24
N_SEQS = 2


# --------------------------------------------------------------------------------------------
# conversion driver (runs in a subprocess so the converter uses llama.cpp's own gguf-py)
# --------------------------------------------------------------------------------------------

def convert_driver(argv: list[str]) -> None:
    """--convert LLAMA_CPP_DIR MODEL_DIR OUTFILE MODEL_NAME PRE [OUTTYPE]  (PRE: a
    tokenizer.ggml.pre name forced for BPE vocabularies, or "-" to leave the converter's hash
    lookup alone; OUTTYPE: the converter's --outtype, default f32)."""
    llama_dir, model_dir, outfile, model_name, pre, *rest = argv
    outtype = rest[0] if rest else "f32"
    llama_dir = str(Path(llama_dir).resolve())
    sys.path.insert(0, llama_dir)
    import convert_hf_to_gguf  # inserts LLAMA_CPP_DIR/gguf-py into sys.path itself
    from conversion.base import TextModel

    if pre != "-":
        # The BPE pre-tokenizer is recognised by a hash of token ids; a freshly trained tiny
        # vocabulary cannot match a known hash, so name the pre-tokenizer it was built with.
        TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", outtype, "--outfile", outfile,
                "--model-name", model_name]
    convert_hf_to_gguf.main()


# --------------------------------------------------------------------------------------------
# tiny tokenizers
# --------------------------------------------------------------------------------------------

WORDS = ("the of and to in is was for on that with as by at from it this be are or an which "
         "model layer token weight attention window head norm scale logit value key query rope "
         "river mountain garden window bridge market winter summer morning evening question answer "
         "small large quick brown fox jumps over lazy dog cat bird tree house light dark water fire "
         "stone paper number letter word sentence story book page line code file test data").split()
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "def forward(self, x):\n    return self.norm(x) * self.scale\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i]; }",
    "1, 1, 2, 3, 5, 8, 13, 21, 34, 55",
    "Once upon a time, in a small village, there lived a curious cat.",
    "Attention scores are scaled, masked, and passed through a softmax.",
    "naive cafe resume -- \"quoted\" (parenthesised) [bracketed] {braced}",
]


def corpus_lines(seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = list(SENTENCES) * 8
    for _ in range(1500):
        n = rng.randint(4, 14)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(n), str(rng.randint(0, 9999)))
        line = " ".join(words)
        if rng.random() < 0.5:
            line = line.capitalize() + rng.choice([".", "!", "?", ",", ";", ":"])
        lines.append(line)
    return lines


def make_spm(out_dir: Path, vocab_size: int, gemma: bool) -> dict:
    """SentencePiece BPE with byte fallback: Gemma ids (pad 0, eos 1, bos 2, unk 3, no dummy
    prefix) or Llama ids (unk 0, bos 1, eos 2, dummy prefix)."""
    import io

    import sentencepiece as spm

    ids = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3) if gemma else dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines(1234)), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=not gemma, num_threads=1,
        minloglevel=2, **ids)
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    assert sp.get_piece_size() == vocab_size
    first_normal = max(v for v in ids.values() if v >= 0) + 1
    return {"n_vocab": vocab_size, "bos": ids["bos_id"], "eos": ids["eos_id"],
            "pad": ids["pad_id"] if ids["pad_id"] >= 0 else None, "first_normal": first_normal}


QWEN2_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                           r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def make_qwen_bpe(out_dir: Path, vocab_size: int) -> dict:
    """Byte-level BPE with Qwen2's normalizer/pre-tokenizer/decoder; 3 special tokens at the end."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(corpus_lines(1234), trainer=trainer)
    n_base = tok.get_vocab_size()
    tok.add_special_tokens(specials)
    n = tok.get_vocab_size()
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False,
        "add_prefix_space": False, "model_max_length": 256}, indent=2))
    eos = tok.token_to_id("<|endoftext|>")
    return {"n_vocab": n, "bos": None, "eos": eos, "pad": eos, "first_normal": 0, "n_base": n_base}


# --------------------------------------------------------------------------------------------
# architectures
# --------------------------------------------------------------------------------------------

def spm_tokenizer_config(cls: str) -> dict:
    return {"tokenizer_class": cls, "add_bos_token": True, "add_eos_token": False,
            "model_max_length": 256}


ARCHS = {
    "qwen2": dict(
        hf_cls="Qwen2ForCausalLM", tokenizer="qwen", vocab=448, pad_vocab_to=512, pre="qwen2",
        config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu"),
        norm="one_centred",
        notes=[
            "Q/K/V projections carry biases (Qwen2 always has them); `output.weight` is present "
            "because tie_word_embeddings=false.",
            "config vocab_size (512) exceeds the tokenizer's 448 tokens, as in real Qwen checkpoints: "
            "the converter pads the token list with `[PAD448]`..`[PAD511]` (type UNUSED).",
            "The converter's BPE pre-tokenizer hash lookup was bypassed (get_vocab_base_pre "
            "monkeypatched to \"qwen2\").",
        ]),
    "qwen3": dict(
        hf_cls="Qwen3ForCausalLM", tokenizer="qwen", vocab=448, pad_vocab_to=None, pre="qwen2",
        config=dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    tie_word_embeddings=True, attention_bias=False, use_sliding_window=False,
                    hidden_act="silu"),
        norm="one_centred",
        notes=[
            "head_dim 32 with hidden 64 / 4 heads (q_proj is 64->128, like Qwen3-0.6B's 1024->2048).",
            "tie_word_embeddings=true: no `output.weight` in the GGUF; the output projection is "
            "token_embd.",
            "Per-head q_norm/k_norm (`attn_q_norm`, `attn_k_norm`, length head_dim) applied "
            "before RoPE.",
        ]),
    "gemma2": dict(
        hf_cls="Gemma2ForCausalLM", tokenizer="spm_gemma", vocab=384, pad_vocab_to=None, pre="-",
        tokenizer_class="GemmaTokenizer",
        config=dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    query_pre_attn_scalar=32, max_position_embeddings=256, rms_norm_eps=1e-6,
                    sliding_window=6, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
        norm="zero_centred", variants={"no_attn_softcap": dict(attn_logit_softcapping=None),
                                       "no_final_softcap": dict(final_logit_softcapping=None),
                                       "no_window": dict(sliding_window=4096)},
        notes=[
            "Layers 0 and 2 are sliding-window (6), layers 1 and 3 global (HF layer_types; llama.cpp's "
            "gemma2 hard-codes the same pattern 2).",
            "Gemma norms are stored by HF as w with output x*(1+w); the converter writes 1+w, so GGUF "
            "norms multiply directly.",
            "The converter writes neither rope.freq_base nor rope.dimension_count for gemma2: the "
            "HF default rope_theta 10000 is used (llama.cpp falls back to 10000 too).",
            "query_pre_attn_scalar is not written either; it equals head_dim here (llama.cpp scales "
            "by 1/sqrt(head_dim) except for the 27B).",
        ]),
    "gemma3": dict(
        hf_cls="Gemma3ForCausalLM", tokenizer="spm_gemma", vocab=384, pad_vocab_to=None, pre="-",
        tokenizer_class="GemmaTokenizer",
        config=dict(model_type="gemma3_text", hidden_size=48, intermediate_size=128, num_hidden_layers=7,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    query_pre_attn_scalar=32, max_position_embeddings=256, rms_norm_eps=1e-6,
                    sliding_window=6, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
        norm="zero_centred", variants={"no_window": dict(sliding_window=4096)},
        notes=[
            "7 layers: HF layer_types (pattern 6) make layers 0-4 and 6 sliding (window 6, RoPE base "
            "10000) and layer 5 global (RoPE base 1e6); the GGUF does not carry the pattern "
            "(llama.cpp's gemma3 hard-codes 6).",
            "hidden 48, head_dim 32, 4 heads (q_proj 48->128); embeddings are scaled by sqrt(48) "
            "(not an integer).",
            "All Gemma norms, including q_norm/k_norm, are written as 1+w by the converter.",
            "No attention soft-capping in Gemma 3; final_logit_softcapping is null, so no "
            "gemma3.final_logit_softcapping key.",
        ]),
    "phi3": dict(
        hf_cls="Phi3ForCausalLM", tokenizer="spm_llama", vocab=384, pad_vocab_to=None, pre="-",
        tokenizer_class="LlamaTokenizer",
        config=dict(model_type="phi3", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    original_max_position_embeddings=256, rms_norm_eps=1e-5, sliding_window=8,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "partial_rotary_factor": 1.0},
                    tie_word_embeddings=False, hidden_act="silu", pad_token_id=None),
        norm="one_centred", variants={"no_window": dict(sliding_window=None)},
        extra_full_attention=True,
        notes=[
            "HF Phi3 already stores fused `qkv_proj` and `gate_up_proj`; the converter keeps them "
            "fused: `attn_qkv` [q; k; v] rows and `ffn_up` = [gate; up] (2*n_ff rows, gate first).",
            "phi3.attention.sliding_window = 8 is written, and transformers applies it; llama.cpp's "
            "phi3 loader reads it and then disables SWA (\"Phi SWA is currently disabled\"), so "
            "llama.cpp would match logits_full_attention.npy, not logits.npy.",
            "No long/short RoPE factors (rope_type default), so no rope_factors_* tensors.",
        ]),
    "llama-mistral": dict(
        hf_cls="MistralForCausalLM", tokenizer="spm_llama", vocab=384, pad_vocab_to=None, pre="-",
        tokenizer_class="LlamaTokenizer",
        config=dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-5, sliding_window=8,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    tie_word_embeddings=False, hidden_act="silu"),
        norm="one_centred", variants={"no_window": dict(sliding_window=None)},
        extra_full_attention=True,
        notes=[
            "GGUF architecture is `llama` (the converter handles MistralForCausalLM as LlamaModel).",
            "head_dim 32 != hidden/heads (16): llama.attention.key_length/value_length = 32 and "
            "rope.dimension_count = 32 are written.",
            "Q and K weights are permuted by the converter (LlamaModel.permute: HF's rotate-half "
            "layout -> llama.cpp's interleaved-pair RoPE layout).",
            "sliding_window = 8 is NOT written to the GGUF (the llama converter has no such key), "
            "while transformers applies it: a runtime reading only model.gguf computes "
            "logits_full_attention.npy; logits.npy needs the window from ids.json's config.",
        ]),
}


def build_config(name: str, spec: dict, tok: dict):
    from transformers import AutoConfig

    cfg = dict(spec["config"])
    model_type = cfg.pop("model_type")
    cfg["vocab_size"] = spec["pad_vocab_to"] or tok["n_vocab"]
    cfg["bos_token_id"] = tok["bos"]
    cfg["eos_token_id"] = tok["eos"]
    if "pad_token_id" not in cfg:
        cfg["pad_token_id"] = tok["pad"]
    cfg["initializer_range"] = 0.1
    cfg["architectures"] = [spec["hf_cls"]]
    cfg["dtype"] = "float32"
    return AutoConfig.for_model(model_type, **cfg)


def randomize(model, seed: int, norm: str) -> None:
    """Every parameter drawn from one torch.Generator in named_parameters() order: linear and
    embedding weights N(0, 0.1); biases N(0, 0.2); RMSNorm weights U(0.5, 1.5) for x*w norms, or
    N(0, 0.4) for Gemma's x*(1+w) norms, so no norm is the identity."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                if norm == "zero_centred":
                    v = torch.randn(p.shape, generator=g) * 0.4
                else:
                    v = torch.rand(p.shape, generator=g) + 0.5
            elif pname.endswith(".bias"):
                v = torch.randn(p.shape, generator=g) * 0.2
            else:
                v = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(v.to(p.dtype))


def make_sequences(tok: dict, n_real: int, seed: int) -> list[list[int]]:
    """Uniform over the ordinary tokens [first_normal, n_real); sequence 0 starts with BOS."""
    rng = random.Random(seed)
    lo = tok["first_normal"]
    seqs = []
    for s in range(N_SEQS):
        ids = [rng.randrange(lo, n_real) for _ in range(SEQ_LEN)]
        if s == 0 and tok["bos"] is not None:
            ids[0] = tok["bos"]
        seqs.append(ids)
    return seqs


def dump_ids(seqs, cfg_dict) -> str:
    rows = ",\n".join("  " + json.dumps(q) for q in seqs)
    cfg = json.dumps(cfg_dict, indent=1, sort_keys=True).replace("\n", "\n ")
    return f'{{\n "sequences": [\n{rows}\n ],\n "config": {cfg}\n}}\n'


def forward_logits(model, seqs) -> "np.ndarray":
    import numpy as np
    import torch

    out = []
    with torch.no_grad():
        for ids in seqs:
            r = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
            out.append(r.logits[0].float().numpy())
    return np.stack(out).astype(np.float32)


def variant_logits(model_dir: Path, hf_cls: str, overrides: dict, seqs):
    import transformers

    cls = getattr(transformers, hf_cls)
    config = transformers.AutoConfig.from_pretrained(model_dir)
    for k, v in overrides.items():
        setattr(config, k, v)
    m = cls.from_pretrained(model_dir, config=config, attn_implementation="eager", dtype="float32")
    m.eval()
    return forward_logits(m, seqs)


def save_hf_dir(model_dir: Path, dest: Path) -> None:
    """Copies the checkpoint directory the converter read (every file, flat) to DEST."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in sorted(model_dir.iterdir()):
        if not f.is_file():
            raise RuntimeError(f"{f}: unexpected non-file in the checkpoint directory")
        shutil.copyfile(f, dest / f.name)


def build_one(name: str, spec: dict, idx: int, llama_dir: Path, out_root: Path, work: Path,
              save_hf: Path | None = None) -> dict:
    import numpy as np
    import torch
    import transformers

    model_dir = work / f"tiny-{name}"
    model_dir.mkdir(parents=True)
    if spec["tokenizer"] == "qwen":
        tok = make_qwen_bpe(model_dir, spec["vocab"])
    else:
        tok = make_spm(model_dir, spec["vocab"], gemma=spec["tokenizer"] == "spm_gemma")
        (model_dir / "tokenizer_config.json").write_text(
            json.dumps(spm_tokenizer_config(spec["tokenizer_class"]), indent=2))

    config = build_config(name, spec, tok)
    torch.manual_seed(1000 + idx)
    model = getattr(transformers, spec["hf_cls"])(config)
    randomize(model, 2000 + idx, spec["norm"])
    model.save_pretrained(model_dir)

    # reference forward from the saved checkpoint, eager attention, float32
    ref = getattr(transformers, spec["hf_cls"]).from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32)
    ref.eval()
    seqs = make_sequences(tok, tok.get("n_base", tok["n_vocab"]), 3000 + idx)
    logits = forward_logits(ref, seqs)

    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    gguf_path = out / "model.gguf"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--convert", str(llama_dir), str(model_dir),
           str(gguf_path), f"lumen-tiny-{name}", spec["pre"]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    (work / f"convert-{name}.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"{name}: conversion failed:\n{res.stderr[-4000:]}")
    warnings = [l for l in (res.stdout + res.stderr).splitlines() if "WARNING" in l]
    if save_hf is not None:
        save_hf_dir(model_dir, save_hf / name)

    np.save(out / "logits.npy", logits)
    cfg_dict = json.loads(ref.config.to_json_string(use_diff=False))
    cfg_dict.pop("_name_or_path", None)  # the temporary checkpoint directory
    (out / "ids.json").write_text(dump_ids(seqs, cfg_dict))

    effects, full = {}, None
    for vname, overrides in spec.get("variants", {}).items():
        v = variant_logits(model_dir, spec["hf_cls"], overrides, seqs)
        effects[vname] = float(np.abs(v - logits).max())
        if vname == "no_window" and spec.get("extra_full_attention"):
            full = v
            np.save(out / "logits_full_attention.npy", v)

    check = check_gguf(gguf_path, ref, spec)
    check["reload"] = reload_gguf(out, cfg_dict, seqs, logits, full)
    check["reload"]["fixed_sorted"] = sorted(check["reload"]["config_fixed"].items())
    return {"name": name, "spec": spec, "tok": tok, "config": cfg_dict, "seqs": seqs,
            "effects": effects, "check": check, "warnings": warnings,
            "logits_stats": (float(logits.min()), float(logits.max()), float(logits.std())),
            "sizes": {p.name: p.stat().st_size for p in sorted(out.iterdir())}}


# --------------------------------------------------------------------------------------------
# independent GGUF check (gguf-py reader) and README
# --------------------------------------------------------------------------------------------

def permute_llama(w, n_head: int):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_gguf(path: Path, model, spec: dict) -> dict:
    """Reads the GGUF with gguf-py, then classifies every HF tensor's counterpart as identical,
    +1 (Gemma norms), permuted (llama Q/K), truncated, or missing/unmatched."""
    import gguf
    import numpy as np

    r = gguf.GGUFReader(str(path))
    kv = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        try:
            val = f.contents()
        except Exception:  # pragma: no cover - older gguf-py
            val = "?"
        kv[f.name] = (f.types[0].name if f.types else "?", val)
    tensors = {t.name: t for t in r.tensors}
    arch = kv["general.architecture"][1]
    cfg = model.config
    n_layer = cfg.num_hidden_layers
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    tmap = gguf.get_tensor_name_map(arch_enum, n_layer)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    if getattr(cfg, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    transforms = {}
    for hf_name, w in sd.items():
        base, suffix = (hf_name[:-7], ".weight") if hf_name.endswith(".weight") else (hf_name[:-5], ".bias")
        gname = tmap.get_name(base)
        gname = gname + suffix if gname else None
        if gname is None or gname not in tensors:
            transforms[hf_name] = (gname, "MISSING")
            continue
        t = tensors[gname]
        data = np.asarray(t.data, dtype=np.float32).reshape(w.shape) if t.data.size == w.size else np.asarray(t.data)
        how = "unmatched"
        if data.shape == w.shape:
            if np.array_equal(data, w):
                how = "identical"
            elif np.array_equal(data, (w + 1).astype(np.float32)):
                how = "+1"
            elif gname.endswith(("attn_q.weight", "attn_q.bias")) and np.array_equal(
                    data, permute_llama(w, cfg.num_attention_heads)):
                how = "permuted (n_head)"
            elif gname.endswith(("attn_k.weight", "attn_k.bias")) and np.array_equal(
                    data, permute_llama(w, cfg.num_key_value_heads)):
                how = "permuted (n_head_kv)"
        elif data.ndim == w.ndim and data.shape[1:] == w.shape[1:] and np.array_equal(data, w[: data.shape[0]]):
            how = f"truncated to {data.shape[0]} rows"
        transforms[hf_name] = (gname, how)
    return {"kv": kv, "tensors": {n: (t.tensor_type.name, [int(x) for x in t.shape]) for n, t in tensors.items()},
            "transforms": transforms, "arch": arch}


def reload_gguf(folder: Path, hf_cfg: dict, seqs, logits, full=None) -> dict:
    """Second, independent reader: transformers' own GGUF loader (undoes the Gemma +1 and the
    llama Q/K permutation). Its config mapping misses some keys, so config fields that differ from
    the HF config are listed and then set to the HF values (rms_norm_eps is left as read: float32
    in the GGUF, which is what HF adds in float32 anyway). Returns max |logit difference|."""
    import numpy as np
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(folder, gguf_file="model.gguf")
    fixed = {}
    for k, v in hf_cfg.items():
        if k in ("architectures", "model_type", "dtype", "transformers_version", "rms_norm_eps",
                 "initializer_range", "id2label", "label2id") or not hasattr(cfg, k):
            continue
        if getattr(cfg, k) != v:
            fixed[k] = [getattr(cfg, k), v]
            setattr(cfg, k, v)
    m = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="model.gguf", config=cfg, dtype="float32", attn_implementation="eager")
    m.eval()
    out = forward_logits(m, seqs)
    r = {"class": type(m).__name__, "config_fixed": fixed, "max_abs_diff": float(np.abs(out - logits).max())}
    if full is not None:
        r["max_abs_diff_full_attention"] = float(np.abs(out - full).max())
    return r


def fmt_val(v) -> str:
    if isinstance(v, list):
        if len(v) > 6:
            return f"[{len(v)} items: {', '.join(repr(x) for x in v[:3])}, ...]"
        return repr(v)
    if isinstance(v, str) and len(v) > 60:
        return repr(v[:57] + "...")
    if isinstance(v, float):
        return f"{v:.7g}"
    return repr(v)


HIGHLIGHT_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "query_pre_attn_scalar",
                  "rms_norm_eps", "rope_parameters", "sliding_window", "layer_types",
                  "attn_logit_softcapping", "final_logit_softcapping", "tie_word_embeddings",
                  "hidden_act", "hidden_activation", "original_max_position_embeddings",
                  "bos_token_id", "eos_token_id", "pad_token_id"]


def write_readme(out_root: Path, results: list[dict], llama_rev: str) -> None:
    import numpy as np
    import torch
    import transformers

    L = []
    L.append("# Per-architecture float-exactness fixtures\n")
    L.append("Generated by `tools/scripts/family_fixtures.py LLAMA_CPP_DIR` (do not edit by hand; "
             "re-run the script). Each folder holds a tiny random checkpoint converted by llama.cpp's "
             "`convert_hf_to_gguf.py --outtype f32` (`model.gguf`), and the Hugging Face transformers "
             "reference: float32, `attn_implementation=\"eager\"`, logits at every position of "
             f"{N_SEQS} sequences of {SEQ_LEN} token ids (`logits.npy` [{N_SEQS}, {SEQ_LEN}, n_vocab], "
             "`ids.json` with the sequences and the full HF config).\n")
    L.append(f"Versions: torch {torch.__version__}, transformers {transformers.__version__}, "
             f"numpy {np.__version__}; llama.cpp converter at {llama_rev}. Checks below read the "
             f"GGUF with gguf-py {importlib.metadata.version('gguf')} (the venv's package, not the "
             "converter's copy).\n")
    L.append("Common to all: weights are N(0, 0.1) (biases N(0, 0.2)); RMSNorm weights are "
             "U(0.5, 1.5), Gemma's zero-centred norms N(0, 0.4), so no norm is the identity. "
             "The first sequence starts with BOS where the model's tokenizer adds one (not Qwen). "
             "Token ids are uniform over the trained vocabulary (specials excluded apart from that "
             "BOS). Sliding windows (6 or 8) are smaller than the 24-token sequences. HF's window: "
             "query i sees keys j with i - window < j <= i (window counts the query itself), the same "
             "as llama.cpp's `p1 - p0 >= n_swa` masking.\n")
    L.append("`Effects` lines give max |logit difference| when the feature is switched off in "
             "transformers (same weights): they show the feature matters for these inputs.\n")
    for res in results:
        name, check, cfg = res["name"], res["check"], res["config"]
        spec = res["spec"]
        L.append(f"\n## {name}  (HF `{spec['hf_cls']}`, GGUF `general.architecture = {check['arch']}`)\n")
        total = sum(res["sizes"].values())
        L.append("Files: " + ", ".join(f"`{k}` {v:,} B" for k, v in res["sizes"].items())
                 + f" (total {total:,} B).\n")
        L.append("HF config highlights: " + ", ".join(
            f"`{k}`={json.dumps(cfg[k])}" for k in HIGHLIGHT_KEYS if k in cfg and cfg[k] is not None) + "\n")
        tok = res["tok"]
        L.append(f"Tokenizer: {'byte-level BPE (Qwen2 pre-tokenizer)' if spec['tokenizer'] == 'qwen' else 'SentencePiece BPE + byte fallback'}, "
                 f"{tok['n_vocab']} tokens; bos={tok['bos']} eos={tok['eos']}.\n")
        lo, hi, sd = res["logits_stats"]
        L.append(f"Logits: min {lo:.3f}, max {hi:.3f}, std {sd:.3f}.\n")
        if res["effects"]:
            L.append("Effects: " + ", ".join(f"{k}: {v:.4f}" for k, v in res["effects"].items()) + "\n")
        L.append("Notes:\n")
        for n in spec["notes"]:
            L.append(f"- {n}")
        L.append("")
        # keys
        L.append("GGUF keys (tokenizer arrays summarised):\n")
        L.append("| key | type | value |\n|---|---|---|")
        for k, (ty, v) in check["kv"].items():
            if k.startswith("tokenizer.ggml.") and isinstance(v, list):
                vs = f"[{len(v)} items]"
            else:
                vs = fmt_val(v)
            vs = vs.replace("|", "\\|")
            L.append(f"| `{k}` | {ty} | {vs} |")
        L.append("")
        # tensors
        tens = check["tensors"]
        glob_t = [n for n in tens if not n.startswith("blk.")]
        blk0 = [n for n in tens if n.startswith("blk.0.")]
        L.append(f"Tensors: {len(tens)} in all, all {sorted({t for t, _ in tens.values()})}. "
                 "Shapes are GGUF order (ne0 first).\n")
        L.append("| tensor | type | shape | from HF | converter did |\n|---|---|---|---|---|")
        rev = {g: (h, how) for h, (g, how) in check["transforms"].items() if g}
        for n in glob_t + blk0:
            h, how = rev.get(n, ("(generated)", "-"))
            L.append(f"| `{n}` | {tens[n][0]} | {tens[n][1]} | `{h}` | {how} |")
        odd = {h: v for h, v in check["transforms"].items() if v[1] in ("MISSING", "unmatched")}
        kinds = sorted({how for _, how in check["transforms"].values()})
        L.append(f"\nAll {len(check['transforms'])} HF tensors checked against the GGUF: {', '.join(kinds)}"
                 + (f"; problems: {odd}" if odd else "") + ".\n")
        rl = check["reload"]
        fixed = ", ".join(f"`{k}` {a!r} -> {b!r}" for k, (a, b) in rl["fixed_sorted"]) if rl["config_fixed"] else "none"
        L.append(f"Re-read by transformers' GGUF loader (`{rl['class']}`; config fields its GGUF mapping "
                 f"got wrong and were set to the HF values: {fixed}): max |logits - logits.npy| = "
                 f"{rl['max_abs_diff']:.3g}"
                 + (f", max |logits - logits_full_attention.npy| = {rl['max_abs_diff_full_attention']:.3g}"
                    if "max_abs_diff_full_attention" in rl else "") + ".\n")
        if res["warnings"]:
            L.append("Converter warnings:\n")
            for w in res["warnings"]:
                L.append(f"    {w.strip()}")
            L.append("")
    (out_root / "README.md").write_text("\n".join(L) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--convert":
        convert_driver(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("llama_cpp_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/families")
    ap.add_argument("--only", nargs="*", choices=list(ARCHS), default=None)
    ap.add_argument("--save-hf", type=Path, default=None,
                    help="also save each tiny HF checkpoint directory as SAVE_HF/<name>/")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    llama_dir = args.llama_cpp_dir.resolve()
    if not (llama_dir / "convert_hf_to_gguf.py").is_file():
        sys.exit(f"{llama_dir}: no convert_hf_to_gguf.py")
    try:
        llama_rev = subprocess.run(["git", "-C", str(llama_dir), "log", "-1", "--format=%h %s"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        llama_rev = "(unknown revision)"
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="family-fixtures-") as tmp:
        for idx, (name, spec) in enumerate(ARCHS.items()):
            if args.only and name not in args.only:
                continue
            print(f"== {name}", flush=True)
            res = build_one(name, spec, idx, llama_dir, args.out, Path(tmp), args.save_hf)
            results.append(res)
            sha = hashlib.sha256((args.out / name / "model.gguf").read_bytes()).hexdigest()[:16]
            print(json.dumps({"name": name, "sizes": res["sizes"], "effects": res["effects"],
                              "reload": res["check"]["reload"]["max_abs_diff"],
                              "gguf_sha256_16": sha,
                              "transforms": sorted({h for _, h in res["check"]["transforms"].values()})}),
                  flush=True)
    if not args.only:
        write_readme(args.out, results, llama_rev)
    else:
        print("(--only: README.md not rewritten)")


if __name__ == "__main__":
    main()
