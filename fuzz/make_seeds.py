"""Writes the synthetic seeds of the fuzz corpus (the real-file seeds are copied, see README.md).

Run from the repository root, once per venv:
    /root/.cache/lumen/venv/bin/python fuzz/make_seeds.py gguf        # gguf-py
    /root/.cache/lumen/venv-torch/bin/python fuzz/make_seeds.py images  # PIL
"""
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent


def tiny_llama(path: pathlib.Path) -> None:
    """A complete, loadable 1-layer llama (width 32, 16-token byte-level vocabulary, F16)."""
    import gguf

    embd, ff, vocab = 32, 64, 16
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(embd)
    w.add_feed_forward_length(ff)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + list("abcdefgĠhij") + ["ab", "Ġa"]
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(["a b", "Ġ a"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    rng = np.random.default_rng(0)

    def t(name, *shape):
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float16))

    t("token_embd.weight", vocab, embd)
    t("output_norm.weight", embd)
    t("blk.0.attn_norm.weight", embd)
    t("blk.0.attn_q.weight", embd, embd)
    t("blk.0.attn_k.weight", embd // 2, embd)
    t("blk.0.attn_v.weight", embd // 2, embd)
    t("blk.0.attn_output.weight", embd, embd)
    t("blk.0.ffn_norm.weight", embd)
    t("blk.0.ffn_gate.weight", ff, embd)
    t("blk.0.ffn_up.weight", ff, embd)
    t("blk.0.ffn_down.weight", embd, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()




def tiny_images(out: pathlib.Path) -> None:
    """Small images in every accepted format (needs PIL: run with the torch venv)."""
    from PIL import Image

    rgb = Image.new("RGB", (23, 11))
    rgb.putdata([((x * 11) % 256, (y * 23) % 256, (x * y) % 256) for y in range(11) for x in range(23)])
    rgb.save(out / "rgb-23x11.jpg", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    rgb.save(out / "rgb-23x11-exif-orient6.jpg", quality=80, exif=exif)
    rgb.save(out / "rgb-23x11.webp", lossless=True)
    rgb.convert("P").save(out / "palette-23x11.gif")
    Image.new("LA", (5, 70), (128, 200)).save(out / "gray-alpha-5x70.png")
    Image.new("I;16", (3, 3), 40000).save(out / "gray16-3x3.png")


if __name__ == "__main__":
    if sys.argv[1] == "gguf":
        tiny_llama(HERE / "corpus/gguf_header/tiny-llama-f16.gguf")
    else:
        tiny_images(HERE / "corpus/image")
