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
    pub fn new(config: LatencyConfig) -> Self {
        LatencyRankLayer {
            registry: LatencyRegistry::new(config),
        }
    }

    /// A layer around an existing registry.
    pub fn from_registry(registry: LatencyRegistry) -> Self {
        LatencyRankLayer { registry }
    }

    /// The shared registry.
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
