use std::fmt;

/// Events larger than this are refused: a provider that never sends a blank
/// line must not grow the gateway's memory without bound.
///
/// ```
/// use modelux::sse::{SseDecoder, SseError, MAX_EVENT_BYTES};
/// assert_eq!(MAX_EVENT_BYTES, 8 * 1024 * 1024);
/// let mut d = SseDecoder::new();
/// d.push(b"data: ");
/// d.push(&vec![b'x'; MAX_EVENT_BYTES]);
/// assert_eq!(d.next_event(), Err(SseError::EventTooLarge));
/// ```
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One decoded event.
///
/// ```
/// use modelux::sse::{SseDecoder, SseEvent};
/// let mut d = SseDecoder::new();
/// d.push(b"event: message_start\nid: 7\ndata: {}\n\n");
/// assert_eq!(d.next_event().unwrap().unwrap(), SseEvent {
///     event: Some("message_start".into()),
///     data: "{}".into(),
///     id: Some("7".into()),
/// });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, when present.
    pub id: Option<String>,
}

/// The stream broke the SSE framing in a way that cannot be skipped.
///
/// ```
/// use modelux::sse::{SseDecoder, SseError, MAX_EVENT_BYTES};
/// let mut d = SseDecoder::new();
/// d.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
/// let err = d.next_event().unwrap_err();
/// assert_eq!(err, SseError::EventTooLarge);
/// assert_eq!(err.to_string(), "server-sent event larger than 8388608 bytes");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event grew past [`MAX_EVENT_BYTES`].
    EventTooLarge,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge => {
                write!(f, "server-sent event larger than {MAX_EVENT_BYTES} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// An incremental `text/event-stream` decoder.
///
/// Feed it bytes as they arrive with [`push`](SseDecoder::push) and drain
/// complete events with [`next_event`](SseDecoder::next_event). Handles `\n`,
/// `\r\n` and `\r` line ends, multi-line data, comments, and events and line
/// ends split across reads.
///
/// ```
/// use modelux::sse::SseDecoder;
/// let mut d = SseDecoder::new();
/// d.push(b"event: ping\r\ndata: {\"a\":");
/// assert!(d.next_event().unwrap().is_none());
/// d.push(b"1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\n");
/// let e = d.next_event().unwrap().unwrap();
/// assert_eq!((e.event.as_deref(), e.data.as_str()), (Some("ping"), "{\"a\":1}"));
/// assert_eq!(d.next_event().unwrap().unwrap().data, "x\ny");
/// assert!(d.next_event().unwrap().is_none());
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    pos: usize,
    /// Bytes from `pos` already searched for a line end without one: a
    /// line that arrives in many small reads is scanned once, not once per
    /// read (quadratic in the line's length).
    scanned: usize,
    /// A `\r` ended the last line seen; a `\n` right after it belongs to it.
    pending_cr: bool,
    building: Building,
    event_bytes: usize,
}

/// The event being assembled from its field lines.
#[derive(Debug, Default)]
struct Building {
    current: SseEvent,
    has_fields: bool,
    data_lines: u32,
}

impl SseDecoder {
    /// A decoder with nothing buffered.
    ///
    /// ```
    /// let mut d = modelux::sse::SseDecoder::new();
    /// assert_eq!(d.next_event(), Ok(None));
    /// assert_eq!(d.finish(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the network.
    ///
    /// ```
    /// let mut d = modelux::sse::SseDecoder::new();
    /// // One event split across two reads, inside its `\r\n` line end.
    /// d.push(b"data: hi\r");
    /// d.push(b"\n\r\n");
    /// assert_eq!(d.next_event().unwrap().unwrap().data, "hi");
    /// ```
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Frees the read buffer when all of it has been decoded. A stream waits
    /// between events far longer than it reads, so a waiting stream keeps no
    /// buffer (one allocation per read instead, next to the event's own).
    pub(crate) fn release_if_consumed(&mut self) {
        if self.pos == self.buf.len() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// The next complete event, if one is buffered.
    ///
    /// ```
    /// let mut d = modelux::sse::SseDecoder::new();
    /// d.push(b"data: a\n\ndata: b");
    /// assert_eq!(d.next_event().unwrap().unwrap().data, "a");
    /// // `b` has no blank line yet, so it is not complete.
    /// assert_eq!(d.next_event(), Ok(None));
    /// ```
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if self.pending_cr && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.pending_cr = false;
            }
            let rest = &self.buf[self.pos..];
            let Some(end) = memchr::memchr2(b'\n', b'\r', &rest[self.scanned..]) else {
                self.scanned = rest.len();
                if self.event_bytes + rest.len() > MAX_EVENT_BYTES {
                    return Err(SseError::EventTooLarge);
                }
                return Ok(None);
            };
            let end = self.scanned + end;
            self.scanned = 0;
            let cr = rest[end] == b'\r';
            let line_start = self.pos;
            self.pos += end + 1;
            self.pending_cr = cr;
            self.event_bytes += end + 1;
            if self.event_bytes > MAX_EVENT_BYTES {
                return Err(SseError::EventTooLarge);
            }
            let line = &self.buf[line_start..line_start + end];
            if line.is_empty() {
                self.event_bytes = 0;
                if self.building.has_fields {
                    return Ok(Some(self.building.take_event()));
                }
                continue;
            }
            self.building.field_bytes(line);
        }
    }

    /// Flushes an event that the stream ended without a blank line for.
    /// Servers that close right after their last `data:` line are common
    /// enough that dropping it would lose the end of answers.
    ///
    /// ```
    /// let mut d = modelux::sse::SseDecoder::new();
    /// d.push(b"data: last");
    /// assert_eq!(d.next_event(), Ok(None));
    /// assert_eq!(d.finish().unwrap().data, "last");
    /// assert_eq!(d.finish(), None);
    /// ```
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.pos < self.buf.len() {
            let line = &self.buf[self.pos..];
            self.building.field_bytes(line);
            self.pos = self.buf.len();
            self.scanned = 0;
        }
        if self.building.has_fields {
            Some(self.building.take_event())
        } else {
            None
        }
    }
}

