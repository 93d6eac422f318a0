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
    ///
    /// ```
    /// use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
    /// use tower::retry::budget::Budget;
    /// let layer = RetryBudgetLayer::new(RetryBudgetConfig::default());
    /// // The default floor: 10 retries a second, over the 10 s remembered.
    /// let budget = layer.budget();
    /// assert_eq!((0..1000).take_while(|_| budget.withdraw()).count(), 100);
    /// // A clone of the layer draws on the same, now empty, budget.
    /// assert!(!layer.clone().budget().withdraw());
    /// ```
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
    ///
    /// ```
    /// use modelux::retry_budget::{RetryBudgetConfig, RetryBudgetLayer};
    /// use tower::retry::budget::Budget;
    /// let layer = RetryBudgetLayer::new(RetryBudgetConfig { min_per_sec: 0, ..Default::default() });
    /// let next_version = RetryBudgetLayer::from_budget(layer.budget());
    /// for _ in 0..5 {
    ///     layer.budget().deposit(); // five requests earn one retry (20 %)
    /// }
    /// assert!(next_version.budget().withdraw());
    /// assert!(!layer.budget().withdraw());
    /// ```
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
