//! The stored form of a traffic record: a JSON array of its fields in a
//! fixed order, not an object.
//!
//! Why: encoding the record is most of what recording costs a request once
//! the rows are paged (docs/performance.md), and most of that was writing
//! and escaping the 25 field names of every record. Positional arrays keep
//! the log readable with any JSON tool (and SQLite's `json_extract`), are
//! about half the size, and take about half the instructions to write.
//!
//! Records stored as objects (schema 3, carried into pages by the schema 4
//! migration) still decode: each element of a page is read as an array or
//! as an object, whichever it is.
//!
//! The order, which must never change (append new fields at the end, with
//! a default when absent):
//!
//! `[at_ms, request_id, config_version, route, client, stream,
//!   prompt_tokens, completion_tokens, tokens_estimated, max_tokens,
//!   attempts, outcome, status, latency_ms, ttft_ms, served_by, cost_usd]`
//!
//! and each attempt is `[provider, model, start_ms, duration_ms, ttft_ms,
//! outcome, status, retry_after_ms]`; absent options are `null`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::record::{AttemptsView, RecordView};
use super::{AttemptRecord, TrafficRecord};
use crate::trace::Trace;

/// A traffic record in its stored form, ready to be appended: what the
/// [`TrafficRecorder`](super::TrafficRecorder) queues. A finished request
/// is encoded straight from its trace, on the request's task, into one
/// allocation; the background writer only concatenates.
///
/// ```
/// use modelux::traffic::{AttemptRecord, EncodedRecord, TrafficRecord};
/// let r = TrafficRecord {
///     at_ms: 1_700_000_000_000, request_id: "r1".into(), config_version: 3,
///     route: "default".into(), client: None, stream: false,
///     prompt_tokens: 12, completion_tokens: 40, tokens_estimated: false, max_tokens: Some(64),
///     attempts: vec![AttemptRecord::ok("oa", "gpt", 0, 180)],
///     outcome: "ok".into(), status: 200, latency_ms: 182, ttft_ms: None,
///     served_by: Some("oa/gpt".into()), cost_usd: None,
/// };
/// let e = EncodedRecord::new(&r);
/// assert_eq!(e.at_ms(), 1_700_000_000_000);
/// assert!(e.as_json().starts_with(r#"[1700000000000,"r1",3,"default",null,false,12,40,"#));
/// assert_eq!(e.decode().unwrap(), r);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    at_ms: u64,
    json: String,
}

impl EncodedRecord {
    /// Encodes an owned record.
    ///
    /// ```
    /// use modelux::trace::Trace;
    /// use modelux::traffic::{EncodedRecord, TrafficRecord};
    /// let mut r = TrafficRecord::from_trace(&Trace { request_id: "r".into(), ..Trace::default() });
    /// r.route = "cheap".into();
    /// let e = EncodedRecord::new(&r);
    /// assert_eq!(e.decode().unwrap().route, "cheap");
    /// ```
    pub fn new(record: &TrafficRecord) -> Self {
        Self::of(RecordView::of_record(record))
    }

    /// Encodes the record of a finished trace (the same record as
    /// [`TrafficRecord::from_trace`], without building it).
    ///
    /// ```
    /// use modelux::trace::Trace;
    /// use modelux::traffic::{EncodedRecord, TrafficRecord};
    /// let t = Trace { request_id: "r".into(), started_at_unix_ms: 5, ..Trace::default() };
    /// assert_eq!(EncodedRecord::from_trace(&t).decode().unwrap(), TrafficRecord::from_trace(&t));
    /// ```
    pub fn from_trace(trace: &Trace) -> Self {
        Self::of(RecordView::of_trace(trace))
    }

    fn of(view: RecordView<'_>) -> Self {
        // Serialising a view cannot fail (no maps, no non-string keys). One
        // allocation of a typical record's size, not a growing buffer (a
        // record with one attempt is ≈ 200 bytes).
        let mut buf = Vec::with_capacity(RECORD_CAPACITY);
        let json = match serde_json::to_writer(&mut buf, &Compact(view)) {
            // serde_json writes UTF-8 only.
            Ok(()) => String::from_utf8(buf).unwrap_or_else(|_| "[]".to_owned()),
            Err(_) => "[]".to_owned(),
        };
        EncodedRecord {
            at_ms: view.at_ms,
            json,
        }
    }

