//! The gateway's log line, as `tracing-subscriber`'s text format writes it,
//! at less cost: [`LogFields`] for the fields, [`LogTime`] for the
//! timestamp.
//!
//! Why: the gateway logs one line per request (issue 4 asks for it at the
//! default level), about fifteen fields. `DefaultFields` writes each one as
//! `write!(w, "{}{}{:?}", name, "=", value)`: three nested formatting passes
//! per field, and the default timer formats the whole date and time through
//! `core::fmt` for every line. Under callgrind the event was ≈ 15k of the
//! gateway's ≈ 117k instructions per request, ≈ 11k of it the fields and
//! ≈ 2k the timestamp. [`LogFields`] writes names, plain strings, integers
//! and booleans with `write_str`, and leaves every other value (the message,
//! `r#` names, errors, strings that need escaping, ANSI colours on a
//! terminal) to `DefaultFields` itself; [`LogTime`] formats the date and
//! time once a second. The line reads exactly as before.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormatFields;

/// A [`FormatFields`] whose output is byte for byte that of
/// [`DefaultFields`], at a fraction of its cost for strings, integers and
/// booleans (see the [module docs](self)). The gateway binary installs it
/// with `tracing_subscriber::fmt().fmt_fields(LogFields::default())`.
///
/// ```
/// use modelux::gateway::LogFields;
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Clone, Default)]
/// struct Buf(Arc<Mutex<Vec<u8>>>);
/// impl std::io::Write for Buf {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
///         self.0.lock().unwrap().extend_from_slice(b);
///         Ok(b.len())
///     }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
///
/// let buf = Buf::default();
/// let out = buf.clone();
/// let subscriber = tracing_subscriber::fmt()
///     .fmt_fields(LogFields::default())
///     .with_ansi(false)
///     .without_time()
///     .with_writer(move || buf.clone())
///     .finish();
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(route = "default", status = 200u16, ok = true, "request finished");
/// });
/// let line = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
/// assert!(line.ends_with("request finished route=\"default\" status=200 ok=true\n"), "{line}");
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            // Names in italics, `=` dimmed: the default's own business.
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut v = LineVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

/// Writes one event's (or span's) fields as `name=value`, space-separated.
struct LineVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl LineVisitor<'_> {
    /// Writes the separator and `name=`, or returns `false` for a field the
    /// default format writes its own way.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name == "message" || name.starts_with("r#") {
            return false;
        }
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        true
    }

    /// The default format's own visitor, for a value written its way (it
    /// writes every field that reaches it: `log.` fields never do).
    fn default(&mut self) -> DefaultVisitor<'_> {
        let is_empty = std::mem::replace(&mut self.is_empty, false);
        DefaultVisitor::new(self.writer.by_ref(), is_empty)
    }

    /// Runs `record` on the default visitor, keeping its result.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut v = self.default();
        record(&mut v);
        let written = tracing_subscriber::field::VisitOutput::finish(v);
        self.result = written;
    }

    fn write_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // ASCII digits only.
        let text = std::str::from_utf8(&digits[at..]).unwrap_or_default();
        self.result = self.result.and_then(|()| self.writer.write_str(text));
    }
}

