use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};

use super::backoff::full_jitter;
use super::classify;
use crate::api::ChatRequest;
use crate::provider::{
    AttemptRequest, Chunk, ChunkStream, Completion, Failure, ProviderError, ProviderResponse,
    Target,
};
use crate::route::{
    AttemptPhase, AttemptReport, Candidate, FailedAttempt, RequestContext, Route, RouteError,
    RouteErrorKind, RouteRequest, RouteResponse,
};
use crate::trace::{ms, AttemptTrace, CandidateNote, Reason};

/// The future of [`Fallback`](super::Fallback): the whole attempt sequence up
/// to the commit point.
///
/// The sequence has many states (attempt, backoff, stream peek) and runs once
/// per request, so it is an `async` block boxed once per request; its cost is
/// measured in `benches/layers.rs`.
///
/// ```
/// # tokio_test::block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use modelux::api::{ChatCompletion, ChatRequest};
/// use modelux::fallback::{Fallback, ResponseFuture};
/// use modelux::provider::{AttemptRequest, ProviderError, ProviderResponse, Target};
/// use modelux::route::{Candidate, Route, RouteRequest};
/// use tower::{service_fn, Service, ServiceExt};
///
/// let leaf = service_fn(|_: AttemptRequest| async {
///     Ok::<_, ProviderError>(ProviderResponse::Complete(ChatCompletion::text("1", "m", "hi", "stop").into()))
/// });
/// let mut router = Fallback::new(leaf);
/// let route = Arc::new(Route::fallback("r", vec![
///     Candidate::new(Arc::new(Target::new("p", "m")), Duration::from_secs(1)),
/// ]));
/// let chat: ChatRequest = serde_json::from_str(r#"{"model":"r","messages":[]}"#).unwrap();
/// let fut: ResponseFuture = router.ready().await.unwrap().call(RouteRequest::new(chat, route));
/// let resp = fut.await.unwrap();
/// assert_eq!((resp.attempts, resp.served_by.id.to_string()), (1, "p/m".to_string()));
/// # });
/// ```
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<RouteResponse, RouteError>> + Send>>,
}

impl ResponseFuture {
    pub(super) fn new<S>(svc: S, req: RouteRequest) -> Self
    where
        S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        ResponseFuture {
            inner: Box::pin(route(svc, req)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<RouteResponse, RouteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

/// What an attempt produced when it succeeded.
pub(super) enum Committed {
    Complete(Completion),
    /// A stream, with the chunks read up to and including the first content
    /// token, and the rest.
    Stream {
        head: Vec<Chunk>,
        rest: ChunkStream,
    },
}

/// Chunks before the first content token that are held back at most; a
/// provider that sends more empty chunks than this is committed anyway.
const MAX_HEAD: usize = 32;

/// The state of one routed request, shared by the attempt sequence and, after
/// the commit, by the stream's mid-stream recovery.
pub(super) struct Run<S> {
    pub(super) svc: S,
    pub(super) chat: Arc<ChatRequest>,
    pub(super) route: Arc<Route>,
    pub(super) ctx: RequestContext,
    pub(super) deadline: Instant,
    pub(super) attempts: u32,
    pub(super) failed: Vec<FailedAttempt>,
    pub(super) retry_budget_exhausted: bool,
    /// The leaf service failed its readiness: no target was contacted, and
    /// nothing more can be tried through it.
    pub(super) leaf_failed: bool,
    /// The total budget ran out while the leaf service was not ready: no
    /// target was contacted, and the request is out of time.
    pub(super) spent_waiting: bool,
}

impl<S> Run<S> {
    /// Records a routing decision in the request's trace and emits it as a
    /// `tracing` event (`debug`, target `modelux::fallback`): an operator
    /// following one route in the log sees every retry, advance and
    /// continuation, not only the ones that end a request.
    pub(super) fn decide(&self, kind: &'static str, detail: String) {
        tracing::debug!(route = %self.route.name, kind, detail = %detail, "routing decision");
        self.ctx.trace.decision(kind, detail);
    }
}

/// What [`Run::deadline`] is for an attempt, in the trace's words (passed
/// to [`Run::attempt`] rather than kept in the run, which lives as long as
/// its stream).
#[derive(Clone, Copy)]
pub(super) enum DeadlineOf {
    /// The request's total budget.
    TotalBudget,
    /// A prefill continuation's own timeout, while it runs.
    ContinuationTimeout,
}

impl DeadlineOf {
    fn words(self) -> &'static str {
        match self {
            DeadlineOf::TotalBudget => "the total budget",
            DeadlineOf::ContinuationTimeout => "the continuation's timeout",
        }
    }
}

/// Records an attempt dropped mid-flight, with the outcome `abandoned`:
/// its client went away, or the route's `stream_max_ms` ended the recovery
/// it belonged to (the request's outcome says which). Forgotten when the
/// attempt ends (see [`Run::attempt`]). Holds only borrows: nothing to
/// free when forgotten.
struct Abandoned<'a> {
    trace: &'a crate::trace::TraceHandle,
    target: &'a Arc<Target>,
    kind: &'static str,
    started: Instant,
    timeout: Duration,
    backoff: Option<Duration>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        self.trace.attempt(AttemptTrace {
            target: self.target.id.to_string(),
            kind: self.kind,
            start_ms: self.trace.offset_ms(self.started),
            duration_ms: ms(self.started.elapsed()),
            timeout_ms: ms(self.timeout),
            outcome: "abandoned",
            status: None,
            retry_after_ms: None,
            backoff_ms: self.backoff.map(ms),
            message: Some("dropped while it ran: the request stopped waiting for it".into()),
        });
    }
}

