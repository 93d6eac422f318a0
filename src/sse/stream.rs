use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use futures_util::Stream;
use http_body::Body;
use pin_project_lite::pin_project;

use super::{SseDecoder, SseError, SseEvent};

/// The error of an [`SseStream`]: the body failed, or the framing did.
///
/// ```
/// # tokio_test::block_on(async {
/// use bytes::Bytes;
/// use futures_util::{stream, StreamExt};
/// use http_body::Frame;
/// use http_body_util::StreamBody;
/// use modelux::sse::{SseStream, SseStreamError};
/// // A body cut off in the middle of its second event.
/// let body = StreamBody::new(stream::iter([
///     Ok(Frame::data(Bytes::from_static(b"data: 1\n\ndata: 2"))),
///     Err(std::io::Error::other("connection reset")),
/// ]));
/// let mut events = SseStream::new(body);
/// assert_eq!(events.next().await.unwrap().unwrap().data, "1");
/// match events.next().await.unwrap() {
///     Err(SseStreamError::Body(e)) => assert_eq!(e.to_string(), "connection reset"),
///     other => panic!("{other:?}"),
/// }
/// // The half-received event is not delivered.
/// assert!(events.next().await.is_none());
/// # });
/// ```
#[derive(Debug)]
pub enum SseStreamError<E> {
    /// Reading the body failed (connection reset, ...).
    Body(E),
    /// The framing broke (see [`SseError`]).
    Framing(SseError),
}

pin_project! {
    /// Turns an HTTP body into a stream of [`SseEvent`]s, yielding each event
    /// as soon as its last byte arrives.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use futures_util::StreamExt;
    /// use http_body_util::Full;
    /// let body = Full::new(bytes::Bytes::from_static(b"data: 1\n\ndata: 2"));
    /// let events: Vec<_> = modelux::sse::SseStream::new(body).collect().await;
    /// assert_eq!(events.len(), 2);
    /// # });
    /// ```
    pub struct SseStream<B> {
        #[pin]
        body: B,
        decoder: SseDecoder,
        done: bool,
    }
}

impl<B> SseStream<B> {
    /// Wraps a body.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use futures_util::StreamExt;
    /// use http_body_util::Full;
    /// let body = Full::new(bytes::Bytes::from_static(b"event: ping\ndata: {}\n\n"));
    /// let mut events = modelux::sse::SseStream::new(body);
    /// let first = events.next().await.unwrap().unwrap();
    /// assert_eq!((first.event.as_deref(), first.data.as_str()), (Some("ping"), "{}"));
    /// assert!(events.next().await.is_none());
    /// # });
    /// ```
    pub fn new(body: B) -> Self {
        SseStream {
            body,
            decoder: SseDecoder::new(),
            done: false,
        }
    }
}

impl<B> Stream for SseStream<B>
where
    B: Body,
{
    type Item = Result<SseEvent, SseStreamError<B::Error>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match this.decoder.next_event() {
                Ok(Some(ev)) => return Poll::Ready(Some(Ok(ev))),
                Ok(None) => {}
                Err(e) => {
                    *this.done = true;
                    *this.decoder = SseDecoder::new();
                    return Poll::Ready(Some(Err(SseStreamError::Framing(e))));
                }
            }
            if *this.done {
                return Poll::Ready(this.decoder.finish().map(Ok));
            }
            let frame = match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    this.decoder.release_if_consumed();
                    return Poll::Pending;
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            this.decoder.push(chunk);
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => {
                    // A cut body must not flush a half-received event.
                    *this.done = true;
                    *this.decoder = SseDecoder::new();
                    return Poll::Ready(Some(Err(SseStreamError::Body(e))));
                }
                None => *this.done = true,
            }
        }
    }
}
