//! Abandoned carts, two views over a range (DESIGN.md section 4.2):
//!
//! - sessions: a session belongs to the local day of its first event; a cart session has a
//!   `cart` event; it is abandoned without a `purchase`. All of a session's events count, also
//!   those after the range.
//! - items: each distinct (user, product) whose first `cart` in the range is at `t`: recovered
//!   if the user buys the product within `[t, t + W]`; otherwise pending if `t + W` is after the
//!   newest event in the lake; otherwise abandoned. Values are the price at that first cart.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoplake_events::time::format_rfc3339;

use super::{Columns, ReportScope, count, money, ratio};
use crate::engine::Engine;
use crate::error::Result;
use crate::udf::category_at;

/// Options of the abandonment report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbandonmentOptions {
    /// How long after the first cart a purchase still recovers the item (default 24 h).
    pub window: Duration,
    /// Entries in each top list (default 10).
    pub top: usize,
    /// Rows of the retargeting list (`None`: all).
    pub retarget_limit: Option<usize>,
}

impl Default for AbandonmentOptions {
    fn default() -> Self {
        AbandonmentOptions {
            window: Duration::from_secs(24 * 3600),
            top: 10,
            retarget_limit: None,
        }
    }
}

/// Cart sessions of a local day. JSON: `day, cart_sessions, abandoned_sessions,
/// abandonment_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDay {
    /// The local day of the sessions' first events.
    pub day: String,
    /// Sessions with at least one `cart`.
    pub cart_sessions: u64,
    /// Cart sessions without a `purchase`.
    pub abandoned_sessions: u64,
    /// `abandoned_sessions / cart_sessions` (`null` without cart sessions).
    pub abandonment_rate: Option<f64>,
}

/// Items by status. JSON: `status (abandoned|recovered|pending), items, value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemStatus {
    /// `abandoned`, `recovered` or `pending`.
    pub status: String,
    /// Distinct (user, product) pairs.
    pub items: u64,
    /// Sum of the prices at the first cart.
    pub value: f64,
}

/// A top abandoned product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopProduct {
    /// The product.
    pub product_id: i64,
    /// Its brand at the first cart.
    pub brand: Option<String>,
    /// Its category code at the first cart (`(unknown)` when empty).
    pub category: String,
    /// Abandoned items.
    pub items: u64,
    /// Abandoned value.
    pub value: f64,
}

/// A top abandoned brand or category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopName {
    /// The brand, or the category code.
    pub name: String,
    /// Abandoned items.
    pub items: u64,
    /// Abandoned value.
    pub value: f64,
}

/// An abandoned item to retarget. JSON: `user_id, product_id, carted_at, price`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retarget {
    /// The user.
    pub user_id: i64,
    /// The product left in the cart.
    pub product_id: i64,
    /// The first cart in the range (RFC 3339, UTC).
    pub carted_at: String,
    /// The price then.
    pub price: f64,
}

/// The abandonment report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abandonment {
    /// The recovery window in hours.
    pub window_hours: f64,
    /// The newest event in the lake (RFC 3339), which decides what is still pending.
    pub newest_event: Option<String>,
    /// Cart sessions per local day.
    pub sessions: Vec<SessionDay>,
    /// Items by status, always the three statuses in the order abandoned, recovered, pending.
    pub items: Vec<ItemStatus>,
    /// Products with the most abandoned items (then value, then id).
    pub top_products: Vec<TopProduct>,
    /// Brands with the most abandoned items (then value, then name).
    pub top_brands: Vec<TopName>,
    /// Category codes with the most abandoned items (then value, then name).
    pub top_categories: Vec<TopName>,
    /// Abandoned items, oldest first (then user, product).
    pub retarget: Vec<Retarget>,
    /// Abandoned items in all (the retargeting list may be cut to a limit).
    pub retarget_total: u64,
}

/// One (user, product) first carted in the range.
struct Item {
    user_id: i64,
    product_id: i64,
    carted: i64,
    price_cents: i64,
    brand: Option<String>,
    category: Option<String>,
    status: &'static str,
}