/// Why an attempt's work ended without a commit.
enum NotCommitted {
    /// The target's failure.
    Target(ProviderError),
}

impl<S> Run<S>
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// Withdraws one retry from the shared budget, when there is one.
    pub(super) fn withdraw(&mut self, what: &str) -> bool {
        let Some(budget) = &self.ctx.retry_budget else {
            return true;
        };
        if budget.withdraw() {
            return true;
        }
        self.retry_budget_exhausted = true;
        metrics::counter!("modelux_retry_budget_exhausted_total", "route" => self.route.name.clone())
            .increment(1);
        tracing::debug!(route = %self.route.name, "retry budget empty: no {what}");
        self.decide(
            "retry_budget_exhausted",
            format!("retry budget empty: no {what}"),
        );
        false
    }

    /// The time an attempt on a target with timeout `own` gets at `now`: its
    /// own timeout, or what is left of the total budget if that is less. The
    /// flag says the earlier attempts of this request took so much of the
    /// budget that this one got materially less (under 90 %) than it would
    /// have had as the request's first attempt, `own.min(total_budget)`: a
    /// timeout then says nothing about the target.
    ///
    /// Measured against the first attempt's share, not against `own`: with
    /// `total_budget <= own` (the defaults, 30 s each) every attempt gets
    /// slightly less than `own` on a real clock, even the first, and a target
    /// that hangs must still be charged for it.
    pub(super) fn attempt_time(&self, own: Duration, now: Instant) -> (Duration, bool) {
        let left = self.deadline.saturating_duration_since(now);
        let timeout = own.min(left);
        let fair = own.min(self.route.policy.total_budget);
        (timeout, timeout < fair - fair / 10)
    }

    /// Runs one attempt under `timeout`, reads a stream up to its first
    /// content token, and reports the outcome to every observer, the trace
    /// and the metrics. `budget_cut` says the total budget made `timeout`
    /// materially shorter than the target's fair share (see
    /// [`Run::attempt_time`]).
    pub(super) async fn attempt(
        &mut self,
        target: &Arc<Target>,
        (timeout, budget_cut): (Duration, bool),
        (kind, within): (&'static str, DeadlineOf),
        prefill: Option<Arc<str>>,
        backoff: Option<Duration>,
    ) -> Result<Committed, ProviderError> {
        self.attempts += 1;
        // The leaf's readiness is waited for before the attempt's clock
        // starts, within the total budget only: a leaf that is slow to be
        // ready (a rate or concurrency limit, a buffer in front of it) says
        // nothing about the target, and charged as the target's timeout it
        // ejected a healthy fallback.
        let waited = Instant::now();
        match tokio::time::timeout_at(self.deadline, self.svc.ready()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(self.leaf_unavailable(target, classify(e.into()))),
            Err(_) => return Err(self.not_ready_in_time(target, waited.elapsed(), within)),
        }
        let started = Instant::now();
        // What the wait left of the budget, judged as `attempt_time` judges
        // the budget's cut: only a material one spares the target.
        let left = self.deadline.saturating_duration_since(started);
        let (timeout, budget_cut) = if left < timeout {
            (left, budget_cut || left < timeout - timeout / 10)
        } else {
            (timeout, budget_cut)
        };
        let req = AttemptRequest {
            target: target.clone(),
            chat: self.chat.clone(),
            prefill,
        };
        let stream = self.chat.is_stream();
        let svc = &mut self.svc;
        let work = async move {
            // Ready: `poll_ready` returned `Ready` just above.
            let resp = svc
                .call(req)
                .await
                .map_err(|e| NotCommitted::Target(classify(e.into())))?;
            match resp {
                ProviderResponse::Complete(c) => Ok(Committed::Complete(c)),
                ProviderResponse::Stream(mut s) => {
                    let mut head = Vec::new();
                    loop {
                        match s.next().await {
                            Some(Ok(chunk)) => {
                                let commit = chunk.has_content()
                                    || chunk.finish_reason().is_some()
                                    || head.len() >= MAX_HEAD;
                                head.push(chunk);
                                if commit {
                                    return Ok(Committed::Stream { head, rest: s });
                                }
                            }
                            Some(Err(e)) => return Err(NotCommitted::Target(before_commit(e))),
                            None => {
                                return Err(NotCommitted::Target(ProviderError::new(
                                    Failure::Connect,
                                    "the stream ended before any content",
                                )))
                            }
                        }
                    }
                }
            }
        };
        // Dropped while the attempt runs (its client went away, or a
        // recovery the stream's time limit ended), the guard records it, so
        // the trace shows the call the provider received (and bills)
        // instead of no attempt at all.
        let abandoned = Abandoned {
            trace: &self.ctx.trace,
            target,
            kind,
            started,
            timeout,
            backoff,
        };
        let result = tokio::time::timeout(timeout, work).await;
        std::mem::forget(abandoned);
        let result = match result {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(NotCommitted::Target(e))) => Err(e),
            Err(_) => Err(ProviderError::new(
                Failure::Timeout,
                if stream {
                    format!("no content token within {} ms", timeout.as_millis())
                } else {
                    format!("no response within {} ms", timeout.as_millis())
                },
            )),
        };
        let latency = started.elapsed();
        // A timeout that the request's total budget cut short says nothing
        // about the target: it may have had far less than its own timeout
        // (what an earlier, slow target left). Charged to its health, a
        // healthy fallback behind a hanging primary would be ejected too.
        let cut_by_budget =
            budget_cut && matches!(&result, Err(e) if e.failure == Failure::Timeout);
        if cut_by_budget {
            tracing::debug!(
                route = %self.route.name,
                target = %target.id,
                timeout_ms = timeout.as_millis() as u64,
                "attempt cut short by the total budget: not counted against the target"
            );
            self.decide(
                "budget_cut",
                format!(
                    "{} had {} ms left of the total budget and timed out: not counted against its health or latency",
                    target.id,
                    timeout.as_millis()
                ),
            );
        } else {
            // A stream that committed goes on: this is its first token, and
            // its end is reported when it comes.
            let phase = match &result {
                Ok(Committed::Stream { .. }) => AttemptPhase::FirstToken,
                _ => AttemptPhase::Whole,
            };
            self.report(target, result.as_ref().map(|_| ()), latency, stream, phase);
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.failure.class(),
        };
        let (p, m) = (&target.id.provider, &target.id.model);
        if result.is_ok() {
            target.handles.attempts_ok.with(
                &[p, m],
                || metrics::counter!("modelux_attempts_total", "provider" => p.clone(), "model" => m.clone(), "outcome" => "ok"),
                |c| c.increment(1),
            );
        } else {
            metrics::counter!(
                "modelux_attempts_total",
                "provider" => p.clone(),
                "model" => m.clone(),
                "outcome" => outcome,
            )
            .increment(1);
        }
        target.handles.attempt_duration.with(
            &[p, m],
            || metrics::histogram!("modelux_attempt_duration_seconds", "provider" => p.clone(), "model" => m.clone()),
            |h| h.record(latency.as_secs_f64()),
        );
        let err = result.as_ref().err();
        tracing::debug!(
            route = %self.route.name,
            target = %target.id,
            kind,
            outcome,
            latency_ms = latency.as_millis() as u64,
            "attempt finished"
        );
        self.ctx.trace.attempt(AttemptTrace {
            target: target.id.to_string(),
            kind,
            start_ms: self.ctx.trace.offset_ms(started),
            duration_ms: ms(latency),
            timeout_ms: ms(timeout),
            outcome,
            status: err.and_then(|e| e.status.or(e.failure.status())),
            retry_after_ms: err.and_then(|e| e.retry_after).map(ms),
            backoff_ms: backoff.map(ms),
            message: err.map(|e| truncate(&e.message, 200)),
        });
        if let Err(e) = &result {
            self.failed.push(FailedAttempt {
                target: target.id.clone(),
                error: e.clone(),
            });
        }
        result
    }

    /// Tells every observer how an attempt went.
    pub(super) fn report(
        &self,
        target: &Target,
        result: Result<(), &ProviderError>,
        latency: Duration,
        stream: bool,
        phase: AttemptPhase,
    ) {
        let report = AttemptReport {
            target: &target.id,
            result,
            latency,
            stream,
            phase,
        };
        for o in &self.ctx.observers {
            o.on_attempt(&report);
        }
    }

    /// The leaf service failed its readiness before an attempt: the target
    /// was never contacted, so nothing is reported to health or latency, no
    /// attempt is counted, and the request ends (a failed service stays
    /// failed: retrying through it would only charge more targets).
    fn leaf_unavailable(&mut self, target: &Target, e: ProviderError) -> ProviderError {
        self.leaf_failed = true;
        self.attempts = self.attempts.saturating_sub(1);
        tracing::warn!(route = %self.route.name, error = %e, "the provider service failed its readiness");
        self.decide(
            "leaf_unavailable",
            format!("the provider service failed its readiness: {e}"),
        );
        // Named by the target the attempt was for, though nothing reached it.
        self.failed.push(FailedAttempt {
            target: target.id.clone(),
            error: e.clone(),
        });
        e
    }

    /// The deadline (the total budget, or a continuation's own timeout) ran
    /// out while the leaf service was not ready for an attempt: nothing was
    /// sent and nothing is charged to the target; the request ends as out of
    /// time.
    fn not_ready_in_time(
        &mut self,
        target: &Target,
        waited: Duration,
        within: DeadlineOf,
    ) -> ProviderError {
        self.attempts = self.attempts.saturating_sub(1);
        self.spent_waiting = true;
        let within = within.words();
        tracing::debug!(route = %self.route.name, target = %target.id, waited_ms = waited.as_millis() as u64, within, "the provider service was not ready in time");
        self.decide(
            "budget_exhausted",
            format!(
                "the provider service was not ready for {} within {within} (waited {} ms): not counted against it",
                target.id,
                waited.as_millis()
            ),
        );
        ProviderError::new(
            Failure::Timeout,
            format!("the provider service was not ready before {within} ran out"),
        )
    }

    /// The error for a request none of whose attempts succeeded.
    pub(super) fn give_up(&mut self, out_of_time: bool) -> RouteError {
        let kind = if self.failed.is_empty() && !out_of_time {
            RouteErrorKind::NoCandidates
        } else if out_of_time || Instant::now() >= self.deadline {
            metrics::counter!("modelux_budget_exhausted_total", "route" => self.route.name.clone())
                .increment(1);
            RouteErrorKind::BudgetExhausted
        } else if self
            .failed
            .iter()
            .all(|a| a.error.failure == Failure::RateLimited)
        {
            RouteErrorKind::RateLimited {
                retry_after: self.failed.iter().filter_map(|a| a.error.retry_after).min(),
            }
        } else if let Some(first) = self
            .failed
            .iter()
            .all(|a| !a.error.failure.counts_against_target())
            .then(|| self.failed.first())
            .flatten()
        {
            // Every target refused the request itself (a prompt too long
            // for each of them, say): the client's to fix, with the first
            // target's status and reason (400 `context_length_exceeded`),
            // not a 502 that reads as an outage.
            RouteErrorKind::Rejected(first.error.clone())
        } else {
            RouteErrorKind::AllFailed
        };
        RouteError {
            kind,
            attempts: std::mem::take(&mut self.failed),
            retry_budget_exhausted: self.retry_budget_exhausted,
        }
    }
}

