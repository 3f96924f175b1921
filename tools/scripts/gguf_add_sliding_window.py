#!/usr/bin/env python3
"""Copy a GGUF with `{arch}.attention.sliding_window = N` added (gguf-py), for the Mistral
fixture: llama.cpp's converter writes no window for Mistral (`llama` architecture), so the
windowed variant that Hugging Face computes is made by adding the key to its output.

Usage: python tools/scripts/gguf_add_sliding_window.py IN.gguf OUT.gguf N
"""
import sys

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata


def main():
    src, dst, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reader = gguf.GGUFReader(src, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    arch = arch.contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    key = gguf.Keys.Attention.SLIDING_WINDOW.format(arch=arch)
    new = {key: MetadataDetails(gguf.GGUFValueType.UINT32, window)}
    copy_with_new_metadata(reader, writer, new, [])


if __name__ == "__main__":
    main()
