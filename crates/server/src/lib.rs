//! shoplake's server side: the HTTP collector ([`Collector`]) and the service that runs it
//! together with the event log, the delivery of the log into the lake, the detector and its
//! notifications ([`serve`], [`notify`]).
//!
//! The HTTP app: [`Collector`] is its state (`collector.rs`), [`ApiError`] its one error
//! answer (`error.rs`), `router.rs` its routes, `caller.rs` the scope check every handler
//! takes as an extractor; the handlers are `ingest.rs` (`POST /v1/events`), `api.rs` (alerts
//! and lists), `lake_api.rs` (reports, SQL, catalog, the live stream) and `dashboard.rs`.

mod api;
pub mod auth;
mod backlog;
mod caller;
mod checkpoint;
mod collector;
mod config;
mod dashboard;
mod delivery;
mod detection;
mod detector;
mod error;
mod http;
mod ingest;
pub mod lake_api;
pub mod live;
mod metrics;
pub mod notify;
mod priority;
mod roles;
mod router;
mod service;
mod spread;

pub use auth::{Network, Scope, Token, Tokens};
pub use backlog::Backlog;
pub use collector::{Collector, Limits};
pub use config::{DEFAULT_LISTEN, DeliveryConfig, ServerConfig, ServerSettings};
pub use delivery::DeliveryOptions;
pub use detection::{CONSUMER as DETECTOR_CONSUMER, DetectionOptions, bot_flags_of};
pub use error::{ApiError, Error, RejectedRow, Result};
pub use http::HttpLimits;
pub use ingest::Accepted;
pub use metrics::Metrics;
pub use priority::QUERY_NICE;
pub use roles::{Process, Roles};
pub use router::OPENAPI;
pub use service::{ServeOptions, admin_token, serve};
