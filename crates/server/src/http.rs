//! The HTTP/1 server under the router: accepts connections within a global and a per-address
//! limit, gives each client a bounded time to send its request head (which also bounds how
//! long a kept-alive connection may sit idle), bounds the head's size, and on shutdown closes
//! idle connections at once and the rest after a grace period, so a slow or stuck client can
//! neither starve the others nor hold the process open.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::auth::canonical;
use crate::metrics::Metrics;

/// The HTTP server's connection limits.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// The time a client has to send a request's line and headers; a kept-alive connection
    /// with no new request within it is closed.
    pub header_read_timeout: Duration,
    /// The most connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// The most connections open at once from one client address (the peer's, before any
    /// `X-Forwarded-For`: behind a proxy, raise it or rely on the proxy's own limits). An
    /// IPv6 client counts by its /64, the block one host or site is usually given.
    pub max_connections_per_ip: usize,
    /// The largest request head (request line and headers), in bytes (at least 8 KiB).
    pub max_header_bytes: usize,
    /// How long shutdown waits for requests in flight before closing their connections.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 256,
            max_header_bytes: 64 << 10,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The smallest head buffer hyper accepts.
const MIN_HEADER_BYTES: usize = 8 << 10;

/// Open connections, in all and per client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// The address a connection counts under: an IPv4 address as it is (also when mapped into
/// IPv6), an IPv6 address by its /64 (a host given a /64 could otherwise open the per-address
/// limit from each of its 2^64 addresses).
fn client_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

/// A connection's place under the limits, given back when it closes.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn take(
        open: &Arc<Mutex<Open>>,
        ip: IpAddr,
        limits: &HttpLimits,
        metrics: &Arc<Metrics>,
    ) -> Option<Slot> {
        let ip = client_block(ip);
        let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = o.by_ip.get(&ip).copied().unwrap_or(0);
        if o.total >= limits.max_connections || mine >= limits.max_connections_per_ip {
            return None;
        }
        o.total += 1;
        o.by_ip.insert(ip, mine + 1);
        metrics.connections_open.inc();
        Some(Slot {
            open: open.clone(),
            ip,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.by_ip.remove(&self.ip);
            }
        }
        self.metrics.connections_open.dec();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish within [`HttpLimits::shutdown_grace`] and closes what is left.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    let open = Arc::new(Mutex::new(Open::default()));
    let (close_tx, close_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: give the closes time to land.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = Slot::take(&open, canonical(peer.ip()), &limits, &metrics) else {
                    metrics.connections_refused.inc();
                    drop(stream);
                    continue;
                };
                connections.spawn(connection(
                    stream,
                    peer,
                    app.clone(),
                    builder.clone(),
                    close_rx.clone(),
                    slot,
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace = ?limits.shutdown_grace,
            "closing connections still busy after the shutdown grace"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Serves one connection until the client closes it, it breaks a limit, or shutdown.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builder: http1::Builder,
    mut close: watch::Receiver<bool>,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(request).await }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = close.wait_for(|c| *c), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connections_count_by_ipv4_address_and_ipv6_block() {
        let block = |s: &str| client_block(s.parse().unwrap()).to_string();
        assert_eq!(block("203.0.113.7"), "203.0.113.7");
        assert_eq!(block("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(block("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(block("2001:db8:1:2::1"), block("2001:db8:1:2:ffff::9"));
        assert_ne!(block("2001:db8:1:2::1"), block("2001:db8:1:3::1"));
        assert_eq!(block("::1"), "::");
    }

    #[test]
    fn a_slot_per_block_up_to_the_limit() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = HttpLimits {
            max_connections_per_ip: 2,
            ..HttpLimits::default()
        };
        let metrics = Arc::new(Metrics::default());
        let take = |s: &str| Slot::take(&open, s.parse().unwrap(), &limits, &metrics);
        let a = take("2001:db8::1").unwrap();
        let _b = take("2001:db8::2").unwrap();
        assert!(take("2001:db8::3").is_none(), "the /64 is at its limit");
        assert!(take("2001:db8:0:1::1").is_some(), "another /64");
        drop(a);
        assert!(
            take("2001:db8::4").is_some(),
            "a closed connection gives its slot back"
        );
    }
}
