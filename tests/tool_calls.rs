//! Tool calls end to end: an OpenAI-format client drives a whole tool
//! conversation through the gateway (turn 1: the model calls a tool; turn 2:
//! the client sends the call and its result back, the model answers from the
//! result) to each provider kind, and the fake provider checks each request
//! against its API's tool-use rules and records what it received.

mod common;

use common::Harness;
use modelux::mock::{Behaviour, Fault, MockProvider, THOUGHT_SIGNATURE};
use serde_json::{json, Value};

/// The upstream models, one per provider kind. The Gemini one is a Gemini 3
/// model, which refuses unsigned function calls.
const OPENAI_MODEL: &str = "gpt-tools";
const ANTHROPIC_MODEL: &str = "claude-tools";
const GEMINI_MODEL: &str = "gemini-3-flash-preview";

/// What the tool returned, with a non-ASCII character and JSON-significant
/// punctuation to show it reaches the provider unaltered.
const RESULT: &str = "Sunny, 21 °C \"feels like\" 19: {ok}";

/// The placeholder the gateway puts on a Gemini function call it has no
/// signature for.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

fn config(mock: &MockProvider) -> Value {
    json!({
        "providers": common::providers(mock),
        "models": {
            "openai": {"provider": "oa", "upstream_model": OPENAI_MODEL},
            "anthropic": {"provider": "an", "upstream_model": ANTHROPIC_MODEL},
            "gemini": {"provider": "ge", "upstream_model": GEMINI_MODEL}
        },
        "routes": {
            "gemini-then-anthropic": {
                "attempts": [
                    {"model": "gemini", "timeout_ms": 5000},
                    {"model": "anthropic", "timeout_ms": 5000}
                ],
                "backoff_base_ms": 10,
                "backoff_max_ms": 20
            }
        }
    })
}

/// Two tools: the mock calls the first, `get_weather`, with `{"city":"Paris"}`
/// (its one required property, a string).
fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city"]
            }
        }},
        {"type": "function", "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}
        }}
    ])
}

fn user() -> Value {
    json!({"role": "user", "content": "What is the weather in Paris?"})
}

fn turn1(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [user()], "tools": tools()})
}

/// Turn 2: the assistant message that called the tool, as the client got it,
/// and the tool's result.
fn turn2(model: &str, stream: bool, assistant: &Value, call_id: &str) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            user(),
            assistant,
            {"role": "tool", "tool_call_id": call_id, "content": RESULT}
        ],
        "tools": tools()
    })
}

fn args(call: &Value) -> Value {
    let text = call["function"]["arguments"].as_str().unwrap_or_else(|| {
        panic!("arguments are not a string: {call}");
    });
    serde_json::from_str(text).unwrap_or_else(|e| panic!("arguments {text:?}: {e}"))
}

/// Checks turn 1's answer: one call of `get_weather` with `{"city":"Paris"}`;
/// returns the assistant message and the call's id.
fn expect_call(a: &common::Answer) -> (Value, String) {
    assert_eq!(a.status, 200, "{}", a.body);
    let choice = &a.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{}", a.body);
    let message = choice["message"].clone();
    assert_eq!(message["role"], "assistant");
    let calls = message["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{message}");
    let call = &calls[0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(args(call), json!({"city": "Paris"}));
    let id = call["id"].as_str().unwrap_or("").to_owned();
    assert!(!id.is_empty(), "the call has no id: {call}");
    (message, id)
}

/// Checks turn 2's answer: the model's text echoes the tool result.
fn expect_echo(a: &common::Answer) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.content(),
        format!("The tool said: {RESULT}"),
        "{}",
        a.body
    );
    assert_eq!(a.body["choices"][0]["finish_reason"], "stop");
}

/// The last request the provider received for `upstream`.
fn last_request(h: &Harness, upstream: &str) -> Value {
    h.mock
        .requests_for(upstream)
        .last()
        .unwrap_or_else(|| panic!("no request reached {upstream}"))
        .body
        .clone()
}

/// The tool calls of a stream, reassembled from their deltas by index:
/// the first id, type and name seen, the concatenated arguments, the
/// `extra_content` of the deltas; and how many argument deltas there were.
fn reassemble(s: &common::Streamed) -> (Vec<Value>, usize) {
    let mut calls: Vec<Value> = Vec::new();
    let mut argument_deltas = 0;
    for v in s.events.iter().filter_map(|e| e.json()) {
        for d in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = d["index"].as_u64().expect("a tool call delta has an index") as usize;
            while calls.len() <= i {
                calls.push(json!({"function": {"arguments": ""}}));
            }
            let c = &mut calls[i];
            for key in ["id", "type", "extra_content"] {
                if c.get(key).is_none() && !d[key].is_null() {
                    c[key] = d[key].clone();
                }
            }
            if c["function"].get("name").is_none() && !d["function"]["name"].is_null() {
                c["function"]["name"] = d["function"]["name"].clone();
            }
            if let Some(a) = d["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                argument_deltas += 1;
                let joined = format!("{}{a}", c["function"]["arguments"].as_str().unwrap());
                c["function"]["arguments"] = json!(joined);
            }
        }
    }
    (calls, argument_deltas)
}

