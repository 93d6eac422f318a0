use tower::Layer;

use super::{HealthConfig, HealthRegistry, HealthScore};

/// Adds [`HealthScore`] around a routing service. Clones share one registry,
/// so health survives a rebuild of the stack (a config change).
///
/// ```
/// use modelux::health::{HealthConfig, HealthScoreLayer};
/// let layer = HealthScoreLayer::new(HealthConfig::default());
/// let registry = layer.registry();
/// # let _ = registry;
/// ```
#[derive(Clone, Debug)]
pub struct HealthScoreLayer {
    registry: HealthRegistry,
}

impl HealthScoreLayer {
    /// A layer with a new registry.
    ///
    /// ```
    /// use modelux::health::{HealthConfig, HealthScoreLayer};
    /// let layer = HealthScoreLayer::new(HealthConfig { probes: 3, ..HealthConfig::default() });
    /// assert_eq!(layer.registry().config().probes, 3);
    /// assert!(layer.registry().snapshot().is_empty());
    /// ```
    pub fn new(config: HealthConfig) -> Self {
        HealthScoreLayer {
            registry: HealthRegistry::new(config),
        }
    }

    /// A layer around an existing registry.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use modelux::provider::TargetId;
    /// # use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// use modelux::health::{HealthConfig, HealthRegistry, HealthScoreLayer};
    /// let registry = HealthRegistry::new(HealthConfig::default());
    /// # let id = TargetId::new("openai", "m");
    /// registry.on_attempt(&AttemptReport { target: &id, result: Ok(()), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole });
    /// // A stack built later sees the health recorded so far.
    /// let layer = HealthScoreLayer::from_registry(registry);
    /// assert_eq!(layer.registry().snapshot()[0].samples, 1);
    /// ```
    pub fn from_registry(registry: HealthRegistry) -> Self {
        HealthScoreLayer { registry }
    }

    /// The shared registry (for status pages and tests).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use modelux::provider::TargetId;
    /// # use modelux::route::{AttemptObserver, AttemptPhase, AttemptReport};
    /// use modelux::health::{HealthConfig, HealthScoreLayer};
    /// let layer = HealthScoreLayer::new(HealthConfig::default());
    /// # let id = TargetId::new("openai", "m");
    /// let ok = AttemptReport { target: &id, result: Ok(()), latency: Duration::ZERO, stream: false, phase: AttemptPhase::Whole };
    /// layer.clone().registry().on_attempt(&ok);
    /// // Every clone of the layer reads and writes the same registry.
    /// assert_eq!(layer.registry().snapshot().len(), 1);
    /// ```
    pub fn registry(&self) -> HealthRegistry {
        self.registry.clone()
    }
}

impl<S> Layer<S> for HealthScoreLayer {
    type Service = HealthScore<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HealthScore::new(inner, self.registry.clone())
    }
}
