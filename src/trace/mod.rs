//! Per-request decision traces.
//!
//! When a request fails over three times at 2 am, the on-call engineer needs
//! to know what the router saw and decided without grepping logs: which
//! candidates it had and why they were ordered so, every attempt with its
//! outcome, every retry, backoff and budget decision, where the response was
//! committed and how its stream ended. The [`TraceHandle`] collects that as
//! the layers decide; the `TraceLayer` gives each request one, stores finished
//! traces in a bounded ring and emits one structured `tracing` event per
//! request.

mod record;

pub use record::{
    AttemptTrace, CandidateTrace, Decision, Outcome, Trace, TraceHandle, MAX_ENTRIES,
};
#[allow(unused_imports)]
pub(crate) use record::ms;
