#!/usr/bin/env python3
"""Reference fixtures for Lumen's weight quantizers (`lumen quantize`).

Usage:  $VENV/bin/python tools/scripts/gen_quantize_fixtures.py [OUT_DIR]
        (default OUT_DIR: tools/fixtures/quantize)

Needs numpy, gguf-py (`gguf`, written against 0.19.0) and llama-cpp-python (its bundled
libggml-base.so; written against 0.3.36). Deterministic: a fixed seed, so re-running
reproduces the same bytes.

Written (little-endian):

  weights.f32         the f32 test tensors, concatenated (row-major, rows of `cols` values)
  <TYPE>.gguf_py.bin  gguf-py's `gguf.quants.quantize` of every tensor, concatenated, for the
                      types gguf-py can quantize (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
  <TYPE>.ggml.bin     llama.cpp's own quantizer (`ggml_quantize_chunk` without an importance
                      matrix = the `quantize_row_*_ref` functions `llama-quantize` runs) for
                      every tensor whose rows are whole blocks of TYPE, concatenated
  index.json          the tensors (name, cols, rows, offset in floats) and, per type and
                      tensor, the byte offset of its quantization and the RMSE of llama.cpp's
                      result against the f32 weights (dequantized with gguf-py, an independent
                      dequantizer)

  mixes.json          the tensor types llama.cpp's `llama_model_quantize` chose for every
                      file type Lumen writes, on two 16-layer llama-shaped F32 models (random
                      weights, GQA 4; one with an output.weight, one with tied embeddings),
                      built here with gguf-py and quantized in a temporary directory

Tensor names are llama-style so a Rust test can build a GGUF from them and run the whole
`lumen quantize` pipeline; one tensor has 64 columns, which K-quants cannot hold (llama.cpp
falls back to a 32-element type), and one is 1-D (a norm, kept F32).
"""

import ctypes
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

GGUF_PY_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
GGML_TYPES = GGUF_PY_TYPES + ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def tensors(rng):
    """(name, cols, rows, data) with the awkward cases quantizers must get right."""
    a = rng.standard_normal((8, 256)).astype(np.float32) * 0.02
    a[0, :] = 0.0  # all zero
    a[1, :] = 0.75  # constant
    a[2, :] = -np.abs(a[2, :])  # negative only
    a[3, :] *= 1e-3
    a[3, 100] = 3.0  # one outlier
    a[4, :] = np.resize(np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5]), 256)  # ties
    a[5, :] *= 1e-30  # tiny values
    b = (rng.standard_t(3, size=(6, 512)) * 0.015).astype(np.float32)  # heavy tails
    c = (rng.standard_normal((5, 64)) * 0.05).astype(np.float32)  # 64 columns
    d = (rng.standard_normal((4, 768)) * 0.02 + 0.01).astype(np.float32)  # offset mean
    norm = (1.0 + rng.standard_normal((1, 256)) * 0.1).astype(np.float32)
    return [
        ("blk.0.attn_q.weight", a),
        ("blk.0.ffn_down.weight", b),
        ("blk.0.attn_k.weight", c),
        ("token_embd.weight", d),
        ("blk.0.attn_norm.weight", norm),
    ]