/// The whole two-turn conversation, non-streaming, against `model`; returns
/// the assistant message and call id of turn 1.
async fn conversation(h: &Harness, model: &str) -> (Value, String) {
    let a = h.post(&turn1(model, false)).await;
    let (message, id) = expect_call(&a);
    let b = h.post(&turn2(model, false, &message, &id)).await;
    expect_echo(&b);
    (message, id)
}

/// OpenAI: turn 1's call comes back with the provider's id, name and
/// arguments; turn 2 reaches the provider as the same assistant call and a
/// `tool` message answering its id, and the answer comes from the result.
#[tokio::test]
async fn openai_tool_conversation() {
    let h = common::start(config).await;
    let (_, id) = conversation(&h, "openai").await;
    // The provider's own id reaches the client (the answer is passed through).
    assert_eq!(id, "call_mock1");

    let requests = h.mock.requests_for(OPENAI_MODEL);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body["tools"], tools());
    let sent = &requests[1].body["messages"];
    assert_eq!(sent[1]["tool_calls"][0]["id"], id);
    assert_eq!(sent[1]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(args(&sent[1]["tool_calls"][0]), json!({"city": "Paris"}));
    assert_eq!(
        sent[2],
        json!({"role": "tool", "tool_call_id": id, "content": RESULT})
    );
}

/// Anthropic: the `tool_use` block becomes an OpenAI call (its id kept), and
/// turn 2 goes back as a `tool_use` block followed by a `tool_result` block
/// with that id, tools still declared (Anthropic refuses either otherwise).
#[tokio::test]
async fn anthropic_tool_conversation() {
    let h = common::start(config).await;
    let (_, id) = conversation(&h, "anthropic").await;
    assert_eq!(id, "toolu_mock1");

    let requests = h.mock.requests_for(ANTHROPIC_MODEL);
    assert_eq!(requests.len(), 2);
    let declared = &requests[0].body["tools"];
    assert_eq!(declared[0]["name"], "get_weather");
    assert_eq!(declared[0]["input_schema"]["required"], json!(["city"]));
    let sent = &requests[1].body["messages"];
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(
        sent[1]["content"],
        json!([{"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(sent[2]["role"], "user");
    assert_eq!(
        sent[2]["content"],
        json!([{"type": "tool_result", "tool_use_id": id, "content": RESULT}])
    );
}

/// Gemini: the `functionCall` part becomes an OpenAI call carrying the
/// part's thought signature in `extra_content.google.thought_signature`;
/// turn 2 puts the signature back on the `functionCall` part, unchanged,
/// and the result in a `functionResponse` named after the call. The mock,
/// a Gemini 3 model, refuses a missing or altered signature, so the echo
/// proves it accepted it.
#[tokio::test]
async fn gemini_tool_conversation_returns_the_thought_signature() {
    let h = common::start(config).await;
    let (message, _) = conversation(&h, "gemini").await;
    assert_eq!(
        message["tool_calls"][0]["extra_content"]["google"]["thought_signature"], THOUGHT_SIGNATURE,
        "{message}"
    );

    let requests = h.mock.requests_for(GEMINI_MODEL);
    assert_eq!(requests.len(), 2);
    let declared = &requests[0].body["tools"][0]["functionDeclarations"];
    assert_eq!(declared[0]["name"], "get_weather");
    let sent = &requests[1].body["contents"];
    assert_eq!(sent[1]["role"], "model");
    assert_eq!(
        sent[1]["parts"],
        json!([{
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": THOUGHT_SIGNATURE
        }])
    );
    assert_eq!(sent[2]["role"], "user");
    assert_eq!(
        sent[2]["parts"],
        json!([{"functionResponse": {"name": "get_weather", "response": {"content": RESULT}}}])
    );
}

/// Gemini: a history whose call has no signature (it came from another
/// provider, or the client dropped it) still works: the gateway signs the
/// call with Google's documented placeholder, which a Gemini 3 model accepts.
#[tokio::test]
async fn gemini_unsigned_history_gets_the_placeholder() {
    let h = common::start(config).await;
    let assistant = json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "call_from_elsewhere", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
    }]});
    let b = h
        .post(&turn2("gemini", false, &assistant, "call_from_elsewhere"))
        .await;
    expect_echo(&b);
    let sent = last_request(&h, GEMINI_MODEL);
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        SKIP_SIGNATURE
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );
}

