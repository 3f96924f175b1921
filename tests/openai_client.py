#!/usr/bin/env python3
"""The official `openai` Python client against `lumen serve` (not run by CI: needs the package).

    lumen serve -m MODEL --api-key sk-local --port 8080 &
    $VENV/bin/python tests/openai_client.py --url http://127.0.0.1:8080/v1 --key sk-local

Checks what a real client sees: models.list(), a whole and a streamed chat completion (with
usage), a legacy completion, a stop string, and AuthenticationError without the key. Exits
non-zero on the first failure.
"""
import argparse
import sys

import openai


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--key", default="sk-local")
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.url, api_key=a.key)

    models = client.models.list()
    ids = [m.id for m in models.data]
    assert len(ids) == 1, ids
    model = ids[0]
    print(f"models.list(): {ids}")

    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    print(f"chat (whole): {text!r} finish={whole.choices[0].finish_reason} usage={whole.usage.model_dump()}")

    pieces, usage, finish = [], None, None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    streamed = "".join(pieces)
    assert streamed == text, (streamed, text)
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    print(f"chat (streamed, {len(pieces)} chunks): {streamed!r} finish={finish} usage={usage.model_dump()}")

    comp = client.completions.create(model=model, prompt="Once upon a time", max_tokens=24, temperature=0,
                                     stop=["."])
    assert "." not in comp.choices[0].text
    print(f"completion with stop '.': {comp.choices[0].text!r} finish={comp.choices[0].finish_reason}")

    try:
        openai.OpenAI(base_url=a.url, api_key="wrong-key").models.list()
        sys.exit("expected 401 without the right key")
    except openai.AuthenticationError as e:
        print(f"wrong key: {e.status_code} {e.body.get('code') if isinstance(e.body, dict) else e.body}")

    # One model is served: a request naming another (a client's default) is answered by it.
    other = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=4)
    assert other.choices[0].message.content is not None, other
    print("another model's name: answered")
    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