/// Before the commit point a cut stream is a connection failure like any
/// other: nothing reached the client, so it fails over under `connect`.
fn before_commit(mut e: ProviderError) -> ProviderError {
    if e.failure == Failure::StreamCut {
        e.failure = Failure::Connect;
    }
    e
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The attempt sequence: candidates in order, same-target retries with
/// backoff, fallbacks, all under the total budget and the retry budget.
async fn route<S>(svc: S, req: RouteRequest) -> Result<RouteResponse, RouteError>
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let RouteRequest {
        chat,
        route,
        candidates,
        ctx,
    } = req;
    let policy = route.policy.clone();
    let mut run = Run {
        svc,
        chat,
        deadline: crate::route::later(Instant::now(), policy.total_budget),
        route,
        ctx,
        attempts: 0,
        failed: Vec::new(),
        retry_budget_exhausted: false,
        leaf_failed: false,
        spent_waiting: false,
    };
    let mut out_of_time = false;
    run.ctx.trace.with_notes(|notes, t| {
        if notes.is_empty() && t.candidates.is_empty() {
            notes.extend(
                candidates
                    .iter()
                    .map(|c| CandidateNote::new(&c.target.id, Reason::ConfigOrder)),
            );
        }
    });

    let choices = run.chat.params.n.unwrap_or(1);
    let mut skipped = 0usize;
    'candidates: for (index, cand) in candidates.iter().enumerate() {
        if choices > 1 && !cand.target.multiple_choices {
            // It would answer with one choice where the client asked for
            // several: another target may give them all.
            run.decide(
                "skip",
                format!(
                    "{} returns one choice; the request asks for {choices}",
                    cand.target.id
                ),
            );
            skipped += 1;
            continue;
        }
        let mut retries = 0u32;
        let mut backoff = None;
        if run.attempts > 0 && Instant::now() < run.deadline {
            if !run.withdraw("fallback") {
                break;
            }
            metrics::counter!("modelux_fallbacks_total", "route" => run.route.name.clone())
                .increment(1);
            let last = run.failed.last().map(|a| a.error.failure.to_string());
            tracing::debug!(route = %run.route.name, to = %cand.target.id, "falling back");
            run.decide(
                "fallback",
                format!(
                    "to {} after {}",
                    cand.target.id,
                    last.as_deref().unwrap_or("failure")
                ),
            );
        }
        loop {
            let now = Instant::now();
            if now >= run.deadline {
                out_of_time = true;
                run.decide(
                    "budget_exhausted",
                    format!(
                        "total budget of {} ms spent; {} not tried",
                        policy.total_budget.as_millis(),
                        cand.target.id
                    ),
                );
                break 'candidates;
            }
            let (timeout, budget_cut) = run.attempt_time(cand.timeout, now);
            let kind = match (run.attempts, retries) {
                (0, _) => "first",
                (_, 0) => "fallback",
                _ => "retry",
            };
            match run
                .attempt(
                    &cand.target,
                    (timeout, budget_cut),
                    (kind, DeadlineOf::TotalBudget),
                    None,
                    backoff,
                )
                .await
            {
                Ok(committed) => {
                    return Ok(commit(
                        run,
                        committed,
                        cand,
                        candidates[index + 1..].to_vec(),
                    ));
                }
                Err(_) if run.leaf_failed => break 'candidates,
                Err(_) if run.spent_waiting => {
                    out_of_time = true;
                    break 'candidates;
                }
                Err(e) => {
                    if !policy.retry_on.matches(&e) {
                        // On a fallback, the request is the one the client
                        // sent to a target that failed for its own reasons:
                        // a 4xx here may be this target's (its translation,
                        // its limits) rather than the client's, so the next
                        // candidate still gets its chance. `give_up` answers
                        // with the rejection if every target refused it.
                        let failed_over = run.failed[..run.failed.len().saturating_sub(1)]
                            .iter()
                            .any(|a| a.error.failure.counts_against_target());
                        if failed_over
                            && !e.failure.counts_against_target()
                            && index + 1 < candidates.len()
                        {
                            run.decide(
                                "advance",
                                format!(
                                    "{} from {} after an earlier target failed: trying the next",
                                    e.failure, cand.target.id
                                ),
                            );
                            break;
                        }
                        tracing::debug!(route = %run.route.name, failure = %e.failure, "not retryable: returned to the client");
                        run.decide(
                            "reject",
                            format!("{} is not retried; returned to the client", e.failure),
                        );
                        let attempts = std::mem::take(&mut run.failed);
                        return Err(RouteError {
                            kind: RouteErrorKind::Rejected(e),
                            attempts,
                            retry_budget_exhausted: run.retry_budget_exhausted,
                        });
                    }
                    if !e.failure.is_retryable_on_same_target()
                        || retries >= policy.same_target_retries
                    {
                        break;
                    }
                    let wait = match e.retry_after {
                        Some(ra) if ra > policy.retry_after_cap => {
                            run.decide(
                                "advance",
                                format!(
                                    "retry-after {} ms is over the cap of {} ms",
                                    ra.as_millis(),
                                    policy.retry_after_cap.as_millis()
                                ),
                            );
                            break;
                        }
                        Some(ra) => ra,
                        None => full_jitter(policy.backoff_base, policy.backoff_max, retries),
                    };
                    if crate::route::later(Instant::now(), wait) >= run.deadline {
                        run.decide(
                            "advance",
                            format!("a wait of {} ms does not fit the budget", wait.as_millis()),
                        );
                        break;
                    }
                    if !run.withdraw("same-target retry") {
                        break 'candidates;
                    }
                    metrics::counter!("modelux_retries_total", "route" => run.route.name.clone())
                        .increment(1);
                    run.decide(
                        "retry",
                        format!(
                            "{} again after {} ms ({})",
                            cand.target.id,
                            wait.as_millis(),
                            if e.retry_after.is_some() {
                                "retry-after"
                            } else {
                                "backoff"
                            }
                        ),
                    );
                    tokio::time::sleep(wait).await;
                    retries += 1;
                    backoff = Some(wait);
                }
            }
        }
    }
    if skipped == candidates.len() && skipped > 0 {
        let e = ProviderError::new(
            Failure::Client { status: 400 },
            format!(
                "'n' is {choices}, but no target of this route returns more than one choice \
                 (Anthropic models return one): ask for one, or use a route with OpenAI or Gemini models"
            ),
        );
        run.decide("reject", "no target can return several choices".into());
        return Err(RouteError {
            kind: RouteErrorKind::Rejected(e),
            attempts: Vec::new(),
            retry_budget_exhausted: false,
        });
    }
    let err = run.give_up(out_of_time);
    tracing::debug!(route = %run.route.name, error = %err, "request failed");
    Err(err)
}

/// Builds the response for a committed attempt.
fn commit<S>(
    run: Run<S>,
    committed: Committed,
    cand: &Candidate,
    rest: Vec<Candidate>,
) -> RouteResponse
where
    S: Service<AttemptRequest, Response = ProviderResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let attempts = run.attempts;
    let at = run.ctx.trace.elapsed_ms();
    run.ctx.trace.with(|t| t.committed_at_ms = Some(at));
    run.decide("commit", format!("answer from {}", cand.target.id));
    let body =
        match committed {
            Committed::Complete(c) => ProviderResponse::Complete(c),
            Committed::Stream { head, rest: s } => ProviderResponse::Stream(
                super::stream::committed(run, cand.target.clone(), head, s, rest),
            ),
        };
    RouteResponse {
        body,
        served_by: cand.target.clone(),
        attempts,
    }
}