/// The abandonment report.
pub async fn abandonment(
    engine: &Engine,
    scope: &ReportScope,
    options: &AbandonmentOptions,
) -> Result<Abandonment> {
    let range = &scope.range;
    let tz = range.zone_sql();
    let (start, end) = range.utc_bounds();
    let window = i64::try_from(options.window.as_micros()).unwrap_or(i64::MAX);
    let first_in_range = {
        let mut c = vec!["TRUE".to_owned()];
        if let Some(s) = start {
            c.push(format!("CAST(first AS BIGINT) >= {s}"));
        }
        if let Some(e) = end {
            c.push(format!("CAST(first AS BIGINT) < {e}"));
        }
        c.join(" AND ")
    };
    let marts = super::use_marts(engine, scope).await?;
    let sessions_sql = if marts {
        format!(
            "SELECT CAST(day AS VARCHAR) AS day, cart_sessions, abandoned_sessions
             FROM mart_daily WHERE zone = {tz} AND session_starts > 0 AND {days} ORDER BY day",
            days = range.day_sql()
        )
    } else {
        format!(
            "WITH s AS (
            SELECT user_session, MIN(event_time) AS first,
                   MAX(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS has_cart,
                   MAX(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS has_purchase
            FROM events WHERE user_session IS NOT NULL GROUP BY user_session)
         SELECT CAST(CAST(local_time(first, {tz}) AS DATE) AS VARCHAR) AS day,
                SUM(has_cart) AS cart_sessions,
                SUM(CASE WHEN has_cart = 1 AND has_purchase = 0 THEN 1 ELSE 0 END)
                    AS abandoned_sessions
         FROM s WHERE {first_in_range} GROUP BY 1 ORDER BY 1"
        )
    };
    // From the marts, the items read `mart_funnel` (carts and purchases only, same columns)
    // and the newest event comes from the zone's stamp row.
    let (funnel, newest_sql) = if marts {
        (
            "mart_funnel",
            format!("SELECT MAX(newest_event) AS newest FROM mart_daily WHERE zone = {tz}"),
        )
    } else {
        (
            "events",
            "SELECT MAX(CAST(event_time AS BIGINT)) AS newest FROM events".to_owned(),
        )
    };
    let purchases_from = start.map_or("TRUE".to_owned(), |s| {
        format!("CAST(event_time AS BIGINT) >= {s}")
    });
    let items_sql = format!(
        "WITH c AS (
            SELECT user_id, product_id, MIN(CAST(event_time AS BIGINT)) AS carted,
                   first_value(CAST(price * 100 AS BIGINT)
                               ORDER BY event_time, price) AS price_cents,
                   first_value(brand ORDER BY event_time, price) AS brand,
                   first_value(category_code ORDER BY event_time, price) AS category_code
            FROM {funnel} WHERE event_type = 'cart' AND {range}
            GROUP BY user_id, product_id),
         p AS (
            SELECT user_id, product_id, CAST(event_time AS BIGINT) AS t FROM {funnel}
            WHERE event_type = 'purchase' AND {purchases_from}),
         r AS (
            SELECT c.user_id, c.product_id FROM c JOIN p
              ON c.user_id = p.user_id AND c.product_id = p.product_id
            WHERE p.t >= c.carted AND p.t <= c.carted + {window}
            GROUP BY c.user_id, c.product_id),
         n AS ({newest_sql})
         SELECT c.user_id, c.product_id, c.carted, c.price_cents, c.brand, c.category_code,
                CASE WHEN r.user_id IS NOT NULL THEN 'recovered'
                     WHEN c.carted + {window} > n.newest THEN 'pending'
                     ELSE 'abandoned' END AS status
         FROM c LEFT JOIN r ON c.user_id = r.user_id AND c.product_id = r.product_id
         CROSS JOIN n",
        range = range.sql(),
    );

    let sessions_out = engine.run(&sessions_sql).await?;
    let mut sessions = Vec::new();
    for b in &sessions_out.batches {
        let c = Columns::new(b);
        let (day, carts, abandoned) = (
            c.str("day")?,
            c.i64("cart_sessions")?,
            c.i64("abandoned_sessions")?,
        );
        for i in 0..b.num_rows() {
            let (carts, abandoned) = (count(carts[i]), count(abandoned[i]));
            sessions.push(SessionDay {
                day: day[i].clone().unwrap_or_default(),
                cart_sessions: carts,
                abandoned_sessions: abandoned,
                abandonment_rate: ratio(abandoned as f64, carts as f64),
            });
        }
    }

    let mut items = Vec::new();
    for b in &engine.run(&items_sql).await?.batches {
        let c = Columns::new(b);
        let (user, product, carted, price, brand, category, status) = (
            c.i64("user_id")?,
            c.i64("product_id")?,
            c.i64("carted")?,
            c.i64("price_cents")?,
            c.str("brand")?,
            c.str("category_code")?,
            c.str("status")?,
        );
        for i in 0..b.num_rows() {
            items.push(Item {
                user_id: user[i].unwrap_or_default(),
                product_id: product[i].unwrap_or_default(),
                carted: carted[i].unwrap_or_default(),
                price_cents: price[i].unwrap_or_default(),
                brand: brand[i].clone(),
                category: category[i].clone(),
                status: match status[i].as_deref() {
                    Some("recovered") => "recovered",
                    Some("pending") => "pending",
                    _ => "abandoned",
                },
            });
        }
    }
    let newest = engine.run(&newest_sql).await?;
    let newest_event = newest
        .batches
        .first()
        .and_then(|b| Columns::new(b).i64("newest").ok())
        .and_then(|v| v.first().copied().flatten())
        .map(format_rfc3339);

    Ok(summarize(items, sessions, newest_event, options))
}

