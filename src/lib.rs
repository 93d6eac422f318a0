//! # Modelux
//!
//! Composable [`tower`] layers that keep LLM traffic up when providers don't.
//!
//! Requests arrive in OpenAI's Chat Completions format ([`api`]), are routed
//! by a stack of layers, and leave through a provider adapter ([`provider`])
//! that speaks OpenAI's, Anthropic's or Gemini's wire format.
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod edge;
pub mod fallback;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod health;
pub mod latency;
#[cfg(feature = "mock")]
pub mod mock;
pub mod provider;
pub mod retry_budget;
pub mod route;
pub mod sse;
#[cfg(feature = "store")]
pub mod store;
pub mod trace;
#[cfg(feature = "store")]
pub mod traffic;

mod handles;
mod rng;
mod secret;

pub use handles::cache_metric_handles;
pub use secret::Secret;

/// The README's Rust example compiles (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
