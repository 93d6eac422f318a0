//! A string that never prints.

use std::fmt;
use std::sync::Arc;

/// A provider key or token. `Debug` and `Display` print `***`, so a secret
/// that ends up in a log line, a trace or an error message by accident shows
/// nothing.
///
/// ```
/// use modelux::Secret;
/// let s = Secret::new("sk-live-123");
/// assert_eq!(format!("{s:?} {s}"), "*** ***");
/// assert_eq!(s.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    ///
    /// ```
    /// use modelux::Secret;
    /// let from_env = Secret::new(String::from("sk-a"));
    /// assert_eq!(from_env, Secret::new("sk-a"));
    /// assert_eq!(from_env.to_string(), "***");
    /// ```
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    ///
    /// ```
    /// let key = modelux::Secret::new("sk-live-123");
    /// let header = format!("Bearer {}", key.expose());
    /// assert_eq!(header, "Bearer sk-live-123");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