/// The mock holds the gateway to Gemini 3's rule: straight to the mock, a
/// history whose function call has no signature, or a signature Gemini
/// did not issue, is refused with Gemini's 400; the issued signature and the
/// placeholder are accepted. (Without this, the Gemini tests above could
/// pass with the signature lost.)
#[tokio::test]
async fn mock_gemini_refuses_unsigned_function_calls() {
    let mock = MockProvider::start().await.unwrap();
    let client = reqwest::Client::new();
    let url = format!(
        "{}/v1beta/models/{GEMINI_MODEL}:generateContent",
        mock.url()
    );
    let body = |signature: Option<&str>| {
        let mut call = json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}});
        if let Some(s) = signature {
            call["thoughtSignature"] = json!(s);
        }
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
                {"role": "model", "parts": [call]},
                {"role": "user", "parts": [{"functionResponse": {
                    "name": "get_weather", "response": {"content": "sunny"}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]
        })
    };
    for (signature, status) in [
        (None, 400),
        (Some("bm90IGEgcmVhbCBzaWduYXR1cmU="), 400),
        (Some(THOUGHT_SIGNATURE), 200),
        (Some(SKIP_SIGNATURE), 200),
    ] {
        let resp = client
            .post(&url)
            .json(&body(signature))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "signature {signature:?}");
        let v: Value = resp.json().await.unwrap();
        if status == 400 {
            assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
        } else {
            let text = &v["candidates"][0]["content"]["parts"][0]["text"];
            assert_eq!(text, "The tool said: sunny", "{v}");
        }
    }
    let missing = client.post(&url).json(&body(None)).send().await.unwrap();
    let v: Value = missing.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Function call `get_weather` in the `1.` content block is missing a `thought_signature`"),
        "{message}"
    );
}

/// Streams turn 1 to `model` and checks that its deltas reassemble into the
/// same call as the non-stream answer (OpenAI and Anthropic stream the
/// arguments in several fragments), then streams turn 2 with the
/// reassembled call and checks the echoed text. Returns the call.
async fn streamed_conversation(h: &Harness, model: &str) -> Value {
    let s = h.stream(&turn1(model, true)).await;
    assert_eq!(s.status, 200);
    assert!(s.done(), "{:?}", s.events);
    assert_eq!(s.finish_reasons(), ["tool_calls"], "{:?}", s.events);
    assert_eq!(s.text(), "", "a tool call carries no text");
    let (calls, argument_deltas) = reassemble(&s);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(args(call), json!({"city": "Paris"}));
    let id = call["id"].as_str().expect("the call has an id").to_owned();
    if model != "gemini" {
        // Gemini sends a call whole; the others stream its arguments.
        assert!(argument_deltas > 1, "{:?}", s.events);
    }

    let assistant = json!({"role": "assistant", "content": null, "tool_calls": [call]});
    let s = h.stream(&turn2(model, true, &assistant, &id)).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.text(), format!("The tool said: {RESULT}"));
    assert_eq!(s.finish_reasons(), ["stop"]);
    call.clone()
}

/// OpenAI streaming: the call's index, id and name, then its argument
/// fragments, reassemble into the call, and a streamed turn 2 is answered.
#[tokio::test]
async fn openai_streamed_tool_call() {
    let h = common::start(config).await;
    let call = streamed_conversation(&h, "openai").await;
    assert_eq!(call["id"], "call_mock1");
}

/// Anthropic streaming: `content_block_start` (tool_use) and the
/// `input_json_delta`s become one OpenAI call whose arguments reassemble.
#[tokio::test]
async fn anthropic_streamed_tool_call() {
    let h = common::start(config).await;
    let call = streamed_conversation(&h, "anthropic").await;
    assert_eq!(call["id"], "toolu_mock1");
    let sent = last_request(&h, ANTHROPIC_MODEL);
    assert_eq!(
        sent["messages"][2]["content"][0]["tool_use_id"],
        "toolu_mock1"
    );
}

/// Gemini streaming: the chunk holding the `functionCall` part becomes a
/// call delta carrying the thought signature, and a streamed turn 2 sends
/// that signature back.
#[tokio::test]
async fn gemini_streamed_tool_call() {
    let h = common::start(config).await;
    let call = streamed_conversation(&h, "gemini").await;
    assert_eq!(
        call["extra_content"]["google"]["thought_signature"],
        THOUGHT_SIGNATURE
    );
    let sent = last_request(&h, GEMINI_MODEL);
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        THOUGHT_SIGNATURE
    );
}

