//! Tool use, as each provider's API does it: reading what a request declares
//! and where its conversation stands, the tool-use rules the real APIs
//! enforce (their own 400 messages), and the deterministic call the mock
//! makes.

use serde_json::{json, Map, Value};

use super::wire::Invalid;
use super::THOUGHT_SIGNATURE;

/// What a request with tools asks of the model.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ToolAction {
    /// Tools are declared and the conversation ends with the user: call the
    /// first declared tool (or the one `tool_choice` names) with `args`.
    Call { name: String, args: Value },
    /// The conversation ends with tool results: answer with their text.
    Echo(String),
}

/// The answer to a conversation ending with tool results.
pub(crate) fn echo_text(results: &str) -> String {
    format!("The tool said: {results}")
}

/// The placeholders Google documents for a function call that has no real
/// signature (a history from another model): validation is skipped.
const SKIP_SIGNATURES: &[&str] = &[
    "skip_thought_signature_validator",
    "context_engineering_is_the_way_to_go",
];

/// Deterministic arguments for a tool whose parameters are `schema`: every
/// required property (the first property when none is required), each with
/// a value of its type: the first `enum` value, `"Paris"` for strings, `21`
/// for numbers, `true`, `[]` or `{}`. `{}` for a tool without properties.
pub(crate) fn arguments_for(schema: &Value) -> Value {
    let Some(props) = schema["properties"].as_object().filter(|p| !p.is_empty()) else {
        return json!({});
    };
    let mut names: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|n| props.contains_key(*n))
        .collect();
    if names.is_empty() {
        names.extend(props.keys().next().map(String::as_str));
    }
    let args: Map<String, Value> = names
        .into_iter()
        .map(|n| (n.to_owned(), sample_value(&props[n])))
        .collect();
    Value::Object(args)
}

fn sample_value(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.to_ascii_lowercase(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string")
            .to_ascii_lowercase(),
        _ => "string".to_owned(),
    };
    match ty.as_str() {
        "integer" | "number" => json!(21),
        "boolean" => json!(true),
        "array" => json!([]),
        "object" => json!({}),
        _ => json!("Paris"),
    }
}

/// Splits a JSON text into token-like fragments, as models stream tool
/// arguments: runs of letters and digits, and runs of everything else
/// (`{"city":"Paris"}` → `{"`, `city`, `":"`, `Paris`, `"}`). The fragments
/// concatenate to the text exactly.
pub(crate) fn json_fragments(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut prev: Option<bool> = None;
    for c in text.chars() {
        let word = c.is_alphanumeric() || c == '_';
        match out.last_mut() {
            Some(last) if prev == Some(word) => last.push(c),
            _ => out.push(c.to_string()),
        }
        prev = Some(word);
    }
    out
}

/// The text of a tool result's content: a string or text parts/blocks (as
/// any content), else the JSON itself.
fn result_text(v: &Value) -> String {
    match v {
        Value::String(_) | Value::Array(_) | Value::Null => super::wire::content_text(v),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------

/// OpenAI's tool rules and the action for `messages`.
pub(crate) fn openai(body: &Value, messages: &[Value]) -> Result<Option<ToolAction>, Invalid> {
    // Every tool message answers a call of the assistant message before the
    // run of tool messages it is in, and every call is answered.
    for (i, m) in messages.iter().enumerate() {
        let calls: Vec<&str> = m["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        if m["role"] == "assistant" && !calls.is_empty() {
            let answered: Vec<&str> = messages[i + 1..]
                .iter()
                .take_while(|n| n["role"] == "tool")
                .filter_map(|n| n["tool_call_id"].as_str())
                .collect();
            let missing: Vec<&str> = calls
                .iter()
                .copied()
                .filter(|id| !answered.contains(id))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                    missing.join(", ")
                ));
            }
        }
        if m["role"] == "tool" {
            let owner = messages[..i].iter().rev().find(|n| n["role"] != "tool");
            let id = m["tool_call_id"].as_str().unwrap_or("");
            let known = owner.is_some_and(|o| {
                o["role"] == "assistant"
                    && o["tool_calls"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["id"] == id))
            });
            if !known {
                return Err("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".into());
            }
        }
    }

    let Some(last) = messages.last() else {
        return Ok(None);
    };
    if last["role"] == "tool" {
        let results: Vec<String> = messages
            .iter()
            .rev()
            .take_while(|m| m["role"] == "tool")
            .map(|m| result_text(&m["content"]))
            .collect();
        return Ok(Some(ToolAction::Echo(
            results.into_iter().rev().collect::<Vec<_>>().join("\n"),
        )));
    }
    if last["role"] != "user" {
        return Ok(None);
    }
    let functions: Vec<&Value> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["type"] == "function")
        .map(|t| &t["function"])
        .collect();
    let chosen = match &body["tool_choice"] {
        Value::String(s) if s == "none" => return Ok(None),
        Value::Object(c) => c
            .get("function")
            .and_then(|f| f["name"].as_str())
            .and_then(|n| functions.iter().find(|f| f["name"] == n)),
        _ => None,
    };
    Ok(chosen.or(functions.first()).map(|f| ToolAction::Call {
        name: f["name"].as_str().unwrap_or("").to_owned(),
        args: arguments_for(&f["parameters"]),
    }))
}

