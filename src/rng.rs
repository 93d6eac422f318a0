//! The randomness the layers use (backoff jitter, latency exploration), with
//! a per-thread seeded override so a replay on a dedicated thread is
//! reproducible.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's layer randomness drawn from `seed`.
#[cfg_attr(not(feature = "store"), allow(dead_code))]
pub(crate) fn seeded<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SEEDED.with(|s| *s.borrow_mut() = None);
        }
    }
    SEEDED.with(|s| *s.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
    let _reset = Reset;
    f()
}

/// A uniform value in `0..=max`.
pub(crate) fn up_to(max: u64) -> u64 {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(r) => r.random_range(0..=max),
        None => rand::rng().random_range(0..=max),
    })
}

/// `true` with probability `p` (clamped to 0..=1).
pub(crate) fn chance(p: f64) -> bool {
    let p = p.clamp(0.0, 1.0);
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(r) => r.random_bool(p),
        None => rand::rng().random_bool(p),
    })
}
