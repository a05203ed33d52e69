//! shoplake's server side: the HTTP collector ([`Collector`]) and the service that runs it
//! together with the event log, the delivery of the log into the lake, the detector and its
//! notifications ([`serve`], [`notify`]).

mod api;
pub mod auth;
mod collector;
mod dashboard;
mod detection;
mod http;
pub mod lake_api;
mod metrics;
pub mod notify;
mod priority;
mod service;

pub use auth::{Network, Scope, Token, Tokens};
pub use collector::{Accepted, ApiError, Collector, Limits, OPENAPI, RejectedRow};
pub use detection::{CONSUMER as DETECTOR_CONSUMER, DetectionOptions, bot_flags_of};
pub use http::HttpLimits;
pub use metrics::Metrics;
pub use service::{DeliveryOptions, ServeOptions, admin_token, serve};