fn summarize(
    mut items: Vec<Item>,
    sessions: Vec<SessionDay>,
    newest_event: Option<String>,
    options: &AbandonmentOptions,
) -> Abandonment {
    let mut statuses: Vec<ItemStatus> = ["abandoned", "recovered", "pending"]
        .iter()
        .map(|s| ItemStatus {
            status: (*s).to_owned(),
            items: 0,
            value: 0.0,
        })
        .collect();
    let mut cents = [0i64; 3];
    let mut products: HashMap<i64, (u64, i64, Option<String>, Option<String>)> = HashMap::new();
    let mut brands: HashMap<String, (u64, i64)> = HashMap::new();
    let mut categories: HashMap<String, (u64, i64)> = HashMap::new();
    for it in &items {
        let k = match it.status {
            "abandoned" => 0,
            "recovered" => 1,
            _ => 2,
        };
        statuses[k].items += 1;
        cents[k] += it.price_cents;
        if k != 0 {
            continue;
        }
        let p = products
            .entry(it.product_id)
            .or_insert_with(|| (0, 0, it.brand.clone(), it.category.clone()));
        p.0 += 1;
        p.1 += it.price_cents;
        if let Some(b) = &it.brand {
            let e = brands.entry(b.clone()).or_default();
            e.0 += 1;
            e.1 += it.price_cents;
        }
        let e = categories
            .entry(category_at(it.category.as_deref(), 0).to_owned())
            .or_default();
        e.0 += 1;
        e.1 += it.price_cents;
    }
    for (s, c) in statuses.iter_mut().zip(cents) {
        s.value = money(c);
    }
    let mut top_products: Vec<TopProduct> = products
        .into_iter()
        .map(|(id, (n, c, brand, category))| TopProduct {
            product_id: id,
            brand,
            category: category_at(category.as_deref(), 0).to_owned(),
            items: n,
            value: money(c),
        })
        .collect();
    top_products.sort_by(|a, b| {
        b.items
            .cmp(&a.items)
            .then(b.value.total_cmp(&a.value))
            .then(a.product_id.cmp(&b.product_id))
    });
    top_products.truncate(options.top);
    let top = |m: HashMap<String, (u64, i64)>| {
        let mut v: Vec<TopName> = m
            .into_iter()
            .map(|(name, (n, c))| TopName {
                name,
                items: n,
                value: money(c),
            })
            .collect();
        v.sort_by(|a, b| {
            b.items
                .cmp(&a.items)
                .then(b.value.total_cmp(&a.value))
                .then(a.name.cmp(&b.name))
        });
        v.truncate(options.top);
        v
    };
    items.retain(|it| it.status == "abandoned");
    items.sort_by_key(|it| (it.carted, it.user_id, it.product_id));
    let retarget_total = items.len() as u64;
    let retarget = items
        .iter()
        .take(options.retarget_limit.unwrap_or(usize::MAX))
        .map(|it| Retarget {
            user_id: it.user_id,
            product_id: it.product_id,
            carted_at: format_rfc3339(it.carted),
            price: money(it.price_cents),
        })
        .collect();
    Abandonment {
        window_hours: options.window.as_secs_f64() / 3600.0,
        newest_event,
        sessions,
        items: statuses,
        top_products,
        top_brands: top(brands),
        top_categories: top(categories),
        retarget,
        retarget_total,
    }
}
