#!/usr/bin/env bash
# The kernels issue's benchmark matrix, one run: SmolLM2-135M (Q4_1 as shipped; Q4_0 and Q8_0
# requantized by llama.cpp's own llama_model_quantize) and synthetic Llama-3.2 1B (Q4_0,
# Q4_K_M, Q8_0) and 3B (Q4_0), each through `lumen bench` and llama.cpp at the same threads,
# plus the memory read bandwidth that bounds decode. Prints markdown for BENCHMARKS.md.
#
# Usage: benches/acceptance.sh [PYTHON_WITH_LLAMA_CPP] [THREADS] [REPS]
# Needs: a release build (cargo build --release --workspace) and the default model fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: benches/acceptance.sh PYTHON_WITH_LLAMA_CPP [THREADS] [REPS]}
THREADS=${2:-2}
REPS=${3:-3}
# Scratch files (synthetic and requantized models) go beside the build, not into a home dir.
WORK=${LUMEN_BENCH_DIR:-target/bench}
SYN=$WORK/synth
BENCH=$WORK/bench
mkdir -p "$SYN" "$BENCH"
# The default model through lumen's own resolver (models.toml, $LUMEN_HOME), fetched if absent.
SMOL=$(./target/release/lumen pull smollm2-135m-instruct | sed -n 's/.* verified (sha256) at //p')

requant() { # SRC DST LLAMA_FTYPE
  [ -f "$2" ] || "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.allow_requantize, p.nthread = int(sys.argv[3]), True, 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))
PYEOF
}
requant "$SMOL" "$BENCH/smollm2-Q4_0.gguf" 2
requant "$SMOL" "$BENCH/smollm2-Q8_0.gguf" 7
for spec in "llama-3.2-1b Q4_0" "llama-3.2-1b Q4_K_M" "llama-3.2-1b Q8_0" "llama-3.2-3b Q4_0"; do
  set -- $spec
  [ -f "$SYN/$1-$2.gguf" ] || ./target/release/lumen-tools synth --shape "$1" --type "$2" -o "$SYN/$1-$2.gguf"
done

echo "## $(date -u +%Y-%m-%d) — lumen $(git rev-parse --short HEAD), -t $THREADS, -r $REPS"
echo
./target/release/lumen-tools membw -t "$THREADS" --size-mib 1024 | sed 's/^/    /'
echo
"$PY" benches/llama_bench_compare.py -p 512 -n 128 -t "$THREADS" -r "$REPS" \
  "$SMOL" "$BENCH/smollm2-Q4_0.gguf" "$BENCH/smollm2-Q8_0.gguf" \
  "$SYN/llama-3.2-1b-Q4_0.gguf" "$SYN/llama-3.2-1b-Q4_K_M.gguf" "$SYN/llama-3.2-1b-Q8_0.gguf" \
  "$SYN/llama-3.2-3b-Q4_0.gguf"
