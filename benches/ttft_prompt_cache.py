#!/usr/bin/env python3
"""Time to first token of a conversation's second turn, with and without prompt caching.

    lumen serve -m MODEL -c 4096 --port 8080 &
    python3 benches/ttft_prompt_cache.py --url http://127.0.0.1:8080 [--rounds 3]

Each round: a first turn with a ~1,500-token system prompt (its answer taken as the assistant
message), then the second turn streamed twice — `cache_prompt: true` (the slot holds the first
turn, so only the new tokens are evaluated) and `cache_prompt: false` (llama.cpp's field: the
whole prompt is evaluated again) — in alternating order. Time to first token is from sending
the request to the first content delta. Standard library only.
"""
import argparse
import json
import statistics
import time
import urllib.request

SYSTEM = (
    "You are the support assistant of a hardware shop. Answer briefly and politely, name the "
    "product, and never invent prices. The shop sells screws, nails, hammers, saws, drills, "
    "paint, brushes, ladders, tape, glue, and garden tools. "
)


def post(url, body, stream):
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    resp = urllib.request.urlopen(req, timeout=600)
    if not stream:
        return json.load(resp), None
    ttft, usage = None, None
    for line in resp:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk.get("choices", []):
            if ttft is None and c.get("delta", {}).get("content"):
                ttft = time.perf_counter() - start
    return usage, ttft


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--system-repeats", type=int, default=28, help="~54 tokens each")
    a = ap.parse_args()

    times = {True: [], False: []}
    for rnd in range(a.rounds):
        # A fresh system prompt each round, so no round starts from the previous one's cache.
        system = f"Round {rnd}. " + SYSTEM * a.system_repeats
        first = [
            {"role": "system", "content": system},
            {"role": "user", "content": "Do you sell ladders?"},
        ]
        reply, _ = post(a.url, {"messages": first, "max_tokens": 16, "temperature": 0}, False)
        answer = reply["choices"][0]["message"]["content"]
        second = first + [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And paint?"},
        ]
        order = [True, False] if rnd % 2 == 0 else [False, True]
        for cache in order:
            if cache:
                # The slot must hold the first turn: ask it again (cached) to restore it after a
                # cold run replaced the cache with the second turn's tokens.
                post(a.url, {"messages": first, "max_tokens": 16, "temperature": 0}, False)
            body = {
                "messages": second,
                "max_tokens": 8,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
                "cache_prompt": cache,
            }
            usage, ttft = post(a.url, body, True)
            cached = usage["prompt_tokens_details"]["cached_tokens"]
            print(
                f"round {rnd} cache_prompt={str(cache).lower():5} prompt {usage['prompt_tokens']} "
                f"tokens, cached {cached}: time to first token {ttft * 1000:.0f} ms"
            )
            times[cache].append(ttft)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"median: cached {on * 1000:.0f} ms, uncached {off * 1000:.0f} ms ({off / on:.1f}x)")


if __name__ == "__main__":
    main()
