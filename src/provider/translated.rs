//! The chunk stream of an adapter that translates its provider's events into
//! OpenAI chunks (Anthropic, Gemini).
//!
//! One such stream lives as long as each open stream, so it is written out
//! rather than as an `async_stream` generator, which keeps a slot for every
//! local of every state: what is left per stream is the event stream, the
//! translator's own state and the chunks of one event until they are read.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::{Chunk, ProviderError};
use crate::api::ChatChunk;
use crate::sse::SseEvent;

/// Turns one provider's stream events into OpenAI chunks.
pub(super) trait Translate {
    /// Reads one event; the chunks it makes go onto `out`. `Ok(true)` ends
    /// the stream (the answer is complete); an `Err` is the stream's last
    /// item, after the chunks already on `out`.
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<ChatChunk>) -> Result<bool, ProviderError>;

    /// The events ended: cleanly (`cut` is `None`) or with the connection's
    /// failure. The chunks that close the answer go onto `out`; an `Err`
    /// is the stream's last item.
    fn on_end(
        &mut self,
        cut: Option<ProviderError>,
        out: &mut Vec<ChatChunk>,
    ) -> Result<(), ProviderError>;
}

pin_project_lite::pin_project! {
    /// A provider's events, translated chunk by chunk as they arrive.
    pub(super) struct Translated<E, T> {
        #[pin]
        events: E,
        translator: T,
        // The chunks of the last event not yet read, last first; reused
        // from event to event, released while the stream waits.
        ready: Vec<ChatChunk>,
        // After them: nothing more (`Ok`), or this failure.
        end: Option<Result<(), ProviderError>>,
    }
}

impl<E, T> Translated<E, T> {
    pub(super) fn new(events: E, translator: T) -> Self {
        Translated {
            events,
            translator,
            ready: Vec::new(),
            end: None,
        }
    }
}

impl<E, T> Stream for Translated<E, T>
where
    E: Stream<Item = Result<SseEvent, ProviderError>>,
    T: Translate,
{
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(c) = this.ready.pop() {
                return Poll::Ready(Some(Ok(Chunk::from(c))));
            }
            match this.end.take() {
                Some(Ok(())) => {
                    *this.end = Some(Ok(()));
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    *this.end = Some(Ok(()));
                    return Poll::Ready(Some(Err(e)));
                }
                None => {}
            }
            // `ready` is empty here: the next event's chunks go into it.
            let out = &mut *this.ready;
            let end = match this.events.as_mut().poll_next(cx) {
                Poll::Pending => {
                    // Waiting: no buffer is kept while the stream is idle.
                    if out.capacity() > 0 {
                        *out = Vec::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(ev))) => match this.translator.on_event(ev, out) {
                    Ok(false) => None,
                    Ok(true) => Some(Ok(())),
                    Err(e) => Some(Err(e)),
                },
                Poll::Ready(Some(Err(e))) => Some(this.translator.on_end(Some(e), out)),
                Poll::Ready(None) => Some(this.translator.on_end(None, out)),
            };
            out.reverse();
            *this.end = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Failure;
    use futures_util::StreamExt;

    /// Each event's data is a count: that many chunks, ids `data.0`,
    /// `data.1`, …; `stop` ends the answer; the end of the events is a cut
    /// unless `stop` was seen.
    struct Counting {
        stopped: bool,
    }

    impl Translate for Counting {
        fn on_event(
            &mut self,
            ev: SseEvent,
            out: &mut Vec<ChatChunk>,
        ) -> Result<bool, ProviderError> {
            if ev.data == "stop" {
                self.stopped = true;
                return Ok(true);
            }
            let n: usize = ev
                .data
                .parse()
                .map_err(|_| ProviderError::new(Failure::Malformed, "nan"))?;
            out.extend((0..n).map(|i| ChatChunk::empty(&format!("{}.{i}", ev.data), "m", 0)));
            Ok(false)
        }

        fn on_end(
            &mut self,
            cut: Option<ProviderError>,
            _: &mut Vec<ChatChunk>,
        ) -> Result<(), ProviderError> {
            match cut {
                Some(e) => Err(e),
                None if self.stopped => Ok(()),
                None => Err(ProviderError::new(Failure::StreamCut, "no stop")),
            }
        }
    }

    fn event(data: &str) -> Result<SseEvent, ProviderError> {
        Ok(SseEvent {
            data: data.into(),
            ..SseEvent::default()
        })
    }

    async fn ids(events: Vec<Result<SseEvent, ProviderError>>) -> Vec<String> {
        let s = Translated::new(
            futures_util::stream::iter(events),
            Counting { stopped: false },
        );
        s.map(|r| match r {
            Ok(c) => c.id().unwrap_or_default().into_owned(),
            Err(e) => format!("error: {}", e.failure),
        })
        .collect()
        .await
    }

    #[tokio::test]
    async fn chunks_come_in_order_and_a_failure_comes_last() {
        assert_eq!(
            ids(vec![
                event("2"),
                event("0"),
                event("3"),
                event("stop"),
                event("9")
            ])
            .await,
            ["2.0", "2.1", "3.0", "3.1", "3.2"],
        );
        let cut = ids(vec![event("2"), event("1")]).await;
        assert_eq!(cut.len(), 4);
        assert_eq!(cut[..3], ["2.0", "2.1", "1.0"]);
        assert!(cut[3].starts_with("error: "), "{cut:?}");
        let bad = ids(vec![event("1"), event("x"), event("1")]).await;
        assert_eq!(bad.len(), 2);
        assert!(bad[1].starts_with("error: "), "{bad:?}");
    }
}
