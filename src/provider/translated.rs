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
        // The chunks of the last event, not yet read.
        ready: std::vec::IntoIter<ChatChunk>,
        // After them: nothing more (`Ok`), or this failure.
        end: Option<Result<(), ProviderError>>,
    }
}

impl<E, T> Translated<E, T> {
    pub(super) fn new(events: E, translator: T) -> Self {
        Translated {
            events,
            translator,
            ready: Vec::new().into_iter(),
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
            if let Some(c) = this.ready.next() {
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
            let mut out = Vec::new();
            let end = match this.events.as_mut().poll_next(cx) {
                Poll::Pending => {
                    // Waiting: the last event's buffer is not kept.
                    *this.ready = Vec::new().into_iter();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(ev))) => match this.translator.on_event(ev, &mut out) {
                    Ok(false) => None,
                    Ok(true) => Some(Ok(())),
                    Err(e) => Some(Err(e)),
                },
                Poll::Ready(Some(Err(e))) => Some(this.translator.on_end(Some(e), &mut out)),
                Poll::Ready(None) => Some(this.translator.on_end(None, &mut out)),
            };
            *this.ready = out.into_iter();
            *this.end = end;
        }
    }
}
