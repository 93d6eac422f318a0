//! A committed stream and its mid-stream recovery.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::future::{Committed, Run};
use crate::provider::{
    AttemptRequest, Chunk, ChunkStream, Failure, ProviderError, ProviderResponse, Target,
};
use crate::route::{Candidate, Continuation};

/// Wraps the stream of a committed attempt: forwards each chunk as it
/// arrives, bounds every wait by the route's `stream_idle_timeout`, and on a
/// mid-stream failure continues on the next prefill-capable candidate, so the
/// client sees one uninterrupted answer. When nothing can continue, the
/// stream ends with the original failure as its last item.
///
/// Chunks pass through untouched (an OpenAI-kind provider's keep its bytes)
/// until a continuation: its chunks are rewritten to carry the first
/// attempt's id and no second role.
pub(super) fn committed<S>(
    mut run: Run<S>,
    target: Arc<Target>,
    head: Vec<Chunk>,
    rest: ChunkStream,
    remaining: Vec<Candidate>,
) -> ChunkStream
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    Box::pin(async_stream::stream! {
        let idle = run.route.policy.stream_idle_timeout;
        let mut id = FirstId::new(head.first());
        let mut pending: VecDeque<Chunk> = head.into();
        let mut current = rest;
        let mut current_target = target;
        let mut remaining = remaining.into_iter();
        let mut delivered = String::new();
        let mut tool_calls = false;
        let mut continued = false;
        let mut last_data = Instant::now();
        // One idle timer for the whole stream, re-armed for each wait that
        // does not complete at once (a `timeout` per chunk would register
        // and cancel a timer entry every time).
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        loop {
            let item = match pending.pop_front() {
                Some(c) => Some(Ok(c)),
                None => {
                    let mut armed = false;
                    std::future::poll_fn(|cx| {
                        if let Poll::Ready(item) = current.poll_next_unpin(cx) {
                            return Poll::Ready(item);
                        }
                        if !armed {
                            // The wait started with this first poll. (An idle
                            // timeout too large for an `Instant` keeps the far
                            // deadline `sleep` gave the timer.)
                            if let Some(at) = Instant::now().checked_add(idle) {
                                idle_timer.as_mut().reset(at);
                            }
                            armed = true;
                        }
                        idle_timer.as_mut().poll(cx).map(|()| {
                            Some(Err(ProviderError::new(
                                Failure::StreamStall,
                                format!("no data for {} ms", idle.as_millis()),
                            )))
                        })
                    })
                    .await
                }
            };
            match item {
                None => return,
                Some(Ok(mut chunk)) => {
                    last_data = Instant::now();
                    if continued {
                        // One answer: the continuation's chunks carry the
                        // first attempt's id and no second role.
                        let id = id.get();
                        match chunk.make_mut() {
                            Ok(c) => {
                                c.id.clear();
                                c.id.push_str(id);
                                for ch in &mut c.choices {
                                    ch.delta.role = None;
                                }
                            }
                            // Its text matters more than its id: sent as is.
                            Err(e) => tracing::debug!(error = %e, "a continuation chunk could not be rewritten"),
                        }
                    }
                    delivered.push_str(&chunk.text());
                    if chunk.has_tool_calls() {
                        tool_calls = true;
                    }
                    yield Ok(chunk);
                }
                Some(Err(e)) => {
                    let e = after_commit(e);
                    run.report(&current_target, Err(&e), last_data.elapsed(), true);
                    metrics::counter!(
                        "modelux_attempts_total",
                        "provider" => current_target.id.provider.clone(),
                        "model" => current_target.id.model.clone(),
                        "outcome" => e.failure.class(),
                    )
                    .increment(1);
                    tracing::debug!(route = %run.route.name, target = %current_target.id, failure = %e.failure, "stream failed after commit");
                    run.ctx.trace.decision(
                        "stream_failed",
                        format!(
                            "{} failed after {} characters: {}",
                            current_target.id,
                            delivered.chars().count(),
                            e
                        ),
                    );
                    match continue_on(&mut run, &mut remaining, &delivered, tool_calls).await {
                        Some((t, head, rest)) => {
                            current_target = t;
                            pending = head.into();
                            current = rest;
                            continued = true;
                        }
                        None => {
                            yield Err(e);
                            return;
                        }
                    }
                }
            }
        }
    })
}

/// The first attempt's id, which a continuation's chunks carry. A parsed
/// chunk's id is copied at once (as cheap as keeping the chunk); a chunk that
/// kept the provider's bytes is kept, and its id read only if a continuation
/// happens.
enum FirstId {
    Known(String),
    Later(Option<Chunk>),
}

impl FirstId {
    fn new(first: Option<&Chunk>) -> Self {
        match first {
            Some(c) if c.json().is_some() => FirstId::Later(Some(c.clone())),
            c => FirstId::Known(
                c.and_then(Chunk::id)
                    .map(|i| i.into_owned())
                    .unwrap_or_default(),
            ),
        }
    }

