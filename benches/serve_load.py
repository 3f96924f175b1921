#!/usr/bin/env python3
"""Aggregate generation speed of a running `lumen serve` under concurrent requests.

    lumen serve -m MODEL --parallel 4 --port 8080 &
    python3 benches/serve_load.py --url http://127.0.0.1:8080 --requests 8 --max-tokens 128

Sends all requests at once (streamed chat completions, greedy, distinct prompts) and prints
per-request and aggregate completion tokens per second plus the count of 503 refusals.
Standard library only.
"""
import argparse
import json
import threading
import time
import urllib.error
import urllib.request


def one(url, key, i, max_tokens, out):
    body = {
        "messages": [{"role": "user", "content": f"Write a long story about a cat named number {i}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    start = time.time()
    first = None
    tokens = 0
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.time() - start
        out[i] = ("ok", tokens, time.time() - start, first)
    except urllib.error.HTTPError as e:
        out[i] = (f"http {e.code}", 0, time.time() - start, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--key", default=None)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args()
    out = [None] * a.requests
    threads = [threading.Thread(target=one, args=(a.url, a.key, i, a.max_tokens, out)) for i in range(a.requests)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - start
    total = sum(r[1] for r in out)
    for i, (status, n, t, first) in enumerate(out):
        ttft = f"{first:.2f}s" if first is not None else "-"
        print(f"request {i}: {status}, {n} tokens in {t:.2f}s (first token after {ttft})")
    refused = sum(1 for r in out if r[0] != "ok")
    print(f"aggregate: {total} tokens in {wall:.2f}s = {total / wall:.1f} tokens/s; {refused} refused")


if __name__ == "__main__":
    main()
