#!/usr/bin/env python3
"""Print a GGUF file's layout as sorted text, one line per metadata key (name and stored value
type; arrays with element type and length) and one per tensor (name, type, GGUF-order shape):

    key llama.block_count UINT32
    key tokenizer.ggml.tokens ARRAY[STRING;128256]
    tensor blk.0.attn_q.weight BF16 [64,64]

tools/tests/convert_layout.rs prints the same lines for Lumen's output and compares them with
the ones saved from llama.cpp's converter (tools/scripts/llamacpp_convert_reference.sh).

Usage: python tools/scripts/gguf_layout.py FILE.gguf   (needs gguf-py)
"""
import sys

import gguf


def value_type(field):
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        return f"ARRAY[{field.types[-1].name};{len(field.data)}]"
    return t.name


def main(path):
    r = gguf.GGUFReader(path)
    lines = [f"key {name} {value_type(f)}" for name, f in r.fields.items()
             if not name.startswith("GGUF.")]
    for t in r.tensors:
        shape = ",".join(str(int(d)) for d in t.shape)
        lines.append(f"tensor {t.name} {t.tensor_type.name} [{shape}]")
    print("\n".join(sorted(lines)))


if __name__ == "__main__":
    main(sys.argv[1])
