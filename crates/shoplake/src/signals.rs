//! Shutdown on SIGINT (Ctrl-C) or SIGTERM, with the handlers installed when asked for.
//!
//! `tokio::signal::ctrl_c()` installs its handler only when first polled; a signal that comes
//! before that still has the default action and kills the process instead of stopping it
//! cleanly. [`shutdown`] installs both handlers at once, so call it before anything can send
//! a signal that should stop the command cleanly (before a banner, before listening).

use std::future::Future;

use anyhow::{Context, Result};

/// Installs the handlers now (inside a Tokio runtime) and returns what resolves on the first
/// SIGINT or SIGTERM, naming it.
#[cfg(unix)]
pub(crate) fn shutdown() -> Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

#[cfg(not(unix))]
pub(crate) fn shutdown() -> Result<impl Future<Output = &'static str>> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(e) => {
                tracing::error!("listening for Ctrl-C: {e}");
                std::future::pending().await
            }
        }
    })
}