    /// When the request started, Unix ms.
    ///
    /// ```
    /// use modelux::{trace::Trace, traffic::EncodedRecord};
    /// let t = Trace { started_at_unix_ms: 1_700_000_000_000, ..Trace::default() };
    /// assert_eq!(EncodedRecord::from_trace(&t).at_ms(), 1_700_000_000_000);
    /// ```
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// The stored form: a JSON array (see the module docs of `traffic::codec`).
    ///
    /// ```
    /// use modelux::{trace::Trace, traffic::EncodedRecord};
    /// let t = Trace { request_id: "r1".into(), route: "default".into(), started_at_unix_ms: 5, ..Trace::default() };
    /// let e = EncodedRecord::from_trace(&t);
    /// // Fields by position: at_ms, request_id, config_version, route, client, ...
    /// assert!(e.as_json().starts_with(r#"[5,"r1",0,"default",null,"#));
    /// let v: serde_json::Value = serde_json::from_str(e.as_json()).unwrap();
    /// assert_eq!(v.as_array().unwrap().len(), 17);
    /// ```
    pub fn as_json(&self) -> &str {
        &self.json
    }

    /// The record back.
    ///
    /// ```
    /// use modelux::{trace::Trace, traffic::EncodedRecord};
    /// let t = Trace { request_id: "r1".into(), stream: true, max_tokens: Some(64), ..Trace::default() };
    /// let r = EncodedRecord::from_trace(&t).decode().unwrap();
    /// assert_eq!((r.request_id.as_str(), r.stream, r.max_tokens), ("r1", true, Some(64)));
    /// ```
    pub fn decode(&self) -> Result<TrafficRecord, serde_json::Error> {
        serde_json::from_str::<Stored>(&self.json).map(|s| s.0)
    }
}

/// A page of encoded records as stored: `[[…],[…],…]`.
pub(crate) fn encode_page(records: &[&EncodedRecord]) -> String {
    let len = records.iter().map(|r| r.json.len() + 1).sum::<usize>() + 1;
    let mut out = String::with_capacity(len);
    out.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.json);
    }
    out.push(']');
    out
}

/// The records of a stored page, whichever form each one is in.
pub(crate) fn decode_page(json: &str) -> Result<Vec<TrafficRecord>, serde_json::Error> {
    let stored: Vec<Stored> = serde_json::from_str(json)?;
    Ok(stored.into_iter().map(|s| s.0).collect())
}

/// The buffer an encoded record starts with.
const RECORD_CAPACITY: usize = 384;

struct Compact<'a>(RecordView<'a>);

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.0;
        let mut seq = s.serialize_seq(Some(17))?;
        seq.serialize_element(&r.at_ms)?;
        seq.serialize_element(r.request_id)?;
        seq.serialize_element(&r.config_version)?;
        seq.serialize_element(r.route)?;
        seq.serialize_element(&r.client)?;
        seq.serialize_element(&r.stream)?;
        seq.serialize_element(&r.prompt_tokens)?;
        seq.serialize_element(&r.completion_tokens)?;
        seq.serialize_element(&r.tokens_estimated)?;
        seq.serialize_element(&r.max_tokens)?;
        seq.serialize_element(&Attempts(r.attempts))?;
        seq.serialize_element(r.outcome)?;
        seq.serialize_element(&r.status)?;
        seq.serialize_element(&r.latency_ms)?;
        seq.serialize_element(&r.ttft_ms)?;
        seq.serialize_element(&r.served_by)?;
        seq.serialize_element(&r.cost_usd)?;
        seq.end()
    }
}

struct Attempts<'a>(AttemptsView<'a>);

impl Serialize for Attempts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| {
            (
                a.provider,
                a.model,
                a.start_ms,
                a.duration_ms,
                a.ttft_ms,
                a.outcome,
                a.status,
                a.retry_after_ms,
            )
        }))
    }
}

/// One element of a page, decoded from either form.
struct Stored(TrafficRecord);

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StoredVisitor)
    }
}

struct StoredVisitor;

type AttemptTuple = (
    String,
    String,
    u64,
    u64,
    Option<u64>,
    String,
    Option<u16>,
    Option<u64>,
);

/// The next element of a compact record, or an error naming the field.
fn field<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    name: &'static str,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::custom(format_args!("a traffic record lacks `{name}`")))
}

