//! A committed stream and its mid-stream recovery.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::future::{Committed, Run};
use crate::api::ChatChunk;
use crate::provider::{
    AttemptRequest, ChunkStream, Failure, ProviderError, ProviderResponse, Target,
};
use crate::route::{Candidate, Continuation};

/// Wraps the stream of a committed attempt: forwards each chunk as it
/// arrives, bounds every wait by the route's `stream_idle_timeout`, and on a
/// mid-stream failure continues on the next prefill-capable candidate, so the
/// client sees one uninterrupted answer. When nothing can continue, the
/// stream ends with the original failure as its last item.
pub(super) fn committed<S>(
    mut run: Run<S>,
    target: Arc<Target>,
    head: Vec<ChatChunk>,
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
        let id = head.first().map(|c| c.id.clone()).unwrap_or_default();
        let mut pending: VecDeque<ChatChunk> = head.into();
        let mut current = rest;
        let mut current_target = target;
        let mut remaining = remaining.into_iter();
        let mut delivered = String::new();
        let mut tool_calls = false;
        let mut continued = false;
        let mut last_data = Instant::now();
        loop {
            let item = match pending.pop_front() {
                Some(c) => Some(Ok(c)),
                None => match tokio::time::timeout(idle, current.next()).await {
                    Ok(item) => item,
                    Err(_) => Some(Err(ProviderError::new(
                        Failure::StreamStall,
                        format!("no data for {} ms", idle.as_millis()),
                    ))),
                },
            };
            match item {
                None => return,
                Some(Ok(mut chunk)) => {
                    last_data = Instant::now();
                    if continued {
                        // One answer: the continuation's chunks carry the
                        // first attempt's id and no second role.
                        chunk.id.clone_from(&id);
                        for c in &mut chunk.choices {
                            c.delta.role = None;
                        }
                    }
                    for c in &chunk.choices {
                        if let Some(t) = &c.delta.content {
                            delivered.push_str(t);
                        }
                        if c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                            tool_calls = true;
                        }
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
                            metrics::counter!("modelux_continuations_total", "route" => run.route.name.clone(), "outcome" => "succeeded").increment(1);
                            current_target = t;
                            pending = head.into();
                            current = rest;
                            continued = true;
                        }
                        None => {
                            metrics::counter!("modelux_continuations_total", "route" => run.route.name.clone(), "outcome" => "failed").increment(1);
                            yield Err(e);
                            return;
                        }
                    }
                }
            }
        }
    })
}

/// After the commit a connection failure is a cut stream.
fn after_commit(mut e: ProviderError) -> ProviderError {
    if e.failure == Failure::Connect {
        e.failure = Failure::StreamCut;
    }
    e
}

/// Finds a candidate that can continue the delivered text and starts it.
async fn continue_on<S>(
    run: &mut Run<S>,
    remaining: &mut impl Iterator<Item = Candidate>,
    delivered: &str,
    tool_calls: bool,
) -> Option<(Arc<Target>, Vec<ChatChunk>, ChunkStream)>
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    if !run
        .route
        .policy
        .continuation
        .contains(&Continuation::Prefill)
    {
        run.ctx.trace.decision(
            "continuation",
            "the route allows no prefill continuation".into(),
        );
        return None;
    }
    if run.chat.params.n.unwrap_or(1) > 1 {
        run.ctx.trace.decision(
            "continuation",
            "the request asked for several choices; a prefill cannot continue them".into(),
        );
        return None;
    }
    if tool_calls {
        run.ctx.trace.decision(
            "continuation",
            "tool calls were already streamed; a prefill cannot continue them".into(),
        );
        return None;
    }
    let prefill: Arc<str> = Arc::from(delivered);
    for cand in remaining.by_ref() {
        if !cand.target.prefill {
            run.ctx.trace.decision(
                "continuation",
                format!(
                    "{} skipped: its model does not accept a prefill",
                    cand.target.id
                ),
            );
            continue;
        }
        if !run.withdraw("continuation") {
            return None;
        }
        run.ctx.trace.decision(
            "continuation",
            format!(
                "continuing on {} from {} delivered characters",
                cand.target.id,
                delivered.chars().count()
            ),
        );
        match run
            .attempt(
                &cand.target,
                cand.timeout,
                "continuation",
                Some(prefill.clone()),
                None,
            )
            .await
        {
            Ok(Committed::Stream { head, rest }) => return Some((cand.target.clone(), head, rest)),
            Ok(Committed::Complete(_)) => {
                run.ctx.trace.decision(
                    "continuation",
                    format!("{} answered without a stream", cand.target.id),
                );
            }
            Err(_) => {}
        }
    }
    run.ctx.trace.decision(
        "continuation",
        "no candidate left that can continue the stream".into(),
    );
    None
}