/// A conversation that changes provider between turns: Gemini answers turn
/// 1 with a signed call; turn 2, on a route whose Gemini attempt now fails,
/// is served by the Anthropic fallback, which gets a valid `tool_use` /
/// `tool_result` pair under the gateway's call id (and no Gemini
/// signature). And the other way: a call made by Anthropic (unsigned)
/// continued on Gemini 3 gets the placeholder and is accepted.
#[tokio::test]
async fn a_tool_conversation_moves_between_providers() {
    let h = common::start(config).await;
    let a = h.post(&turn1("gemini-then-anthropic", false)).await;
    assert_eq!(a.header("x-modelux-provider"), "ge");
    let (message, id) = expect_call(&a);

    h.mock.set(
        GEMINI_MODEL,
        Behaviour {
            fault: Some(Fault::status(503)),
            ..Behaviour::default()
        },
    );
    let b = h
        .post(&turn2("gemini-then-anthropic", false, &message, &id))
        .await;
    expect_echo(&b);
    assert_eq!(b.header("x-modelux-provider"), "an");
    let sent = last_request(&h, ANTHROPIC_MODEL);
    assert_eq!(
        sent["messages"][1]["content"],
        json!([{"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(
        sent["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": id, "content": RESULT}])
    );
    assert!(!sent.to_string().contains(THOUGHT_SIGNATURE));

    // Anthropic's call continued on Gemini.
    h.mock.reset();
    let a = h.post(&turn1("anthropic", false)).await;
    let (message, id) = expect_call(&a);
    let b = h.post(&turn2("gemini", false, &message, &id)).await;
    expect_echo(&b);
    let sent = last_request(&h, GEMINI_MODEL);
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        SKIP_SIGNATURE
    );
}

/// A conversation with two tool calls made by Gemini, in two user turns,
/// continued on Anthropic: each call the client got must have an id of its
/// own (OpenAI ids are unique, and clients match results to calls by id),
/// and Anthropic, which refuses a request whose `tool_use` ids repeat,
/// must accept the history. (The Gemini adapter once numbered the calls of
/// each response from `call_0`: both calls were `call_0` and Anthropic
/// answered 400 "messages.5.content.0: `tool_use` ids must be unique".)
#[tokio::test]
async fn gemini_call_ids_stay_unique_across_turns() {
    let h = common::start(config).await;
    let route = "gemini-then-anthropic";
    let a = h.post(&turn1(route, false)).await;
    let (first, first_id) = expect_call(&a);
    let b = h.post(&turn2(route, false, &first, &first_id)).await;
    expect_echo(&b);

    let mut messages = turn2(route, false, &first, &first_id)["messages"].clone();
    let messages_mut = messages.as_array_mut().unwrap();
    messages_mut.push(b.body["choices"][0]["message"].clone());
    messages_mut.push(json!({"role": "user", "content": "And tomorrow?"}));
    let c = h
        .post(&json!({"model": route, "messages": messages, "tools": tools()}))
        .await;
    let (second, second_id) = expect_call(&c);
    assert_ne!(first_id, second_id, "two calls share one id");

    // Turn 4 is served by the Anthropic fallback.
    h.mock.set(
        GEMINI_MODEL,
        Behaviour {
            fault: Some(Fault::status(503)),
            ..Behaviour::default()
        },
    );
    let messages_mut = messages.as_array_mut().unwrap();
    messages_mut.push(second);
    messages_mut.push(json!({"role": "tool", "tool_call_id": second_id, "content": RESULT}));
    let d = h
        .post(&json!({"model": route, "messages": messages, "tools": tools()}))
        .await;
    expect_echo(&d);
    assert_eq!(d.header("x-modelux-provider"), "an");
}

/// Structured output across providers: a request for a JSON answer routed
/// to an Anthropic model (which has no `response_format`) gets the JSON as
/// the message's content with `finish_reason: "stop"`, whole and streamed,
/// as OpenAI would answer it; Anthropic was asked through one forced tool.
#[tokio::test]
async fn a_json_schema_answer_from_anthropic_is_json_content() {
    let h = common::start(config).await;
    let body = |stream: bool| {
        json!({
            "model": "anthropic",
            "stream": stream,
            "messages": [{"role": "user", "content": "Where is it sunny?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "place", "strict": true,
                "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false}}}
        })
    };
    let a = h.post(&body(false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let content: Value = serde_json::from_str(&a.content()).expect("JSON content");
    assert_eq!(content, json!({"city": "Paris"}));
    assert_eq!(a.body["choices"][0]["finish_reason"], "stop");
    assert!(
        a.body["choices"][0]["message"]["tool_calls"].is_null(),
        "{}",
        a.body
    );
    let sent = h.mock.requests().pop().unwrap();
    assert_eq!(sent.body["tool_choice"]["type"], "tool");
    assert_eq!(sent.body["tools"].as_array().unwrap().len(), 1);

    let s = h.stream(&body(true)).await;
    assert!(s.done());
    let content: Value = serde_json::from_str(&s.text()).expect("JSON content");
    assert_eq!(content, json!({"city": "Paris"}));
    assert_eq!(s.finish_reasons(), ["stop"]);
}
