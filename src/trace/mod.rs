//! Per-request decision traces.
//!
//! When a request fails over three times at 2 am, the on-call engineer needs
//! to know what the router saw and decided without grepping logs: which
//! candidates it had and why they were ordered so, every attempt with its
//! outcome, every retry, backoff and budget decision, where the response was
//! committed and how its stream ended. The [`TraceHandle`] collects that as
//! the layers decide; the [`TraceLayer`] gives each request one, keeps
//! finished traces in a bounded [`TraceStore`], emits one structured
//! `tracing` event per request (target `modelux::request`; `info` when the
//! request succeeded, `warn` when it did not) and records the
//! request-level metrics (requests, duration, time to first token, tokens,
//! cost, active streams).
//!
//! A trace never holds prompt or completion text, and never a key: only
//! names, timings, statuses and the providers' error messages (truncated).

mod layer;
mod record;
mod store;

pub use layer::{new_request_id, TraceLayer, TraceSink, TraceSinkFn, Traced, TracedFuture};
pub(crate) use record::{ms, push_small, CandidateNote, Finished, Reason};
pub use record::{
    AttemptTrace, CandidateTrace, Decision, Outcome, Trace, TraceHandle, MAX_ENTRIES,
};
pub use store::TraceStore;
