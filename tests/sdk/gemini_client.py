"""The official Google Gen AI Python SDK against the fake provider's Gemini API.

Usage: gemini_client.py BASE_URL

If the SDK parses every answer, stream and error here, the fake provider
speaks Gemini's wire format faithfully enough for the gateway's tests to
mean something. Prints one JSON object per case.
"""

import json
import sys

from google import genai
from google.genai import errors, types

client = genai.Client(api_key="gm-sdk-test", http_options=types.HttpOptions(base_url=sys.argv[1]))


def emit(**kw):
    print(json.dumps(kw), flush=True)


r = client.models.generate_content(
    model="ok",
    contents="Hello",
    config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64),
)
emit(
    case="generate",
    text=r.text,
    finish_reason=r.candidates[0].finish_reason.name,
    prompt_tokens=r.usage_metadata.prompt_token_count,
    output_tokens=r.usage_metadata.candidates_token_count,
)

chunks = list(client.models.generate_content_stream(model="ok", contents="Hello"))
emit(
    case="stream",
    chunks=len(chunks),
    text="".join(c.text or "" for c in chunks),
    finish_reason=chunks[-1].candidates[0].finish_reason.name,
    output_tokens=chunks[-1].usage_metadata.candidates_token_count,
)


def failing(case, model, stream=False):
    try:
        if stream:
            text = "".join(c.text or "" for c in client.models.generate_content_stream(model=model, contents="Hello"))
            emit(case=case, raised=None, text=text)
        else:
            client.models.generate_content(model=model, contents="Hello")
            emit(case=case, raised=None)
    except errors.APIError as e:
        emit(case=case, raised=type(e).__name__, code=e.code, status=e.status, message=str(e.message))


failing("rate_limited", "limited")
failing("unavailable", "down")
failing("too_long", "too-long")
failing("error_event", "error-event", stream=True)