impl Building {
    /// One non-empty line: borrowed as it is when it is valid UTF-8 (the
    /// normal case), copied with replacement characters only when not.
    fn field_bytes(&mut self, line: &[u8]) {
        match std::str::from_utf8(line) {
            Ok(line) => self.field(line),
            Err(_) => self.field(&String::from_utf8_lossy(line)),
        }
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match name {
            "data" => {
                if self.data_lines > 0 {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.data_lines += 1;
                self.has_fields = true;
            }
            "event" => {
                self.current.event = Some(value.to_owned());
                self.has_fields = true;
            }
            "id" => {
                self.current.id = Some(value.to_owned());
                self.has_fields = true;
            }
            _ => {}
        }
    }

    fn take_event(&mut self) -> SseEvent {
        self.has_fields = false;
        self.data_lines = 0;
        std::mem::take(&mut self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = "event: a\r\ndata: {\"t\":\"héllo wörld ✓\"}\r\n\r\n: note\n\ndata: x\rdata: y\r\rid: 7\ndata: last\n\n".as_bytes();

    fn all(d: &mut SseDecoder) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = d.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    /// A long line arriving in small reads is searched once: each read's
    /// search starts where the last one stopped (it started over at the
    /// line's beginning, quadratic in the line's length), also across the
    /// buffer's compaction and a `\r\n` split between reads.
    #[test]
    fn a_line_in_many_reads_is_scanned_once() {
        let mut d = SseDecoder::new();
        d.push(b"data: first\n\n");
        assert_eq!(d.next_event().unwrap().unwrap().data, "first");
        let line = format!("data: {}", "x".repeat(100_000));
        for (i, piece) in line.as_bytes().chunks(7).enumerate() {
            d.push(piece);
            assert!(d.next_event().unwrap().is_none());
            assert_eq!(d.scanned, d.buf.len() - d.pos, "after read {i}");
        }
        d.push(b"\r");
        assert!(d.next_event().unwrap().is_none());
        d.push(b"\n\r\n");
        let e = d.next_event().unwrap().unwrap();
        assert_eq!(e.data.len(), 100_000);
        assert_eq!(d.scanned, 0);
        d.push(b"data: next\n\n");
        assert_eq!(d.next_event().unwrap().unwrap().data, "next");
    }

    #[test]
    fn a_consumed_buffer_is_released_and_a_partial_line_is_kept() {
        let mut d = SseDecoder::new();
        d.push(b"data: one\n\ndata: tw");
        assert_eq!(d.next_event().unwrap().unwrap().data, "one");
        assert!(d.next_event().unwrap().is_none());
        // Half a line is still buffered: kept.
        d.release_if_consumed();
        assert!(d.buf.capacity() > 0);
        d.push(b"o\n\n");
        assert_eq!(d.next_event().unwrap().unwrap().data, "two");
        assert!(d.next_event().unwrap().is_none());
        // Everything decoded: the buffer goes, and decoding goes on.
        d.release_if_consumed();
        assert_eq!(d.buf.capacity(), 0);
        d.push(b"data: three\r");
        d.release_if_consumed();
        d.push(b"\n\n");
        assert_eq!(d.next_event().unwrap().unwrap().data, "three");
        assert!(d.next_event().unwrap().is_none());
    }

    #[test]
    fn any_split_of_the_reads_decodes_the_same_events() {
        let mut whole = SseDecoder::new();
        whole.push(STREAM);
        let expected = all(&mut whole);
        assert_eq!(expected.len(), 3);
        assert_eq!(expected[0].event.as_deref(), Some("a"));
        assert_eq!(expected[0].data, "{\"t\":\"héllo wörld ✓\"}");
        assert_eq!(expected[1].data, "x\ny");
        assert_eq!(expected[2].id.as_deref(), Some("7"));
        assert_eq!(expected[2].data, "last");
        // Byte by byte: line ends and multi-byte characters split across reads.
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        for b in STREAM {
            d.push(std::slice::from_ref(b));
            got.extend(all(&mut d));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let mut d = SseDecoder::new();
        d.push(b"data: a\xffb\n\n");
        assert_eq!(all(&mut d)[0].data, "a\u{fffd}b");
        d.push(b"data: tail \xc3");
        assert_eq!(d.finish().unwrap().data, "tail \u{fffd}");
    }

    #[test]
    fn an_event_without_a_line_end_is_refused_past_the_limit() {
        let mut d = SseDecoder::new();
        d.push(b"data: ");
        d.push(&vec![b'x'; MAX_EVENT_BYTES]);
        assert_eq!(d.next_event(), Err(SseError::EventTooLarge));
    }
}
