#!/usr/bin/env python3
"""`GET /metrics` of `lumen serve` through prometheus_client's own parser (not run by CI: needs
the package; tests/server.rs checks the same text in Rust).

    lumen serve -m MODEL --api-key sk-local --port 8080 &
    $VENV/bin/python tests/metrics_client.py --url http://127.0.0.1:8080 --key sk-local

Sends two chat requests, then parses the exposition with
`prometheus_client.parser.text_string_to_metric_families` and checks the families' types and
that the counters add up to the requests' usage. Exits non-zero on the first failure.
"""
import argparse
import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def call(url, key, path, body=None):
    req = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read().decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--key", default="sk-local")
    a = ap.parse_args()

    before = families(call(a.url, a.key, "/metrics"))
    generated = 0
    for q in ["Name a colour.", "Name a fruit."]:
        body = {"messages": [{"role": "user", "content": q}], "max_tokens": 8}
        generated += json.loads(call(a.url, a.key, "/v1/chat/completions", body))["usage"][
            "completion_tokens"
        ]
    after = families(call(a.url, a.key, "/metrics"))
    kinds = {name: f.type for name, f in after.items()}
    print("families:", kinds)
    assert kinds["lumen_time_to_first_token_seconds"] == "histogram", kinds
    assert kinds["lumen_slots_busy"] == "gauge", kinds

    def value(fams, name, sample=None):
        for s in fams[name].samples:
            if s.name == (sample or name):
                return s.value
        raise KeyError(name)

    # prometheus_client names counter families without `_total`; samples keep it.
    d_req = value(after, "lumen_requests", "lumen_requests_total") - value(
        before, "lumen_requests", "lumen_requests_total"
    )
    d_gen = value(after, "lumen_tokens_generated", "lumen_tokens_generated_total") - value(
        before, "lumen_tokens_generated", "lumen_tokens_generated_total"
    )
    d_ttft = value(
        after, "lumen_time_to_first_token_seconds", "lumen_time_to_first_token_seconds_count"
    ) - value(before, "lumen_time_to_first_token_seconds", "lumen_time_to_first_token_seconds_count")
    assert (d_req, d_gen, d_ttft) == (2, generated, 2), (d_req, d_gen, d_ttft, generated)
    print(f"ok: +{d_req:.0f} requests, +{d_gen:.0f} generated tokens, +{d_ttft:.0f} first tokens")


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


if __name__ == "__main__":
    main()
