//! One-pass `Deserialize` impls for the request types that keep unknown
//! fields in an `extra` map.
//!
//! `#[serde(flatten)]` makes serde buffer every field of the object into an
//! intermediate tree and deserialise the struct from that tree, so a request
//! parsed through the derive cost more than parsing the same bytes into a
//! `serde_json::Value`. These visitors read each known field straight into
//! its slot and each unknown one into `extra`, in a single pass. They accept
//! and reject exactly what the derived impls did: the same required fields,
//! duplicate-field errors for known fields, and the last value for a repeated
//! unknown field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::request::{
    function_kind, ChatRequest, Content, ContentPart, FunctionCall, ImageUrl, Message,
    RequestParams, Role, StreamOptions, ToolCall, ToolFunction,
};

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Reads the next value into `slot`, which must still be empty.
fn set<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Like [`set`] for an optional field: `null` leaves it `None`, and a second
/// occurrence is a duplicate even after a `null`.
fn set_opt<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    seen: &mut bool,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if std::mem::replace(seen, true) {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = map.next_value()?;
    Ok(())
}

/// Which optional fields of a [`ChatRequest`] were already seen.
#[derive(Default)]
struct Seen([bool; 16]);

impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ChatRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct ChatRequest")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest, A::Error> {
                let mut model = None;
                let mut messages = None;
                let mut stream = None;
                let mut stream_options = None;
                let mut p = RequestParams::default();
                let mut seen = Seen::default();
                let s = &mut seen.0;
                while let Some(Key(key)) = map.next_key()? {
                    let m = &mut map;
                    match &*key {
                        "model" => set(m, &mut model, "model")?,
                        "messages" => set(m, &mut messages, "messages")?,
                        "stream" => set_opt(m, &mut s[0], &mut stream, "stream")?,
                        "stream_options" => {
                            set_opt(m, &mut s[1], &mut stream_options, "stream_options")?
                        }
                        "temperature" => set_opt(m, &mut s[2], &mut p.temperature, "temperature")?,
                        "top_p" => set_opt(m, &mut s[3], &mut p.top_p, "top_p")?,
                        "max_tokens" => set_opt(m, &mut s[4], &mut p.max_tokens, "max_tokens")?,
                        "max_completion_tokens" => set_opt(
                            m,
                            &mut s[5],
                            &mut p.max_completion_tokens,
                            "max_completion_tokens",
                        )?,
                        "stop" => set_opt(m, &mut s[6], &mut p.stop, "stop")?,
                        "n" => set_opt(m, &mut s[7], &mut p.n, "n")?,
                        "tools" => set_opt(m, &mut s[8], &mut p.tools, "tools")?,
                        "tool_choice" => set_opt(m, &mut s[9], &mut p.tool_choice, "tool_choice")?,
                        "response_format" => {
                            set_opt(m, &mut s[10], &mut p.response_format, "response_format")?
                        }
                        "seed" => set_opt(m, &mut s[11], &mut p.seed, "seed")?,
                        "user" => set_opt(m, &mut s[12], &mut p.user, "user")?,
                        _ => {
                            let v: Value = m.next_value()?;
                            p.extra.insert(key.into_owned(), v);
                        }
                    }
                }
                let mut messages: Vec<Message> =
                    messages.ok_or_else(|| de::Error::missing_field("messages"))?;
                // A request lives as long as its stream (a continuation
                // re-sends it): no spare capacity from the parse's growth.
                messages.shrink_to_fit();
                Ok(ChatRequest {
                    model: model.ok_or_else(|| de::Error::missing_field("model"))?,
                    messages,
                    stream,
                    stream_options,
                    params: p,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct Message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
                let mut role: Option<Role> = None;
                let mut content = None;
                let mut name = None;
                let mut tool_calls: Option<Vec<ToolCall>> = None;
                let mut tool_call_id = None;
                let mut extra = Map::new();
                let mut seen = [false; 4];
                while let Some(Key(key)) = map.next_key()? {
                    let m = &mut map;
                    match &*key {
                        "role" => set(m, &mut role, "role")?,
                        "content" => set_opt(m, &mut seen[0], &mut content, "content")?,
                        "name" => set_opt(m, &mut seen[1], &mut name, "name")?,
                        "tool_calls" => set_opt(m, &mut seen[2], &mut tool_calls, "tool_calls")?,
                        "tool_call_id" => {
                            set_opt(m, &mut seen[3], &mut tool_call_id, "tool_call_id")?
                        }
                        _ => {
                            let v: Value = m.next_value()?;
                            extra.insert(key.into_owned(), v);
                        }
                    }
                }
                Ok(Message {
                    role: role.ok_or_else(|| de::Error::missing_field("role"))?,
                    content,
                    name,
                    tool_calls,
                    tool_call_id,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(p) = seq.next_element::<ContentPart>()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ContentPart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct ContentPart")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContentPart, A::Error> {
                let mut kind = None;
                let mut text = None;
                let mut image_url: Option<ImageUrl> = None;
                let mut extra = Map::new();
                let mut seen = [false; 2];
                while let Some(Key(key)) = map.next_key()? {
                    let m = &mut map;
                    match &*key {
                        "type" => set(m, &mut kind, "type")?,
                        "text" => set_opt(m, &mut seen[0], &mut text, "text")?,
                        "image_url" => set_opt(m, &mut seen[1], &mut image_url, "image_url")?,
                        _ => {
                            let v: Value = m.next_value()?;
                            extra.insert(key.into_owned(), v);
                        }
                    }
                }
                Ok(ContentPart {
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    text,
                    image_url,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for ToolFunction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ToolFunction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct ToolFunction")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ToolFunction, A::Error> {
                let mut name = None;
                let mut description = None;
                let mut parameters = None;
                let mut extra = Map::new();
                let mut seen = [false; 2];
                while let Some(Key(key)) = map.next_key()? {
                    let m = &mut map;
                    match &*key {
                        "name" => set(m, &mut name, "name")?,
                        "description" => set_opt(m, &mut seen[0], &mut description, "description")?,
                        "parameters" => set_opt(m, &mut seen[1], &mut parameters, "parameters")?,
                        _ => {
                            let v: Value = m.next_value()?;
                            extra.insert(key.into_owned(), v);
                        }
                    }
                }
                Ok(ToolFunction {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    description,
                    parameters,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ToolCall;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct ToolCall")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ToolCall, A::Error> {
                let mut id = None;
                let mut kind = None;
                let mut function = None;
                let mut extra = Map::new();
                while let Some(Key(key)) = map.next_key()? {
                    let m = &mut map;
                    match &*key {
                        "id" => set(m, &mut id, "id")?,
                        "type" => set(m, &mut kind, "type")?,
                        "function" => set(m, &mut function, "function")?,
                        _ => {
                            let v: Value = m.next_value()?;
                            extra.insert(key.into_owned(), v);
                        }
                    }
                }
                Ok(ToolCall {
                    id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                    kind: kind.unwrap_or_else(function_kind),
                    function: function.ok_or_else(|| de::Error::missing_field("function"))?,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for FunctionCall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FunctionCall;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct FunctionCall")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FunctionCall, A::Error> {
                let mut name = None;
                let mut arguments = None;
                let mut extra = Map::new();
                while let Some(Key(key)) = map.next_key()? {
                    let m = &mut map;
                    match &*key {
                        "name" => set(m, &mut name, "name")?,
                        "arguments" => set(m, &mut arguments, "arguments")?,
                        _ => {
                            let v: Value = m.next_value()?;
                            extra.insert(key.into_owned(), v);
                        }
                    }
                }
                Ok(FunctionCall {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    arguments: arguments.ok_or_else(|| de::Error::missing_field("arguments"))?,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for StreamOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StreamOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct StreamOptions")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamOptions, A::Error> {
                let mut include_usage = None;
                let mut seen = false;
                let mut extra = Map::new();
                while let Some(Key(key)) = map.next_key()? {
                    match &*key {
                        "include_usage" => {
                            set_opt(&mut map, &mut seen, &mut include_usage, "include_usage")?
                        }
                        _ => {
                            let v: Value = map.next_value()?;
                            extra.insert(key.into_owned(), v);
                        }
                    }
                }
                Ok(StreamOptions {
                    include_usage,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fields_fill_their_slots_and_the_rest_goes_to_extra() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi","x":1}],"x_msg":true}],
                "stream":true,"stream_options":{"include_usage":true,"other":2},"temperature":1,"max_tokens":5,
                "stop":["a"],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"},"strict":true}}],
                "tool_choice":"auto","seed":-3,"user":"u","logit_bias":{"1":2},"top_p":null}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.is_stream() && r.wants_stream_usage());
        assert_eq!(r.stream_options.as_ref().unwrap().extra["other"], 2);
        assert_eq!(r.params.temperature, Some(1.0));
        assert_eq!(r.params.max_tokens, Some(5));
        assert_eq!(r.params.top_p, None);
        assert_eq!(r.params.seed, Some(-3));
        assert_eq!(r.params.extra["logit_bias"]["1"], 2);
        assert_eq!(r.params.extra.len(), 1);
        let t = &r.params.tools.as_ref().unwrap()[0].function;
        assert_eq!(t.extra["strict"], true);
        assert_eq!(t.parameters.as_ref().unwrap()["type"], "object");
        let m = &r.messages[0];
        assert_eq!(m.extra["x_msg"], true);
        let Some(Content::Parts(parts)) = &m.content else {
            panic!("parts")
        };
        assert_eq!(parts[0].text.as_deref(), Some("hi"));
        assert_eq!(parts[0].extra["x"], 1);
        // A round trip keeps everything.
        let again: ChatRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn tool_calls_keep_unknown_fields() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[
                {"id":"c1","function":{"name":"f","arguments":"{}","x_fn":1},
                 "extra_content":{"google":{"thought_signature":"sig"}}}]}]}"#,
        )
        .unwrap();
        let call = &r.messages[0].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.kind, "function", "the default type");
        assert_eq!(
            call.extra["extra_content"]["google"]["thought_signature"],
            "sig"
        );
        assert_eq!(call.function.extra["x_fn"], 1);
        let again: ChatRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        // A response's tool calls too (parsed through the derived, buffered impl).
        let c: crate::api::ChatCompletion = serde_json::from_str(
            r#"{"id":"x","model":"m","choices":[{"message":{"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"f","arguments":"{}"},
                 "extra_content":{"google":{"thought_signature":"sig"}}}]}}]}"#,
        )
        .unwrap();
        let calls = c.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(
            calls[0].extra["extra_content"]["google"]["thought_signature"],
            "sig"
        );
        let e = |s: &str| serde_json::from_str::<ToolCall>(s).unwrap_err().to_string();
        assert!(e(r#"{"function":{"name":"f","arguments":""}}"#).starts_with("missing field `id`"));
        assert!(e(r#"{"id":"c"}"#).starts_with("missing field `function`"));
        assert!(e(r#"{"id":"c","function":{"name":"f"}}"#).starts_with("missing field `arguments`"));
        assert!(
            e(r#"{"id":"c","id":"d","function":{"name":"f","arguments":""}}"#)
                .starts_with("duplicate field `id`")
        );
        assert!(
            e(r#"{"id":"c","type":null,"function":{"name":"f","arguments":""}}"#)
                .starts_with("invalid type")
        );
    }

    #[test]
    fn errors_match_the_derived_ones() {
        let e = |s: &str| {
            serde_json::from_str::<ChatRequest>(s)
                .unwrap_err()
                .to_string()
        };
        assert!(e(r#"{"messages":[]}"#).starts_with("missing field `model`"));
        assert!(e(r#"{"model":"m"}"#).starts_with("missing field `messages`"));
        assert!(
            e(r#"{"model":"m","model":"n","messages":[]}"#).starts_with("duplicate field `model`")
        );
        assert!(
            e(r#"{"model":"m","messages":[{"content":"x"}]}"#).starts_with("missing field `role`")
        );
        assert!(e(r#"{"model":"m","messages":[],"max_tokens":"x"}"#).starts_with("invalid type"));
        assert!(
            e(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#)
                .starts_with("invalid type")
        );
        assert!(e(r#"[1]"#).starts_with("invalid type"));
        let ok: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[],"a":1,"a":2}"#).unwrap();
        assert_eq!(
            ok.params.extra["a"], 2,
            "the last value of a repeated unknown field"
        );
    }
}
