use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// Encodes one `data:` event. The payload must not contain newlines (JSON
/// from `serde_json` never does).
///
/// ```
/// assert_eq!(&modelux::sse::encode_data(b"{}")[..], b"data: {}\n\n");
/// ```
pub fn encode_data(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Serialises a value as JSON and encodes it as one `data:` event.
///
/// ```
/// let b = modelux::sse::encode_json(&serde_json::json!({"a": 1}));
/// assert_eq!(&b[..], b"data: {\"a\":1}\n\n");
/// ```
pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut b = BytesMut::with_capacity(256).writer();
    b.get_mut().put_slice(b"data: ");
    // Serialising our own plain data types cannot fail.
    let _ = serde_json::to_writer(&mut b, value);
    b.get_mut().put_slice(b"\n\n");
    b.into_inner().freeze()
}

/// Encodes a named event (`event:` + `data:`), as Anthropic streams use.
///
/// ```
/// let b = modelux::sse::encode_event("ping", b"{}");
/// assert_eq!(&b[..], b"event: ping\ndata: {}\n\n");
/// ```
pub fn encode_event(event: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(event.len() + payload.len() + 16);
    b.put_slice(b"event: ");
    b.put_slice(event.as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// The `data: [DONE]` sentinel that ends an OpenAI stream.
///
/// ```
/// use modelux::sse::{encode_done, SseDecoder};
/// assert_eq!(&encode_done()[..], b"data: [DONE]\n\n");
/// let mut d = SseDecoder::new();
/// d.push(&encode_done());
/// assert_eq!(d.next_event().unwrap().unwrap().data, "[DONE]");
/// ```
pub fn encode_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}
