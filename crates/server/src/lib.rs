//! shoplake's server side: the HTTP collector ([`Collector`]) and the service that runs it
//! together with the event log and the delivery of the log into the lake ([`serve`]).

mod api;
pub mod auth;
mod collector;
mod detection;
mod metrics;
mod service;

pub use auth::{Network, Scope, Token, Tokens};
pub use collector::{Accepted, ApiError, Collector, Limits, OPENAPI, RejectedRow};
pub use detection::{CONSUMER as DETECTOR_CONSUMER, DetectionOptions};
pub use metrics::Metrics;
pub use service::{DeliveryOptions, ServeOptions, admin_token, serve};
