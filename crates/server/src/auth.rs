//! Bearer tokens with scopes. Tokens come from the configuration (or the admin token `serve`
//! creates on first start); a request names one in `Authorization: Bearer <token>`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events (`POST /v1/events`).
    Ingest,
    /// Read: metrics, reports, incidents.
    Read,
    /// Everything, including administration.
    Admin,
}

impl Scope {
    /// The scope's name in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!(
                "unknown scope {s:?} (expected ingest, read or admin)"
            )),
        }
    }
}

/// A configured token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who holds it (in logs and quarantine sources; never the secret).
    pub name: String,
    /// The secret sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Whether events sent with it may carry their own `client_ip` and `user_agent` (a
    /// server-side tracker or `replay` sending on behalf of many shoppers). Without it the
    /// connection's address and user agent are recorded.
    #[serde(default)]
    pub forward: bool,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether the token grants a scope (`admin` grants all).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }
}

/// Why a request was not authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header (401).
    Missing,
    /// The token is not one we know (401).
    Unknown,
    /// The token lacks the scope (403).
    Scope(Scope),
}

/// The tokens the server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Arc<Token>>,
}

impl Tokens {
    /// From configured tokens.
    pub fn new(tokens: Vec<Token>) -> Tokens {
        Tokens {
            tokens: tokens.into_iter().map(Arc::new).collect(),
        }
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token an `Authorization` header names, if it grants `scope`.
    pub fn check(&self, header: Option<&str>, scope: Scope) -> Result<&Arc<Token>, Denied> {
        let token = self.authenticate(header)?;
        if token.allows(scope) {
            Ok(token)
        } else {
            Err(Denied::Scope(scope))
        }
    }

    /// The token an `Authorization` header names, whatever its scopes.
    pub fn authenticate(&self, header: Option<&str>) -> Result<&Arc<Token>, Denied> {
        let secret = header
            .and_then(|h| {
                let (kind, rest) = h.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|s| !s.is_empty())
            .ok_or(Denied::Missing)?;
        // Compares every token in full, so the time taken does not tell how much matched.
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(t.token.as_bytes(), secret.as_bytes()) {
                found = Some(t);
            }
        }
        found.ok_or(Denied::Unknown)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An address or a network (`10.0.0.0/8`, `::1`) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether an address is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), 32, self.prefix)
                    == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{width}"))?,
        };
        Ok(Network {
            addr: canonical(addr),
            prefix,
        })
    }
}

/// The client's address: the peer's, or — when the peer is a trusted proxy — the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Network]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            // A hop we cannot read: stop at the last address we could.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &str, scopes: &[Scope]) -> Token {
        Token {
            name: secret.to_owned(),
            token: secret.to_owned(),
            scopes: scopes.to_vec(),
            forward: false,
        }
    }

    #[test]
    fn scopes_are_enforced() {
        let tokens = Tokens::new(vec![
            token("reader", &[Scope::Read]),
            token("boss", &[Scope::Admin]),
        ]);
        assert_eq!(
            tokens.check(None, Scope::Ingest).unwrap_err(),
            Denied::Missing
        );
        assert_eq!(
            tokens.check(Some("Basic abc"), Scope::Ingest).unwrap_err(),
            Denied::Missing
        );
        assert_eq!(
            tokens
                .check(Some("Bearer nope"), Scope::Ingest)
                .unwrap_err(),
            Denied::Unknown
        );
        assert_eq!(
            tokens
                .check(Some("Bearer reader"), Scope::Ingest)
                .unwrap_err(),
            Denied::Scope(Scope::Ingest)
        );
        assert_eq!(
            tokens
                .check(Some("bearer  reader "), Scope::Read)
                .unwrap()
                .name,
            "reader"
        );
        assert_eq!(
            tokens
                .check(Some("Bearer boss"), Scope::Ingest)
                .unwrap()
                .name,
            "boss"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<Network> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not a proxy: the header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // A proxy chain: the nearest untrusted hop wins, not a spoofed first entry.
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("6.6.6.6, 1.2.3.4, 10.2.2.2"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip(ip("::1"), None, &trusted), ip("::1"));
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), Some("5.6.7.8"), &trusted),
            ip("5.6.7.8")
        );
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("banana".parse::<Network>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Network>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
    }
}