    fn get(&mut self) -> &str {
        if let FirstId::Later(c) = self {
            let id = c.take().and_then(|c| c.id().map(|i| i.into_owned()));
            *self = FirstId::Known(id.unwrap_or_default());
        }
        match self {
            FirstId::Known(id) => id,
            FirstId::Later(_) => "",
        }
    }
}

/// After the commit a connection failure is a cut stream.
fn after_commit(mut e: ProviderError) -> ProviderError {
    if e.failure == Failure::Connect {
        e.failure = Failure::StreamCut;
    }
    e
}

/// What one recovery attempt came to.
enum Recovery {
    /// The answer goes on from here.
    Continued(Arc<Target>, Vec<Chunk>, ChunkStream),
    /// Try the next strategy on the same candidate.
    NextStrategy,
    /// Try the next candidate.
    NextCandidate,
    /// Stop recovering: end the stream with the original failure.
    GiveUp,
}

fn count(run_route: &Arc<str>, strategy: &'static str, outcome: &'static str) {
    metrics::counter!(
        "modelux_continuations_total",
        "route" => run_route.clone(),
        "strategy" => strategy,
        "outcome" => outcome,
    )
    .increment(1);
}

/// Walks the remaining candidates and, for each, the route's recovery
/// strategies in order, until one continues the answer.
async fn continue_on<S>(
    run: &mut Run<S>,
    remaining: &mut impl Iterator<Item = Candidate>,
    delivered: &str,
    tool_calls: bool,
) -> Option<(Arc<Target>, Vec<Chunk>, ChunkStream)>
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let strategies = run.route.policy.continuation.clone();
    if strategies.is_empty() {
        run.ctx.trace.decision(
            "continuation",
            "the route allows no mid-stream recovery".into(),
        );
        return None;
    }
    if run.chat.params.n.unwrap_or(1) > 1 {
        run.ctx.trace.decision(
            "continuation",
            "the request asked for several choices; they cannot be continued".into(),
        );
        return None;
    }
    if tool_calls {
        run.ctx.trace.decision(
            "continuation",
            "tool calls were already streamed; recovery covers text answers only".into(),
        );
        return None;
    }
    for cand in remaining.by_ref() {
        for strategy in &strategies {
            let r = match strategy {
                Continuation::Prefill => prefill(run, &cand, delivered).await,
                Continuation::Regenerate => regenerate(run, &cand, delivered).await,
            };
            match r {
                Recovery::Continued(t, head, rest) => return Some((t, head, rest)),
                Recovery::NextStrategy => continue,
                Recovery::NextCandidate => break,
                Recovery::GiveUp => return None,
            }
        }
    }
    run.ctx.trace.decision(
        "continuation",
        "no candidate left that can continue the stream".into(),
    );
    None
}

/// `prefill`: the delivered text goes as a trailing assistant message to a
/// model that continues it.
async fn prefill<S>(run: &mut Run<S>, cand: &Candidate, delivered: &str) -> Recovery
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    if !cand.target.prefill {
        run.ctx.trace.decision(
            "continuation",
            format!(
                "prefill: {} skipped, its model does not accept a prefill",
                cand.target.id
            ),
        );
        return Recovery::NextStrategy;
    }
    if !run.withdraw("continuation") {
        return Recovery::GiveUp;
    }
    run.ctx.trace.decision(
        "continuation",
        format!(
            "prefill: continuing on {} from {} delivered characters",
            cand.target.id,
            delivered.chars().count()
        ),
    );
    let prefill: Arc<str> = Arc::from(delivered);
    match run
        .attempt(
            &cand.target,
            cand.timeout,
            "continuation",
            Some(prefill),
            None,
        )
        .await
    {
        Ok(Committed::Stream { head, rest }) => {
            count(&run.route.name, "prefill", "succeeded");
            Recovery::Continued(cand.target.clone(), head, rest)
        }
        Ok(Committed::Complete(_)) => {
            run.ctx.trace.decision(
                "continuation",
                format!("prefill: {} answered without a stream", cand.target.id),
            );
            count(&run.route.name, "prefill", "failed");
            Recovery::NextCandidate
        }
        Err(e) if e.failure == Failure::PrefillUnsupported => {
            run.ctx.trace.decision(
                "continuation",
                format!(
                    "prefill: {} rejected the prefill; trying the next strategy",
                    cand.target.id
                ),
            );
            count(&run.route.name, "prefill", "rejected");
            Recovery::NextStrategy
        }
        Err(_) => {
            count(&run.route.name, "prefill", "failed");
            Recovery::NextCandidate
        }
    }
}

