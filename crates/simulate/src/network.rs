//! Client addresses and user agents: stable per organic user (a hash of the user), scripted or
//! data-centre ones for attackers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rng::{hash, unit};

/// First octets of consumer ISP ranges in the store's region (UTC+3).
const CONSUMER_V4: [u8; 24] = [
    5, 31, 37, 46, 62, 77, 78, 79, 80, 81, 83, 85, 87, 88, 89, 91, 92, 93, 94, 95, 109, 176, 178,
    188,
];
/// First octets of hosting providers, where bots tend to live.
const HOSTING_V4: [u8; 8] = [34, 35, 45, 104, 138, 159, 167, 185];

/// Browser user agents organic shoppers send, most common first.
pub const BROWSERS: [&str; 12] = [
    "Mozilla/5.0 (Linux; Android 10; SM-A505FN) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.116 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.120 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 13_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.90 Safari/537.36 YaBrowser/19.10.0.1522",
    "Mozilla/5.0 (Linux; Android 9; Redmi Note 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.92 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:69.0) Gecko/20100101 Firefox/69.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 8.1.0; Redmi 5 Plus) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/76.0.3809.132 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.18362",
    "Mozilla/5.0 (iPad; CPU OS 13_1_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:69.0) Gecko/20100101 Firefox/69.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/77.0.3865.90 Safari/537.36 OPR/64.0.3417.54",
];

/// User agents of scripts and crawlers.
pub const SCRIPTED: [&str; 6] = [
    "python-requests/2.22.0",
    "curl/7.66.0",
    "Go-http-client/1.1",
    "Scrapy/1.7.3 (+https://scrapy.org)",
    "okhttp/3.14.2",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/77.0.3865.90 Safari/537.36",
];

fn v4(first: u8, h: u64) -> IpAddr {
    let b = h.to_le_bytes();
    IpAddr::V4(Ipv4Addr::new(first, b[0], b[1], 1 + b[2] % 254))
}

/// An organic user's address: stable for the user; 8 % IPv6; 5 % behind a shared NAT address.
pub fn organic_ip(seed: u64, user: u64) -> IpAddr {
    let h = hash(seed, 21, user);
    let u = unit(h);
    if u < 0.05 {
        // Offices and carrier-grade NAT: a few hundred addresses shared by many users.
        let shared = hash(seed, 22, h % 512);
        return v4(
            CONSUMER_V4[(shared % CONSUMER_V4.len() as u64) as usize],
            shared >> 8,
        );
    }
    if u < 0.13 {
        let g = hash(seed, 23, user);
        return IpAddr::V6(Ipv6Addr::new(
            0x2a02,
            (g >> 48) as u16 & 0x0fff,
            (g >> 32) as u16,
            (g >> 16) as u16,
            0,
            0,
            (g >> 8) as u16,
            g as u16 | 1,
        ));
    }
    v4(
        CONSUMER_V4[((h >> 8) % CONSUMER_V4.len() as u64) as usize],
        h >> 16,
    )
}

/// An organic user's browser: a popularity-weighted pick, stable for the user.
pub fn organic_agent(seed: u64, user: u64) -> &'static str {
    let u = unit(hash(seed, 24, user));
    // Zipf-ish: the first entries are the most common.
    let i = ((u * u) * BROWSERS.len() as f64) as usize;
    BROWSERS[i.min(BROWSERS.len() - 1)]
}

/// A data-centre address for an attacker.
pub fn hosting_ip(h: u64) -> IpAddr {
    v4(HOSTING_V4[(h % HOSTING_V4.len() as u64) as usize], h >> 8)
}

/// A residential-looking address (for the many sources of a distributed attack).
pub fn residential_ip(h: u64) -> IpAddr {
    v4(CONSUMER_V4[(h % CONSUMER_V4.len() as u64) as usize], h >> 8)
}

/// An attacker's agent: scripted half of the time, a browser otherwise.
pub fn bot_agent(h: u64) -> &'static str {
    if h & 1 == 0 {
        SCRIPTED[((h >> 1) % SCRIPTED.len() as u64) as usize]
    } else {
        BROWSERS[((h >> 1) % BROWSERS.len() as u64) as usize]
    }
}
