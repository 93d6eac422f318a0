use tower::Layer;

use super::{LatencyConfig, LatencyRank, LatencyRegistry};

/// Adds [`LatencyRank`] around a routing service. Clones share one registry.
///
/// ```
/// use modelux::latency::{LatencyConfig, LatencyRankLayer};
/// let layer = LatencyRankLayer::new(LatencyConfig::default());
/// # let _ = layer.registry();
/// ```
#[derive(Clone, Debug)]
pub struct LatencyRankLayer {
    registry: LatencyRegistry,
}

impl LatencyRankLayer {
    /// A layer with a new registry.
    ///
    /// ```
    /// use modelux::latency::{LatencyConfig, LatencyRankLayer};
    /// let layer = LatencyRankLayer::new(LatencyConfig { min_samples: 3, ..LatencyConfig::default() });
    /// assert_eq!(layer.registry().config().min_samples, 3);
    /// assert!(layer.registry().estimate(&modelux::provider::TargetId::new("openai", "m")).is_none());
    /// ```
    pub fn new(config: LatencyConfig) -> Self {
        LatencyRankLayer {
            registry: LatencyRegistry::new(config),
        }
    }

    /// A layer around an existing registry.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use modelux::provider::TargetId;
    /// # use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// use modelux::latency::{LatencyConfig, LatencyRankLayer, LatencyRegistry};
    /// let registry = LatencyRegistry::new(LatencyConfig::default());
    /// # let id = TargetId::new("openai", "m");
    /// let latency = Duration::from_millis(120);
    /// registry.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency, stream: false, phase: AttemptPhase::Whole });
    /// // A stack built later ranks by the samples recorded so far.
    /// let layer = LatencyRankLayer::from_registry(registry);
    /// assert_eq!(layer.registry().estimate(&id).unwrap().p50, latency);
    /// ```
    pub fn from_registry(registry: LatencyRegistry) -> Self {
        LatencyRankLayer { registry }
    }

    /// The shared registry.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use modelux::provider::TargetId;
    /// # use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// use modelux::latency::{LatencyConfig, LatencyRankLayer};
    /// let layer = LatencyRankLayer::new(LatencyConfig::default());
    /// # let id = TargetId::new("openai", "m");
    /// let latency = Duration::from_millis(80);
    /// layer.clone().registry().on_attempt(&AttemptReport { target: &id, result: Ok(()), latency, stream: false, phase: AttemptPhase::Whole });
    /// // Every clone of the layer reads and writes the same registry.
    /// assert_eq!(layer.registry().estimate(&id).unwrap().samples, 1);
    /// ```
    pub fn registry(&self) -> LatencyRegistry {
        self.registry.clone()
    }
}

impl<S> Layer<S> for LatencyRankLayer {
    type Service = LatencyRank<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LatencyRank::new(inner, self.registry.clone())
    }
}