def ggml_lib():
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        sys.exit("llama-cpp-python is not installed in this Python")
    lib = ctypes.CDLL(os.path.join(os.path.dirname(spec.origin), "lib", "libggml-base.so"))
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                  ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def ggml_quantize(lib, name, data):
    qt = T[name]
    block, size = gq.GGML_QUANT_SIZES[qt]
    rows, cols = data.shape
    src = np.ascontiguousarray(data, dtype=np.float32)
    dst = np.zeros(rows * cols // block * size, dtype=np.uint8)
    n = lib.ggml_quantize_chunk(int(qt), src.ctypes.data, dst.ctypes.data, 0, rows, cols, None)
    assert n == dst.size, (name, n, dst.size)
    return dst


def rmse(q, qt, data):
    back = np.asarray(gq.dequantize(q, qt), dtype=np.float64).reshape(data.shape)
    return float(np.sqrt(np.mean((back - data.astype(np.float64)) ** 2)))


# llama-quantize file types Lumen writes: name -> llama_ftype id
FILE_TYPES = {
    "F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
}
MIX_MODEL = {"arch": "llama", "n_layer": 16, "n_embd": 256, "n_ff": 512, "n_head": 8,
             "n_head_kv": 2, "n_vocab": 320}


def mix_model(path, tied, rng):
    """A small llama-shaped F32 GGUF: every tensor role the mixes single out, 16 layers."""
    import gguf

    m = MIX_MODEL
    e, f, kv = m["n_embd"], m["n_ff"], m["n_embd"] * m["n_head_kv"] // m["n_head"]
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(128)
    w.add_embedding_length(e)
    w.add_block_count(m["n_layer"])
    w.add_feed_forward_length(f)
    w.add_head_count(m["n_head"])
    w.add_head_count_kv(m["n_head_kv"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(e // m["n_head"])
    w.add_vocab_size(m["n_vocab"])
    w.add_file_type(0)
    shapes = [("token_embd.weight", (m["n_vocab"], e)), ("output_norm.weight", (e,))]
    if not tied:
        shapes.append(("output.weight", (m["n_vocab"], e)))
    for i in range(m["n_layer"]):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (e,)), (f"blk.{i}.attn_q.weight", (e, e)),
            (f"blk.{i}.attn_k.weight", (kv, e)), (f"blk.{i}.attn_v.weight", (kv, e)),
            (f"blk.{i}.attn_output.weight", (e, e)), (f"blk.{i}.ffn_norm.weight", (e,)),
            (f"blk.{i}.ffn_gate.weight", (f, e)), (f"blk.{i}.ffn_up.weight", (f, e)),
            (f"blk.{i}.ffn_down.weight", (e, f)),
        ]
    for name, shape in shapes:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return [{"name": n, "shape": list(reversed(s))} for n, s in shapes]  # GGUF order


def mixes(rng):
    """llama.cpp's per-tensor types for every file type, on the tied and untied mix models."""
    import gguf
    import llama_cpp

    out = {"model": MIX_MODEL, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for tied in (False, True):
            src = os.path.join(tmp, f"mix-{tied}.gguf")
            tensors = mix_model(src, tied, rng)
            types = {}
            for name, ftype in FILE_TYPES.items():
                dst = os.path.join(tmp, f"{name}.gguf")
                p = llama_cpp.llama_model_quantize_default_params()
                p.ftype, p.nthread = ftype, 2
                rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
                assert rc == 0, (name, rc)
                r = gguf.GGUFReader(dst)
                by_name = {t.name: t.tensor_type.name for t in r.tensors}
                types[name] = [by_name[t["name"]] for t in tensors]  # in `tensors` order
                written_order = [t.name for t in r.tensors]
                os.remove(dst)
            out["variants"]["tied" if tied else "untied"] = {
                "tensors": tensors, "types": types, "llama_order": written_order}
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "quantize")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261127)
    ts = tensors(rng)
    lib = ggml_lib()
    from importlib.metadata import version

    index = {
        "generator": "tools/scripts/gen_quantize_fixtures.py",
        "gguf_py_version": version("gguf"),
        "llama_cpp_python_version": version("llama_cpp_python"),
        "tensors": [],
        "types": {},
    }
    offset = 0
    with open(os.path.join(out_dir, "weights.f32"), "wb") as f:
        for name, data in ts:
            rows, cols = data.shape
            index["tensors"].append({"name": name, "cols": cols, "rows": rows, "offset": offset})
            f.write(data.astype("<f4").tobytes())
            offset += data.size
    for name in GGML_TYPES:
        qt = T[name]
        block, _ = gq.GGML_QUANT_SIZES[qt]
        entry = {"ggml": f"{name}.ggml.bin", "tensors": {}}
        ggml_bytes, py_bytes = [], []
        pos = py_pos = 0
        for tname, data in ts:
            if data.shape[1] % block or data.shape[0] == 1:
                continue  # not whole blocks, or the 1-D norm (never quantized)
            q = ggml_quantize(lib, name, data)
            e = {"ggml_offset": pos, "bytes": int(q.size), "ggml_rmse": rmse(q, qt, data)}
            ggml_bytes.append(q)
            pos += q.size
            if name in GGUF_PY_TYPES:
                p = np.asarray(gq.quantize(data, qt), dtype=np.uint8).reshape(-1)
                e["gguf_py_offset"] = py_pos
                e["gguf_py_equals_ggml"] = bool(np.array_equal(p, q))
                py_bytes.append(p)
                py_pos += p.size
            entry["tensors"][tname] = e
        np.concatenate(ggml_bytes).tofile(os.path.join(out_dir, entry["ggml"]))
        if name in GGUF_PY_TYPES:
            entry["gguf_py"] = f"{name}.gguf_py.bin"
            np.concatenate(py_bytes).tofile(os.path.join(out_dir, entry["gguf_py"]))
        index["types"][name] = entry
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    with open(os.path.join(out_dir, "mixes.json"), "w") as f:
        json.dump(mixes(rng), f, separators=(",", ":"))
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