impl<'de> Visitor<'de> for StoredVisitor {
    type Value = Stored;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a traffic record (an array or an object)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stored, A::Error> {
        let at_ms = field(&mut seq, "at_ms")?;
        let request_id = field(&mut seq, "request_id")?;
        let config_version = field(&mut seq, "config_version")?;
        let route = field(&mut seq, "route")?;
        let client = field(&mut seq, "client")?;
        let stream = field(&mut seq, "stream")?;
        let prompt_tokens = field(&mut seq, "prompt_tokens")?;
        let completion_tokens = field(&mut seq, "completion_tokens")?;
        let tokens_estimated = field(&mut seq, "tokens_estimated")?;
        let max_tokens = field(&mut seq, "max_tokens")?;
        let attempts: Vec<AttemptTuple> = field(&mut seq, "attempts")?;
        let outcome = field(&mut seq, "outcome")?;
        let status = field(&mut seq, "status")?;
        let latency_ms = field(&mut seq, "latency_ms")?;
        let ttft_ms = field(&mut seq, "ttft_ms")?;
        let served_by = field(&mut seq, "served_by")?;
        let cost_usd = field(&mut seq, "cost_usd")?;
        // Fields a later build appended are skipped.
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Stored(TrafficRecord {
            at_ms,
            request_id,
            config_version,
            route,
            client,
            stream,
            prompt_tokens,
            completion_tokens,
            tokens_estimated,
            max_tokens,
            attempts: attempts
                .into_iter()
                .map(
                    |(provider, model, start_ms, duration_ms, ttft_ms, outcome, status, retry)| {
                        AttemptRecord {
                            provider,
                            model,
                            start_ms,
                            duration_ms,
                            ttft_ms,
                            outcome,
                            status,
                            retry_after_ms: retry,
                        }
                    },
                )
                .collect(),
            outcome,
            status,
            latency_ms,
            ttft_ms,
            served_by,
            cost_usd,
        }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Stored, A::Error> {
        TrafficRecord::deserialize(de::value::MapAccessDeserializer::new(map)).map(Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(records: &[&TrafficRecord]) -> String {
        let encoded: Vec<EncodedRecord> = records.iter().map(|r| EncodedRecord::new(r)).collect();
        encode_page(&encoded.iter().collect::<Vec<_>>())
    }

    fn full() -> TrafficRecord {
        let mut failed = AttemptRecord::failed("oa", "pri\"mary", 0, 30, "429", Some(429));
        failed.retry_after_ms = Some(1500);
        let mut ok = AttemptRecord::ok("an", "fallback", 30, 70);
        ok.ttft_ms = Some(55);
        TrafficRecord {
            at_ms: 1_700_000_000_123,
            request_id: "req-é-1".into(),
            config_version: 7,
            route: "default".into(),
            client: Some("team-a".into()),
            stream: true,
            prompt_tokens: 120,
            completion_tokens: 40,
            tokens_estimated: false,
            max_tokens: Some(256),
            attempts: vec![failed, ok],
            outcome: "ok".into(),
            status: 200,
            latency_ms: 101,
            ttft_ms: Some(85),
            served_by: Some("an/fallback".into()),
            cost_usd: Some(0.000125),
        }
    }

    fn bare() -> TrafficRecord {
        TrafficRecord {
            client: None,
            max_tokens: None,
            attempts: Vec::new(),
            ttft_ms: None,
            served_by: None,
            cost_usd: None,
            stream: false,
            tokens_estimated: true,
            outcome: "5xx".into(),
            status: 502,
            ..full()
        }
    }

    #[test]
    fn records_round_trip_as_arrays() {
        let (a, b) = (full(), bare());
        let json = page(&[&a, &b]);
        assert!(json.starts_with("[[1700000000123,\"req-é-1\",7,"), "{json}");
        assert!(!json.contains("request_id"), "{json}");
        assert!(
            json.contains(r#"[["oa","pri\"mary",0,30,null,"429",429,1500],["an","fallback",30,70,55,"ok",null,null]]"#),
            "{json}"
        );
        assert_eq!(decode_page(&json).unwrap(), [a.clone(), b]);
        // Half the size of the object form, or less.
        let object = serde_json::to_string(&a).unwrap();
        assert!(page(&[&a]).len() * 2 <= object.len() + 2, "{json}");
    }

    #[test]
    fn objects_from_schema_3_still_decode() {
        let (a, b) = (full(), bare());
        let mixed = format!(
            "[{},{}]",
            serde_json::to_string(&a).unwrap(),
            EncodedRecord::new(&b).as_json()
        );
        assert_eq!(decode_page(&mixed).unwrap(), [a, b]);
    }

    #[test]
    fn a_short_or_longer_array_is_handled() {
        let json = page(&[&full()]);
        // A later build appended a field: it is skipped.
        let longer = format!("{},\"new\"]]", &json[..json.len() - 2]);
        assert_eq!(decode_page(&longer).unwrap(), [full()]);
        let err = decode_page("[[1,\"r\",3]]").unwrap_err().to_string();
        assert!(err.contains("lacks `route`"), "{err}");
    }
}
