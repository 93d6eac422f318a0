//! The traffic log and counterfactual dry-runs (feature `store`).
//!
//! Every finished request becomes a [`TrafficRecord`]: route, client,
//! stream flag, token counts (estimated when the provider gave none, and
//! marked so), `max_tokens`, and each attempt's target, timings, outcome
//! class, status and `Retry-After`. No prompt or completion text, no key.
//! A [`TrafficRecorder`] receives records from the
//! [`TraceLayer`](crate::trace::TraceLayer)'s finish hook through a bounded
//! queue and appends them to the [config store](crate::store) in batches.
//!
//! [`dry_run`] replays recorded traffic through the real routing layers for
//! a baseline and a candidate config, on a virtual clock, and reports what
//! each would have done. See `docs/dry-run.md`.

pub(crate) mod codec;
mod record;
mod recorder;
mod render;
mod replay;
mod window;

pub use codec::EncodedRecord;
pub use record::{AttemptRecord, TrafficRecord};
pub use recorder::{TrafficRecorder, FLUSH_INTERVAL, MAX_BATCH, PRUNE_INTERVAL};
pub use render::{Verdict, VerdictKind};
pub use replay::{
    dry_run, BucketFigures, Calibration, Coverage, Diff, DryRunError, DryRunOptions,
    LatencyHistogram, Outcomes, RateFlag, ReplayProgress, Report, RouteOutcomes, SampleReport,
    Series, SeriesPoint, Unobserved, UnobservedTarget, Window,
};
pub use window::{load_window, LoadOptions, LoadProgress, LoadedWindow, SampleInfo};
