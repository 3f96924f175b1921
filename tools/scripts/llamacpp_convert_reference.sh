#!/usr/bin/env bash
# Regenerates, from llama.cpp's own convert_hf_to_gguf.py run on ../shared/fixtures/tiny-llama:
#   tests/fixtures/tiny_llama_llamacpp_layout_{bf16,f32,q8_0}.txt  metadata keys (with value
#       types) and tensors (name, type, shape), printed by gguf_layout.py
#   tests/fixtures/tiny_llama_llamacpp_sha256.txt  the SHA-256 of each converted file
# tools/tests/convert_layout.rs compares Lumen's converter output with both.
#
# Needs: llama.cpp's converter, taken from the llama-cpp-python 0.3.36 sdist (PyPI), and a venv
# with torch + transformers (PyPI torch is several GB: it goes to its own venv).
#   VENV_TORCH (required)   a venv directory, created if missing
#   WORK       (default /tmp/lumen-llamacpp-ref)      sdist, converted files
# Usage: bash tools/scripts/llamacpp_convert_reference.sh   (from the repository root)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FIXTURE=${FIXTURE:-$ROOT/../shared/fixtures/tiny-llama}
VENV_TORCH=${VENV_TORCH:?set VENV_TORCH to a venv directory (created if missing)}
WORK=${WORK:-/tmp/lumen-llamacpp-ref}
mkdir -p "$WORK"

if [ ! -x "$VENV_TORCH/bin/python" ]; then
    python3 -m venv "$VENV_TORCH"
    "$VENV_TORCH/bin/pip" install torch transformers sentencepiece numpy pyyaml jinja2 safetensors
fi
SDIST=$WORK/llama_cpp_python-0.3.36
if [ ! -d "$SDIST" ]; then
    # --no-binary only for this package: its build tools (cmake, ninja) may come as wheels.
    "$VENV_TORCH/bin/python" -m pip download --no-deps --no-binary llama-cpp-python \
        llama-cpp-python==0.3.36 -d "$WORK"
    tar xzf "$WORK/llama_cpp_python-0.3.36.tar.gz" -C "$WORK"
fi
LCPP=$SDIST/vendor/llama.cpp
export PYTHONPATH=$LCPP/gguf-py
SUMS=$ROOT/tests/fixtures/tiny_llama_llamacpp_sha256.txt
: >"$SUMS"
for t in bf16 f16 f32 q8_0; do
    "$VENV_TORCH/bin/python" "$LCPP/convert_hf_to_gguf.py" "$FIXTURE" --outtype "$t" \
        --outfile "$WORK/llamacpp-$t.gguf" >"$WORK/convert-$t.log" 2>&1
    (cd "$WORK" && sha256sum "llamacpp-$t.gguf") >>"$SUMS"
    if [ "$t" != f16 ]; then
        "$VENV_TORCH/bin/python" "$ROOT/tools/scripts/gguf_layout.py" "$WORK/llamacpp-$t.gguf" \
            >"$ROOT/tests/fixtures/tiny_llama_llamacpp_layout_$t.txt"
    fi
    echo "converted $t: $WORK/llamacpp-$t.gguf"
done
echo "wrote tests/fixtures/tiny_llama_llamacpp_layout_*.txt and $SUMS"