// ---------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------

fn blocks<'a>(m: &'a Value, kind: &'a str) -> impl Iterator<Item = (usize, &'a Value)> + 'a {
    m["content"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(move |(_, b)| b["type"] == kind)
}

/// Anthropic's tool rules and the action for `messages`.
pub(crate) fn anthropic(body: &Value, messages: &[Value]) -> Result<Option<ToolAction>, Invalid> {
    let tools: Vec<&Value> = body["tools"].as_array().into_iter().flatten().collect();
    let uses_tools = messages.iter().any(|m| {
        blocks(m, "tool_use").next().is_some() || blocks(m, "tool_result").next().is_some()
    });
    if uses_tools && tools.is_empty() {
        return Err(
            "Requests which include `tool_use` or `tool_result` blocks must define tools.".into(),
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        for (j, b) in blocks(m, "tool_use") {
            let id = b["id"].as_str().unwrap_or("");
            let valid = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "messages.{i}.content.{j}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            if seen.contains(&id) {
                return Err(format!(
                    "messages.{i}.content.{j}: `tool_use` ids must be unique"
                ));
            }
            seen.push(id);
        }
        let uses: Vec<&str> = blocks(m, "tool_use")
            .filter_map(|(_, b)| b["id"].as_str())
            .collect();
        if let Some(next) = messages.get(i + 1).filter(|_| !uses.is_empty()) {
            let results: Vec<&str> = blocks(next, "tool_result")
                .filter_map(|(_, b)| b["tool_use_id"].as_str())
                .collect();
            let missing: Vec<&str> = uses
                .iter()
                .copied()
                .filter(|id| !results.contains(id))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                ));
            }
        }
        for (j, b) in blocks(m, "tool_result") {
            let id = b["tool_use_id"].as_str().unwrap_or("");
            let known = i > 0 && blocks(&messages[i - 1], "tool_use").any(|(_, u)| u["id"] == id);
            if !known {
                return Err(format!(
                    "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
    }

    let Some(last) = messages.last().filter(|m| m["role"] == "user") else {
        return Ok(None);
    };
    let results: Vec<String> = blocks(last, "tool_result")
        .map(|(_, b)| result_text(&b["content"]))
        .collect();
    if !results.is_empty() {
        return Ok(Some(ToolAction::Echo(results.join("\n"))));
    }
    // Client tools have an input schema; server tools (web search, ...) a versioned type.
    let custom: Vec<&Value> = tools
        .into_iter()
        .filter(|t| t.get("input_schema").is_some())
        .collect();
    let chosen = match body["tool_choice"]["type"].as_str() {
        Some("none") => return Ok(None),
        Some("tool") => custom
            .iter()
            .find(|t| t["name"] == body["tool_choice"]["name"]),
        _ => None,
    };
    Ok(chosen.or(custom.first()).map(|t| ToolAction::Call {
        name: t["name"].as_str().unwrap_or("").to_owned(),
        args: arguments_for(&t["input_schema"]),
    }))
}

// ---------------------------------------------------------------------------
// Gemini
// ---------------------------------------------------------------------------

fn parts_with<'a>(c: &'a Value, key: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    c["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |p| p.get(key).is_some())
}

/// Whether `model` validates thought signatures on function calls: Gemini 3
/// does (a missing one is a 400); the 1.x and 2.x models and Gemma do not.
fn validates_signatures(model: &str) -> bool {
    !["gemini-1.", "gemini-2.", "gemma-"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// A `functionResponse.response` as text: the string of a one-field object
/// such as `{"content": "..."}` or `{"output": "..."}`, the JSON otherwise.
fn response_text(response: &Value) -> String {
    match response.as_object() {
        Some(o) if o.len() == 1 => match o.values().next() {
            Some(Value::String(s)) => s.clone(),
            _ => response.to_string(),
        },
        _ => response.to_string(),
    }
}

/// Gemini's tool rules and the action for `contents` (model `model`).
pub(crate) fn gemini(
    body: &Value,
    contents: &[Value],
    model: &str,
) -> Result<Option<ToolAction>, Invalid> {
    for (i, c) in contents.iter().enumerate() {
        let responses = parts_with(c, "functionResponse").count();
        if responses > 0 {
            let calls = i
                .checked_sub(1)
                .map_or(0, |p| parts_with(&contents[p], "functionCall").count());
            if calls != responses {
                return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".into());
            }
        }
    }
    if validates_signatures(model) {
        // The current turn starts at the last user content with text (not a
        // function response); in it, each step's first call must be signed.
        let start = contents
            .iter()
            .rposition(|c| {
                c["role"] != "model"
                    && parts_with(c, "text").next().is_some()
                    && parts_with(c, "functionResponse").next().is_none()
            })
            .unwrap_or(0);
        for (i, c) in contents.iter().enumerate().skip(start) {
            if c["role"] != "model" {
                continue;
            }
            let Some(first) = parts_with(c, "functionCall").next() else {
                continue;
            };
            match first["thoughtSignature"].as_str() {
                None | Some("") => {
                    let name = first["functionCall"]["name"].as_str().unwrap_or("");
                    return Err(format!(
                        "Function call `{name}` in the `{i}.` content block is missing a `thought_signature`. Learn more: https://docs.cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures"
                    ));
                }
                Some(s) if s == THOUGHT_SIGNATURE || SKIP_SIGNATURES.contains(&s) => {}
                Some(_) => return Err("Corrupted thought signature.".into()),
            }
        }
    }

    let Some(last) = contents.last().filter(|c| c["role"] != "model") else {
        return Ok(None);
    };
    let results: Vec<String> = parts_with(last, "functionResponse")
        .map(|p| response_text(&p["functionResponse"]["response"]))
        .collect();
    if !results.is_empty() {
        return Ok(Some(ToolAction::Echo(results.join("\n"))));
    }
    let declarations: Vec<&Value> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
        .collect();
    let config = &body["toolConfig"]["functionCallingConfig"];
    if config["mode"] == "NONE" {
        return Ok(None);
    }
    let chosen = config["allowedFunctionNames"]
        .as_array()
        .and_then(|names| names.first())
        .and_then(|n| declarations.iter().find(|d| d["name"] == *n));
    Ok(chosen.or(declarations.first()).map(|d| ToolAction::Call {
        name: d["name"].as_str().unwrap_or("").to_owned(),
        args: arguments_for(&d["parameters"]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_concatenate_to_the_json() {
        assert_eq!(
            json_fragments(r#"{"city":"Paris"}"#),
            vec![r#"{""#, "city", r#"":""#, "Paris", r#""}"#]
        );
        assert_eq!(json_fragments("{}"), vec!["{}"]);
        let t = r#"{"a_b":21,"é":[true]}"#;
        assert_eq!(json_fragments(t).concat(), t);
    }

    #[test]
    fn arguments_follow_the_schema() {
        let s = json!({"type": "object", "properties": {
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "city": {"type": "string"},
            "days": {"type": ["integer", "null"]}},
            "required": ["city", "unit"]});
        assert_eq!(
            arguments_for(&s),
            json!({"city": "Paris", "unit": "celsius"})
        );
        let s = json!({"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}});
        assert_eq!(arguments_for(&s), json!({"n": 21}));
        assert_eq!(arguments_for(&json!({"type": "object"})), json!({}));
        assert_eq!(arguments_for(&Value::Null), json!({}));
    }
}
