"""A real-width Llama 3.2 Vision encoder (1280 wide, 16 heads, 560 px tiles, 4 tiles) with few
layers and random F16 weights, for timing the vision encoder (not for correctness: weights are
random). Only the `v.*` / `mm.0.*` tensors and `mllama.vision.*` keys the encoder reads.

Usage: $VENV/bin/python tools/scripts/synth_mllama_vision.py OUT.gguf N_LOCAL N_GLOBAL
then: LUMEN_VISION_TIMING_GGUF=OUT.gguf RAYON_NUM_THREADS=2 cargo test --release -p lumen-tools \
      --test mllama_vision timing -- --ignored --nocapture
"""
import sys

import gguf
import numpy as np

out, n_local, n_global = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
E, F, H, S, P, T, C, TXT = 1280, 5120, 16, 560, 14, 4, 3, 4096
tok = (S // P) ** 2 + 1
inter = [min(1, n_local - 1)]
rng = np.random.default_rng(0)
w = gguf.GGUFWriter(out, 'mllama')
w.add_uint32('mllama.embedding_length', TXT)
w.add_uint32('mllama.vision.block_count', n_local)
w.add_uint32('mllama.vision.global.block_count', n_global)
w.add_array('mllama.vision.intermediate_layers_indices', inter)
w.add_uint32('mllama.vision.embedding_length', E)
w.add_uint32('mllama.vision.feed_forward_length', F)
w.add_uint32('mllama.vision.attention.head_count', H)
w.add_float32('mllama.vision.attention.layer_norm_epsilon', 1e-5)
w.add_uint32('mllama.vision.image_size', S)
w.add_uint32('mllama.vision.patch_size', P)
w.add_uint32('mllama.vision.max_num_tiles', T)
w.add_uint32('mllama.vision.num_channels', C)
def mat(*shape, dt=np.float16): return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dt)
def vec(n, v=None): return np.full(n, v, np.float32) if v is not None else mat(n, dt=np.float32)
w.add_tensor('v.patch_embd.weight', mat(E, C, P, P))
w.add_tensor('v.class_embd', vec(E))
w.add_tensor('v.position_embd.weight', mat(tok, E, dt=np.float32))
w.add_tensor('v.position_embd.gate', vec(1, 0.9)); w.add_tensor('v.tile_position_embd.gate', vec(1, 0.1))
w.add_tensor('v.tile_position_embd.weight', mat(9, T * tok * E, dt=np.float32))
for p in ['pre', 'post']:
    w.add_tensor(f'v.{p}_tile_position_embd.weight', mat(9, T * E, dt=np.float32))
    w.add_tensor(f'v.{p}_tile_position_embd.gate', vec(1, 0.5))
    w.add_tensor(f'v.{p}_ln.weight', vec(E, 1.0)); w.add_tensor(f'v.{p}_ln.bias', vec(E))
def layer(g, gated):
    for n in ['attn_q', 'attn_k', 'attn_v', 'attn_output']: w.add_tensor(g + n + '.weight', mat(E, E))
    for n in ['attn_norm', 'ffn_norm']: w.add_tensor(g + n + '.weight', vec(E, 1.0)); w.add_tensor(g + n + '.bias', vec(E))
    w.add_tensor(g + 'ffn_up.weight', mat(F, E)); w.add_tensor(g + 'ffn_up.bias', vec(F))
    w.add_tensor(g + 'ffn_down.weight', mat(E, F)); w.add_tensor(g + 'ffn_down.bias', vec(E))
    if gated: w.add_tensor(g + 'attn_gate', vec(1, 0.5)); w.add_tensor(g + 'ffn_gate', vec(1, 0.5))
for i in range(n_local): layer(f'v.blk.{i}.', False)
for i in range(n_global): layer(f'v.global.blk.{i}.', True)
w.add_tensor('mm.0.weight', mat(TXT, E * (1 + len(inter)))); w.add_tensor('mm.0.bias', vec(TXT))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