/// `regenerate`: the original request goes unchanged to the candidate; its
/// output is held back until it has produced as much text as the client
/// already has. If it starts with exactly that text, only the remainder is
/// streamed; at the first differing byte the attempt is dropped and the
/// stream ends with the original failure.
async fn regenerate<S>(run: &mut Run<S>, cand: &Candidate, delivered: &str) -> Recovery
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let policy = run.route.policy.clone();
    let chars = delivered.chars().count();
    if chars > policy.regenerate_max_chars {
        run.ctx.trace.decision(
            "continuation",
            format!(
                "regenerate: not attempted, {chars} delivered characters are over regenerate_max_chars ({})",
                policy.regenerate_max_chars
            ),
        );
        return Recovery::GiveUp;
    }
    let now = Instant::now();
    if now >= run.deadline {
        run.ctx.trace.decision(
            "continuation",
            "regenerate: not attempted, the total budget is spent".into(),
        );
        return Recovery::GiveUp;
    }
    if !run.withdraw("continuation") {
        return Recovery::GiveUp;
    }
    run.ctx.trace.decision(
        "continuation",
        format!(
            "regenerate: re-sending the request to {} to reproduce {chars} delivered characters",
            cand.target.id
        ),
    );
    let timeout = cand.timeout.min(run.deadline - now);
    let (head, mut rest) = match run
        .attempt(&cand.target, timeout, "regenerate", None, None)
        .await
    {
        Ok(Committed::Stream { head, rest }) => (head, rest),
        Ok(Committed::Complete(_)) => {
            count(&run.route.name, "regenerate", "failed");
            return Recovery::NextCandidate;
        }
        Err(_) => {
            count(&run.route.name, "regenerate", "failed");
            return Recovery::NextCandidate;
        }
    };
    let want = delivered.as_bytes();
    let mut matched = 0usize;
    let mut pending: VecDeque<Chunk> = head.into();
    let idle = policy.stream_idle_timeout;
    loop {
        let chunk = match pending.pop_front() {
            Some(c) => c,
            None => {
                let wait = idle.min(run.deadline.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(wait, rest.next()).await {
                    Ok(Some(Ok(c))) => c,
                    Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                        run.ctx.trace.decision(
                            "continuation",
                            format!(
                                "regenerate: {} stopped before reproducing the delivered text ({matched} of {} bytes)",
                                cand.target.id,
                                want.len()
                            ),
                        );
                        count(&run.route.name, "regenerate", "failed");
                        return Recovery::GiveUp;
                    }
                }
            }
        };
        if chunk.has_tool_calls() {
            run.ctx.trace.decision(
                "continuation",
                format!(
                    "regenerate: {} diverged (a tool call where text was delivered)",
                    cand.target.id
                ),
            );
            count(&run.route.name, "regenerate", "diverged");
            return Recovery::GiveUp;
        }
        let text = chunk.text().into_owned();
        let bytes = text.as_bytes();
        let n = bytes.len().min(want.len() - matched);
        if bytes[..n] != want[matched..matched + n] {
            let at = matched
                + bytes[..n]
                    .iter()
                    .zip(&want[matched..])
                    .take_while(|(a, b)| a == b)
                    .count();
            run.ctx.trace.decision(
                "continuation",
                format!(
                    "regenerate: {} diverged at byte {at} of {} delivered",
                    cand.target.id,
                    want.len()
                ),
            );
            count(&run.route.name, "regenerate", "diverged");
            return Recovery::GiveUp;
        }
        matched += n;
        if matched < want.len() {
            if chunk.finish_reason().is_some() {
                run.ctx.trace.decision(
                    "continuation",
                    format!(
                        "regenerate: {} diverged (its answer ended first)",
                        cand.target.id
                    ),
                );
                count(&run.route.name, "regenerate", "diverged");
                return Recovery::GiveUp;
            }
            continue;
        }
        // Spliced: send what follows the delivered text.
        let remainder = &text[n..];
        let mut first = chunk;
        match first.make_mut() {
            Ok(c) => {
                for c in &mut c.choices {
                    c.delta.content = if remainder.is_empty() {
                        None
                    } else {
                        Some(remainder.to_owned())
                    };
                }
            }
            Err(e) => {
                // Sending it whole would repeat delivered text.
                run.ctx.trace.decision(
                    "continuation",
                    format!(
                        "regenerate: {} sent a chunk that could not be spliced: {e}",
                        cand.target.id
                    ),
                );
                count(&run.route.name, "regenerate", "failed");
                return Recovery::GiveUp;
            }
        }
        let discarded = text.len() - remainder.len();
        run.ctx.trace.decision(
            "continuation",
            format!(
                "regenerate: spliced after {} delivered characters; discarded {} regenerated bytes ({} in the last chunk)",
                chars,
                want.len(),
                discarded
            ),
        );
        count(&run.route.name, "regenerate", "succeeded");
        let mut out = vec![first];
        out.extend(pending);
        return Recovery::Continued(cand.target.clone(), out, rest);
    }
}
