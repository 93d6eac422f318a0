"""Drives the gateway with the official OpenAI Python SDK.

Usage: openai_client.py BASE_URL ROUTE [ROUTE ...]
Prints one JSON line per check; exits non-zero on any SDK error.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, routes = sys.argv[1], sys.argv[2:]
client = OpenAI(base_url=base_url, api_key="client-key-not-checked", max_retries=0, timeout=30)

for route in routes:
    resp = client.chat.completions.create(
        model=route,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        max_tokens=50,
    )
    print(json.dumps({
        "check": "complete", "route": route,
        "text": resp.choices[0].message.content,
        "finish_reason": resp.choices[0].finish_reason,
        "usage": resp.usage.total_tokens if resp.usage else None,
    }), flush=True)

    text, finish, usage = "", None, None
    stream = client.chat.completions.create(
        model=route,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                finish = choice.finish_reason
    print(json.dumps({"check": "stream", "route": route, "text": text,
                      "finish_reason": finish, "usage": usage}), flush=True)

# Structured output through the SDK's own parser, on the route whose
# provider has no response_format (Anthropic): the gateway asks it through a
# forced tool and answers JSON content.
if "via-anthropic" in routes:
    from pydantic import BaseModel

    class Place(BaseModel):
        city: str

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    parsed = parse(
        model="via-anthropic",
        messages=[{"role": "user", "content": "Where is it sunny?"}],
        response_format=Place,
    )
    choice = parsed.choices[0]
    print(json.dumps({"check": "parse", "route": "via-anthropic",
                      "city": choice.message.parsed.city if choice.message.parsed else None,
                      "finish_reason": choice.finish_reason}), flush=True)

try:
    client.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "x"}])
    print(json.dumps({"check": "not_found", "status": 200}))
except openai.NotFoundError as e:
    print(json.dumps({"check": "not_found", "status": e.status_code,
                      "code": (e.body or {}).get("code") if isinstance(e.body, dict) else None}))
