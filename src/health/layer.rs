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
    pub fn new(config: HealthConfig) -> Self {
        HealthScoreLayer {
            registry: HealthRegistry::new(config),
        }
    }

    /// A layer around an existing registry.
    pub fn from_registry(registry: HealthRegistry) -> Self {
        HealthScoreLayer { registry }
    }

    /// The shared registry (for status pages and tests).
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
