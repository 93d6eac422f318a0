use tower::Layer;

use super::{RetryBudget, RetryBudgetConfig};
use crate::route::SharedBudget;

/// Adds a [`RetryBudget`] around a routing service. Clones of the layer share
/// one budget, so every stack built from it draws on the same tokens.
///
/// ```
/// use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
/// let layer = RetryBudgetLayer::new(RetryBudgetConfig::default());
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RetryBudgetLayer {
    budget: SharedBudget,
    config: Option<RetryBudgetConfig>,
}

impl RetryBudgetLayer {
    /// A layer with a new budget.
    pub fn new(config: RetryBudgetConfig) -> Self {
        RetryBudgetLayer {
            budget: config.build(),
            config: Some(config),
        }
    }

    /// A layer around an existing budget (to share one budget between stacks,
    /// e.g. across config versions).
    ///
    /// ```
    /// use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
    /// let first = RetryBudgetLayer::new(RetryBudgetConfig::default());
    /// let shared = RetryBudgetLayer::from_budget(first.budget());
    /// // The settings of a budget built elsewhere are not known here.
    /// assert_eq!(shared.config(), None);
    /// ```
    pub fn from_budget(budget: SharedBudget) -> Self {
        RetryBudgetLayer {
            budget,
            config: None,
        }
    }

    /// The settings the budget was built with, when this layer built it.
    ///
    /// ```
    /// use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
    /// let layer = RetryBudgetLayer::new(RetryBudgetConfig::default());
    /// assert_eq!(layer.config(), Some(RetryBudgetConfig::default()));
    /// ```
    pub fn config(&self) -> Option<RetryBudgetConfig> {
        self.config
    }

    /// The shared budget.
    pub fn budget(&self) -> SharedBudget {
        self.budget.clone()
    }
}

impl std::fmt::Debug for RetryBudgetLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudgetLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RetryBudgetLayer {
    type Service = RetryBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryBudget::new(inner, self.budget.clone())
    }
}
