"""Reference renderings of chat templates by transformers (the jinja2 environment that
`apply_chat_template` uses), for `tests/chat_template.rs`.

The SmolLM2 template is read from its GGUF by the small header reader below. Run with the
torch venv:

    $VENV_TORCH/bin/python tools/scripts/chat_template_refs.py \
        $LUMEN_HOME/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/fixtures/chat_templates.json
"""
import json
import struct
import sys
from pathlib import Path

from transformers.utils.chat_template_utils import _compile_jinja_template


def gguf_chat_template(path):
    """Reads `tokenizer.chat_template` from a GGUF v3 header (a minimal reader, strings only)."""
    data = Path(path).read_bytes()[: 64 << 20]
    off = 8
    _n_tensors, n_kv = struct.unpack_from("<QQ", data, off)
    off += 16

    def read_str(o):
        (n,) = struct.unpack_from("<Q", data, o)
        return data[o + 8 : o + 8 + n].decode(), o + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(ty, o):
        if ty == 8:
            return read_str(o)[1]
        if ty == 9:
            ety, n = struct.unpack_from("<IQ", data, o)
            o += 12
            for _ in range(n):
                o = skip(ety, o)
            return o
        return o + sizes[ty]

    for _ in range(n_kv):
        key, off = read_str(off)
        (ty,) = struct.unpack_from("<I", data, off)
        off += 4
        if key == "tokenizer.chat_template":
            return read_str(off)[0]
        off = skip(ty, off)
    raise SystemExit(f"{path}: no tokenizer.chat_template")


def main():
    smollm2, out = sys.argv[1], sys.argv[2]
    shared = Path(__file__).resolve().parents[3] / "shared"
    templates = {
        "smollm2": (gguf_chat_template(smollm2), "<|im_start|>", "<|im_end|>"),
        "llama32_instruct": (
            (shared / "refs/llama32_chat/llama32_instruct_chat_template.jinja").read_text(),
            "<|begin_of_text|>",
            "<|eot_id|>",
        ),
        "tiny_mllama": (
            (shared / "fixtures/tiny-mllama/chat_template.jinja").read_text(),
            "<|begin_of_text|>",
            "<|eot_id|>",
        ),
    }
    conversations = {
        "system_user": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "user_only": [{"role": "user", "content": "  Hello there!  "}],
        "multi_turn": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke about \"quotes\" & <tags>."},
        ],
    }
    image_conversations = {
        "image_then_text": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}
        ],
        "two_images": [
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]},
            {"role": "assistant", "content": "They differ."},
            {"role": "user", "content": "How?"},
        ],
    }
    cases = []
    for name, (src, bos, eos) in templates.items():
        tmpl = _compile_jinja_template(src)
        convs = dict(conversations)
        if name == "tiny_mllama":
            convs.update(image_conversations)
        for conv_name, messages in convs.items():
            for gen in (True, False):
                rendered = tmpl.render(
                    messages=messages,
                    bos_token=bos,
                    eos_token=eos,
                    add_generation_prompt=gen,
                    date_string="26 Jul 2024",
                )
                cases.append(
                    {
                        "template": name,
                        "conversation": conv_name,
                        "messages": messages,
                        "add_generation_prompt": gen,
                        "date_string": "26 Jul 2024",
                        "bos_token": bos,
                        "eos_token": eos,
                        "rendered": rendered,
                    }
                )
    Path(out).write_text(
        json.dumps({"templates": {k: v[0] for k, v in templates.items()}, "cases": cases}, indent=1, ensure_ascii=False)
        + "\n"
    )
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
