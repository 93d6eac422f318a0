"""The official Anthropic Python SDK against the fake provider's Messages API.

Usage: anthropic_client.py BASE_URL

If the SDK parses every answer, stream and error here, the fake provider
speaks Anthropic's wire format faithfully enough for the gateway's tests to
mean something. Prints one JSON object per case.
"""

import json
import sys

import anthropic

base = sys.argv[1]
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-sdk-test", max_retries=0, timeout=10.0)
messages = [{"role": "user", "content": "Hello"}]


def emit(**kw):
    print(json.dumps(kw), flush=True)


m = client.messages.create(model="ok", max_tokens=64, system="Be brief.", messages=messages)
emit(
    case="create",
    text="".join(b.text for b in m.content if b.type == "text"),
    stop_reason=m.stop_reason,
    input_tokens=m.usage.input_tokens,
    output_tokens=m.usage.output_tokens,
    role=m.role,
)

with client.messages.stream(model="ok", max_tokens=64, messages=messages) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
emit(
    case="stream",
    text=streamed,
    final_text="".join(b.text for b in final.content if b.type == "text"),
    stop_reason=final.stop_reason,
    output_tokens=final.usage.output_tokens,
)

# The raw event sequence, as the SDK types it.
kinds = []
with client.messages.create(model="ok", max_tokens=64, messages=messages, stream=True) as raw:
    for event in raw:
        if not kinds or kinds[-1] != event.type:
            kinds.append(event.type)
emit(case="events", kinds=kinds)


def failing(case, model, stream=False):
    try:
        if stream:
            with client.messages.stream(model=model, max_tokens=64, messages=messages) as s:
                text = "".join(s.text_stream)
            emit(case=case, raised=None, text=text)
        else:
            client.messages.create(model=model, max_tokens=64, messages=messages)
            emit(case=case, raised=None)
    except anthropic.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        error = body.get("error", body) if isinstance(body, dict) else {}
        emit(
            case=case,
            raised=type(e).__name__,
            status=e.status_code,
            error_type=error.get("type") if isinstance(error, dict) else None,
            retry_after=e.response.headers.get("retry-after"),
            message=str(e),
        )


failing("rate_limited", "limited")
failing("overloaded", "overloaded")
failing("too_long", "too-long")
failing("error_event", "error-event", stream=True)