/// Whether the field is one of the `log.*` fields `tracing-log` adds to a
/// `log` record: metadata the default format has already written, and
/// leaves out of the fields.
fn is_log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// Whether `{:?}` would print `s` as itself between quotes: printable ASCII
/// without `"` or `\`.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_log_metadata(field) {
            return;
        }
        if plain(value) && self.start(field) {
            self.result = self
                .result
                .and_then(|()| self.writer.write_char('"'))
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'));
        } else {
            self.by_default(|v| v.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if is_log_metadata(field) {
            return;
        }
        if self.start(field) {
            self.write_u64(value);
        } else {
            self.by_default(|v| v.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if is_log_metadata(field) {
            return;
        }
        if self.start(field) {
            if value < 0 {
                self.result = self.result.and_then(|()| self.writer.write_char('-'));
            }
            self.write_u64(value.unsigned_abs());
        } else {
            self.by_default(|v| v.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if is_log_metadata(field) {
            return;
        }
        if self.start(field) {
            let text = if value { "true" } else { "false" };
            self.result = self.result.and_then(|()| self.writer.write_str(text));
        } else {
            self.by_default(|v| v.record_bool(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if is_log_metadata(field) {
            return;
        }
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_log_metadata(field) {
            return;
        }
        if self.start(field) {
            // One formatting pass (a `%` value's Debug is its Display).
            self.result = self.result.and_then(|()| write!(self.writer, "{value:?}"));
        } else {
            self.by_default(|v| v.record_debug(field, value));
        }
    }
}

/// A [`FormatTime`] that writes what `tracing-subscriber`'s default timer
/// ([`SystemTime`](tracing_subscriber::fmt::time::SystemTime)) writes,
/// `2026-11-30T06:58:01.123456Z` (UTC, microseconds), with the part up to
/// the second formatted once a second per thread rather than for every
/// line. The gateway binary installs it with
/// `tracing_subscriber::fmt().with_timer(LogTime)`.
///
/// ```
/// use modelux::gateway::LogTime;
/// use tracing_subscriber::fmt::{format::Writer, time::FormatTime};
/// let mut line = String::new();
/// LogTime.format_time(&mut Writer::new(&mut line)).unwrap();
/// assert_eq!(line.len(), "2026-11-30T06:58:01.123456Z".len());
/// assert!(line.ends_with('Z') && line.as_bytes()[10] == b'T');
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct LogTime;

thread_local! {
    /// The second last formatted on this thread and its text up to the `.`.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => write_time(w, since),
            // A clock before 1970: the default timer knows how to say so.
            Err(_) => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Writes the time `since` the Unix epoch as the default timer does.
fn write_time(w: &mut Writer<'_>, since: std::time::Duration) -> fmt::Result {
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let mut text = crate::store::format_rfc3339_secs(secs);
            // `…T06:58:01Z` → `…T06:58:01.`
            text.pop();
            text.push('.');
            *cached = (secs, text);
        }
        w.write_str(&cached.1)
    })?;
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut n = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    w.write_str(std::str::from_utf8(&digits).unwrap_or("000000"))?;
    w.write_char('Z')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the fmt subscriber writes for `emit`, with `fields` as its field
    /// format, on a writer with or without ANSI colours.
    fn line<N>(fields: N, ansi: bool, emit: impl Fn()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(fields)
            .with_ansi(ansi)
            .without_time()
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[derive(Debug)]
    struct Wrapped(&'static str);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    #[derive(Debug)]
    struct Oops;

    impl fmt::Display for Oops {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("it broke")
        }
    }

    impl std::error::Error for Oops {}

    /// Every kind of value, on both kinds of writer, reads exactly as the
    /// default field format writes it: the request log's parsers (and
    /// people's grep patterns) must not see a difference.
    #[test]
    fn the_line_is_byte_for_byte_the_default_one() {
        type Emit = Box<dyn Fn()>;
        let events: Vec<(&str, Emit)> = vec![
            (
                "the request line's kinds",
                Box::new(|| {
                    let client: Option<&str> = None;
                    let tokens: Option<u64> = Some(17);
                    tracing::warn!(
                        target: "modelux::request",
                        request_id = %"req-1",
                        route = %Wrapped("default"),
                        config_version = 3u64,
                        client,
                        status = 502u16,
                        outcome = Some(tracing::field::display("5xx")),
                        stream_end = Some("error"),
                        served_by = "oa/gpt-4o",
                        attempts = 2usize,
                        prompt_tokens = tokens,
                        cause = Some("the provider said \"no\"\nand\tthen \u{1b}[31m"),
                        "request finished"
                    );
                }),
            ),
            (
                "numbers and booleans",
                Box::new(|| {
                    tracing::info!(
                        zero = 0u64,
                        max = u64::MAX,
                        min = i64::MIN,
                        neg = -42i64,
                        yes = true,
                        no = false,
                        float = 1.5f64,
                        big = 1u128 << 100,
                        "numbers"
                    );
                }),
            ),
            (
                "strings that need escaping, debug and errors",
                Box::new(|| {
                    let err = Oops;
                    tracing::info!(
                        quote = "a\"b",
                        backslash = "a\\b",
                        unicode = "héllo ✓",
                        empty = "",
                        debug = ?vec![1, 2],
                        error = &err as &(dyn std::error::Error + 'static),
                        r#type = "raw name",
                    );
                }),
            ),
            (
                "a message with escapes",
                Box::new(|| tracing::info!("message \u{1b}[31m with \"quotes\" {}", 7)),
            ),
            ("no fields", Box::new(|| tracing::info!(""))),
        ];
        for (what, emit) in &events {
            for ansi in [false, true] {
                let ours = line(LogFields, ansi, emit);
                let theirs = line(DefaultFields::new(), ansi, emit);
                assert!(!ours.is_empty(), "{what}: nothing written");
                assert_eq!(ours, theirs, "{what} (ansi: {ansi})");
            }
        }
    }

    #[test]
    fn the_time_reads_as_the_default_timer_s() {
        use std::time::Duration;
        for (secs, micros, expected) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (1_796_012_345, 123_456, "2026-11-30T04:19:05.123456Z"),
            (951_782_400, 999_999, "2000-02-29T00:00:00.999999Z"),
            (4_102_444_799, 1, "2099-12-31T23:59:59.000001Z"),
            // The same second again, from the cache.
            (4_102_444_799, 20, "2099-12-31T23:59:59.000020Z"),
        ] {
            let mut out = String::new();
            write_time(
                &mut Writer::new(&mut out),
                Duration::new(secs, micros * 1000 + 999),
            )
            .unwrap();
            assert_eq!(out, expected);
        }
        // Now, against the default timer read just before and just after.
        let now = |timer: &dyn FormatTime| {
            let mut out = String::new();
            timer.format_time(&mut Writer::new(&mut out)).unwrap();
            out
        };
        for _ in 0..1000 {
            let before = now(&tracing_subscriber::fmt::time::SystemTime);
            let ours = now(&LogTime);
            let after = now(&tracing_subscriber::fmt::time::SystemTime);
            assert_eq!(ours.len(), before.len(), "{ours} / {before}");
            assert!(before <= ours && ours <= after, "{before} {ours} {after}");
        }
    }

    #[test]
    fn digits_are_written_right() {
        for n in [0u64, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            let out = line(LogFields, false, || tracing::info!(n));
            assert!(out.ends_with(&format!(" n={n}\n")), "{out}");
        }
    }
}
