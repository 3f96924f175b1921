#!/usr/bin/env python3
"""llama.cpp's own outputs for the six tiny family checkpoints, recorded per tensor so that
tools/tests/convert_families.rs and tools/tests/quantize_families.rs can hold Lumen's converter
and quantizer to them without committing more GGUF files.

Usage (from the repository root, with the venv family_fixtures.py uses):

    OMP_NUM_THREADS=1 $VENV/bin/python tools/scripts/family_convert_refs.py LLAMA_CPP_DIR LLAMA_QUANTIZE

  LLAMA_CPP_DIR   a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/)
  LLAMA_QUANTIZE  a llama-quantize binary built from that tree

Reads tools/tests/fixtures/families_hf/<arch>/ (the checkpoints `family_fixtures.py --save-hf`
saved) and tests/fixtures/families/<arch>/model.gguf (llama.cpp's F32 conversion of them), and
writes tools/tests/fixtures/families_llamacpp.json:

  convert.<outtype> (f16, bf16, q8_0): llama.cpp's convert_hf_to_gguf.py --outtype <outtype>
      (through family_fixtures.py's --convert driver, so the Qwen vocabularies get the same
      forced "qwen2" pre-tokenizer as the F32 fixtures): general.file_type and every tensor's
      [name, type, shape, sha256 of its bytes] in file order. Every other key is checked here to
      equal the F32 fixture's (so the test compares keys against that file).
  quantize: llama-quantize F32-fixture out <FTYPE> 1, for every k-quant and legacy file type:
      the tensor names in the output's order, each file type's tensor types in that order, and
      for Q4_K_M the sha256 of every tensor's bytes.
  variants.<name>: a copy of one checkpoint with VARIANTS' edits to its JSON files (features the
      six fixtures do not have: Phi-3 LongRoPE with a partial rotary factor, Gemma 3's older
      rope_theta/rope_local_base_freq/rope_scaling spelling, SentencePiece added tokens),
      converted to F32: the edits, every key in order as [name, type, value] (an array as its
      length and the elements that differ from the unedited fixture's), and every tensor as
      [name, type, shape, sha256].
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_fixtures import ARCHS  # noqa: E402  (the per-architecture "pre" overrides)

OUTTYPES = ["f16", "bf16", "q8_0"]
FTYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
          "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
BYTES_FOR = ["Q4_K_M"]
IGNORED_KEYS = {"general.name", "general.file_type"}

# name: (fixture, {file: {key: value, or None to delete it}}).
ADDED = {
    "added_tokens_decoder": {
        "300": {"content": "<start_of_turn>", "special": True},
        "301": {"content": "\u2581hello\u2581world", "special": False},
        "302": {"content": "<unused0>", "special": False},
        "303": {"content": "[@BOS@]", "special": False},
    },
}
VARIANTS = {
    "phi3-longrope": ("phi3", {"config.json": {
        "max_position_embeddings": 1024,
        "rope_parameters": {
            "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": 256,
            "long_factor": [1.0, 1.25, 1.5, 2.0, 3.0, 4.5],
            "short_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.3]},
    }}),
    "gemma3-legacy-rope": ("gemma3", {"config.json": {
        "rope_parameters": None, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }}),
    "gemma2-added-tokens": ("gemma2", {"tokenizer_config.json": ADDED}),
    "phi3-added-tokens": ("phi3", {"tokenizer_config.json": ADDED}),
    "mistral-prefix-space": ("llama-mistral", {"tokenizer_config.json": {"add_prefix_space": False}}),
}


def patched_copy(src: Path, dest: Path, patch: dict) -> None:
    import shutil

    shutil.copytree(src, dest)
    for fname, edits in patch.items():
        path = dest / fname
        data = json.loads(path.read_text())
        for k, v in edits.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        path.write_text(json.dumps(data, indent=2))


def key_record(keys: dict, base: dict) -> list:
    out = []
    for k, (types, v) in keys.items():
        ty = ":".join(types)
        if isinstance(v, list):
            b = base.get(k, (None, None))[1]
            if not isinstance(b, list) or len(b) != len(v):
                sys.exit(f"key {k}: the unedited fixture has no array of the same length")
            v = {"len": len(v), "changed": {str(i): x for i, (x, y) in enumerate(zip(v, b)) if x != y}}
        out.append([k, ty, v])
    return out


def read(path: Path):
    import gguf

    r = gguf.GGUFReader(str(path))
    keys = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        keys[f.name] = ([t.name for t in f.types], f.contents())
    tensors = [[t.name, t.tensor_type.name, [int(x) for x in t.shape],
                hashlib.sha256(t.data.tobytes()).hexdigest()] for t in r.tensors]
    return keys, tensors


def dump(v, indent: int = 0) -> str:
    """JSON with one line per list of scalars or per tensor row: small diffs, readable."""
    pad, inner = " " * indent, " " * (indent + 1)
    flat = lambda x: not isinstance(x, (list, dict)) or (  # noqa: E731
        isinstance(x, list) and all(not isinstance(y, (list, dict)) for y in x))
    if isinstance(v, dict):
        items = [f"{inner}{json.dumps(k)}: {dump(x, indent + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(v, list) and not all(flat(x) for x in v):
        return "[\n" + ",\n".join(inner + dump(x, indent + 1) for x in v) + f"\n{pad}]"
    if isinstance(v, list) and any(isinstance(x, list) for x in v):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"
    return json.dumps(v)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    llama_dir = Path(sys.argv[1]).resolve()
    quantize = Path(sys.argv[2]).resolve()
    out = {"about": "llama.cpp's conversions (other than F32) and llama-quantize outputs of the "
                    "tiny family checkpoints, per tensor; written by "
                    "tools/scripts/family_convert_refs.py (do not edit by hand)",
           "archs": {}}
    try:
        out["llama_cpp"] = subprocess.run(
            ["git", "-C", str(llama_dir), "log", "-1", "--format=%h %s"],
            capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        out["llama_cpp"] = "(unknown revision)"
    driver = Path(__file__).resolve().parent / "family_fixtures.py"
    with tempfile.TemporaryDirectory(prefix="family-refs-") as tmp:
        tmp = Path(tmp)
        for name, spec in ARCHS.items():
            print(f"== {name}", flush=True)
            hf = ROOT / "tools/tests/fixtures/families_hf" / name
            f32 = ROOT / "tests/fixtures/families" / name / "model.gguf"
            f32_keys, _ = read(f32)
            entry = {"convert": {}, "quantize": {"types": {}, "sha256": {}}}
            for outtype in OUTTYPES:
                path = tmp / f"{name}-{outtype}.gguf"
                cmd = [sys.executable, str(driver), "--convert", str(llama_dir), str(hf), str(path),
                       f"lumen-tiny-{name}", spec["pre"], outtype]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"{name} {outtype}: conversion failed:\n{res.stderr[-4000:]}")
                keys, tensors = read(path)
                for k in set(keys) | set(f32_keys):
                    if k in IGNORED_KEYS:
                        continue
                    a, b = keys.get(k), f32_keys.get(k)
                    if a != b:
                        sys.exit(f"{name} {outtype}: key {k} differs from the F32 file: {a!r} != {b!r}")
                if list(keys) != list(f32_keys):
                    sys.exit(f"{name} {outtype}: key order differs from the F32 file")
                entry["convert"][outtype] = {"file_type": int(keys["general.file_type"][1]),
                                             "tensors": tensors}
            names = None
            for ftype in FTYPES:
                path = tmp / f"{name}-{ftype}.gguf"
                res = subprocess.run([str(quantize), str(f32), str(path), ftype, "1"],
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"{name} {ftype}: llama-quantize failed:\n{res.stderr[-4000:]}")
                _, tensors = read(path)
                these = [t[0] for t in tensors]
                if names is None:
                    names = these
                elif these != names:
                    sys.exit(f"{name} {ftype}: tensor order differs between file types")
                entry["quantize"]["types"][ftype] = [t[1] for t in tensors]
                if ftype in BYTES_FOR:
                    entry["quantize"]["sha256"][ftype] = [t[3] for t in tensors]
            entry["quantize"]["tensors"] = names
            out["archs"][name] = entry
        out["variants"] = {}
        for vname, (base, patch) in VARIANTS.items():
            print(f"== variant {vname}", flush=True)
            model_dir = tmp / vname
            patched_copy(ROOT / "tools/tests/fixtures/families_hf" / base, model_dir, patch)
            path = tmp / f"{vname}.gguf"
            cmd = [sys.executable, str(driver), "--convert", str(llama_dir), str(model_dir), str(path),
                   f"lumen-tiny-{vname}", ARCHS[base]["pre"], "f32"]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"{vname}: conversion failed:\n{res.stderr[-4000:]}")
            keys, tensors = read(path)
            base_keys, _ = read(ROOT / "tests/fixtures/families" / base / "model.gguf")
            keys.pop("general.name")
            out["variants"][vname] = {"base": base, "patch": patch,
                                      "keys": key_record(keys, base_keys), "tensors": tensors}
    dest = ROOT / "tools/tests/fixtures/families_llamacpp.json"
    dest.write_text(dump(out) + "\n")
    json.loads(dest.read_text())
    print(f"wrote {dest} ({dest.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
