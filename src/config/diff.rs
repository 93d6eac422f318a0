//! Structural diff of two configs, for operators comparing versions.

use serde::Serialize;
use serde_json::Value;

/// One difference between two configs, at a JSON path.
///
/// ```
/// use serde_json::json;
/// use modelux::config::{diff, Change};
/// let changes = diff(&json!({"a": 1, "b": 2}), &json!({"a": 1}));
/// assert_eq!(changes, [Change { path: "$.b".into(), kind: "removed", from: Some(json!(2)), to: None }]);
/// // Serialised (as the admin API shows it), an absent side is left out.
/// assert_eq!(serde_json::to_string(&changes[0]).unwrap(), r#"{"path":"$.b","kind":"removed","from":2}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Where, e.g. `$.routes.default.attempts[1].timeout_ms`.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
    /// The old value (absent when added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The new value (absent when removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// Every difference from `a` to `b`: objects are compared key by key, arrays
/// index by index, anything else by value. Pass redacted configs: values are
/// copied into the result.
///
/// ```
/// use serde_json::json;
/// let a = json!({"routes": {"r": {"attempts": [{"model": "x", "timeout_ms": 1000}]}}});
/// let b = json!({"routes": {"r": {"attempts": [{"model": "x", "timeout_ms": 2000}, {"model": "y"}]}}});
/// let d = modelux::config::diff(&a, &b);
/// assert_eq!(d[0].path, "$.routes.r.attempts[0].timeout_ms");
/// assert_eq!(d[0].kind, "changed");
/// assert_eq!(d[1].path, "$.routes.r.attempts[1]");
/// assert_eq!(d[1].kind, "added");
/// ```
pub fn diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("$", a, b, &mut out);
    out
}

fn key_path(base: &str, key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{base}.{key}")
    } else {
        format!("{base}[{}]", Value::String(key.to_owned()))
    }
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = key_path(path, k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(&p, va, vb, out),
                    (Some(va), None) => out.push(Change {
                        path: p,
                        kind: "removed",
                        from: Some(va.clone()),
                        to: None,
                    }),
                    (None, Some(vb)) => out.push(Change {
                        path: p,
                        kind: "added",
                        from: None,
                        to: Some(vb.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(&p, va, vb, out),
                    (Some(va), None) => out.push(Change {
                        path: p,
                        kind: "removed",
                        from: Some(va.clone()),
                        to: None,
                    }),
                    (None, Some(vb)) => out.push(Change {
                        path: p,
                        kind: "added",
                        from: None,
                        to: Some(vb.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        _ if a == b => {}
        _ => out.push(Change {
            path: path.to_owned(),
            kind: "changed",
            from: Some(a.clone()),
            to: Some(b.clone()),
        }),
    }
}
