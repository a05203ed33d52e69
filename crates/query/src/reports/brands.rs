//! Brands that need more marketing (DESIGN.md section 4.4). For each brand with at least
//! `min_views` views in the range: views, carts, purchases, revenue, conversion (purchases /
//! views), cart rate (carts / views), its primary category (the level-1 category with most of
//! its views; ties to the first name) and its view share there (its views in that category /
//! all branded views in it). Against the medians of the reported brands with the same primary
//! category (of conversion, view share and views), a brand is under-exposed, under-converting,
//! a star or weak; the first two get an opportunity in currency, and rows are ranked by it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Columns, ReportScope, count, money};
use crate::engine::Engine;
use crate::error::Result;

/// Options of the brands report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrandsOptions {
    /// Brands with fewer views are not reported (default 100).
    pub min_views: u64,
}

impl Default for BrandsOptions {
    fn default() -> Self {
        BrandsOptions { min_views: 100 }
    }
}

/// A brand's class against its category's medians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrandClass {
    /// Converts at least as well as the median, seen less: needs awareness marketing.
    UnderExposed,
    /// Seen at least as much as the median, converts less: needs conversion marketing.
    UnderConverting,
    /// Both at or above the medians.
    Star,
    /// Both below the medians.
    Weak,
}

impl fmt::Display for BrandClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrandClass::UnderExposed => "under-exposed",
            BrandClass::UnderConverting => "under-converting",
            BrandClass::Star => "star",
            BrandClass::Weak => "weak",
        })
    }
}

/// One brand. JSON: `brand, category, views, carts, purchases, revenue, conversion,
/// cart_rate, view_share, class, opportunity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrandRow {
    /// The brand.
    pub brand: String,
    /// Its primary (level-1) category.
    pub category: String,
    /// Views.
    pub views: u64,
    /// Carts.
    pub carts: u64,
    /// Purchases.
    pub purchases: u64,
    /// Sum of purchase prices.
    pub revenue: f64,
    /// Purchases / views.
    pub conversion: f64,
    /// Carts / views.
    pub cart_rate: f64,
    /// Views in the primary category / all branded views there.
    pub view_share: f64,
    /// The class.
    pub class: BrandClass,
    /// Estimated gain in currency for the two classes that have one; `null` otherwise.
    pub opportunity: Option<f64>,
}

#[derive(Default, Clone)]
struct Tally {
    events: u64,
    views: u64,
    carts: u64,
    purchases: u64,
    revenue_cents: i64,
    view_price_cents: i64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.events += o.events;
        self.views += o.views;
        self.carts += o.carts;
        self.purchases += o.purchases;
        self.revenue_cents += o.revenue_cents;
        self.view_price_cents += o.view_price_cents;
    }
}

/// The brands report, ranked by opportunity (then brand name); brands without one follow.
pub async fn brands(
    engine: &Engine,
    scope: &ReportScope,
    options: &BrandsOptions,
) -> Result<Vec<BrandRow>> {
    let events = super::events_relation(engine, scope).await?;
    let sql = if super::use_marts(engine, scope).await? {
        format!(
            "SELECT brand, category, SUM(events) AS events, SUM(views) AS views,
                    SUM(carts) AS carts, SUM(purchases) AS purchases,
                    SUM(revenue_cents) AS revenue_cents, SUM(view_price_cents) AS view_price_cents
             FROM mart_brands WHERE zone = {tz} AND {days} GROUP BY brand, category",
            tz = scope.range.zone_sql(),
            days = scope.range.day_sql()
        )
    } else {
        format!(
            // Sums first per raw code (a cheap group-by on the stored strings), then per
            // level-1 category: the same totals with the category function run once per group.
            "SELECT brand, category_level(category_code, 1) AS category, SUM(events) AS events,
                SUM(views) AS views, SUM(carts) AS carts, SUM(purchases) AS purchases,
                SUM(revenue_cents) AS revenue_cents, SUM(view_price_cents) AS view_price_cents
         FROM (
           SELECT brand, category_code, COUNT(*) AS events,
                  COUNT(*) FILTER (WHERE event_type = 'view') AS views,
                  COUNT(*) FILTER (WHERE event_type = 'cart') AS carts,
                  COUNT(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                  COALESCE(CAST(SUM(price) FILTER (WHERE event_type = 'purchase') * 100
                                AS BIGINT), 0) AS revenue_cents,
                  COALESCE(CAST(SUM(price) FILTER (WHERE event_type = 'view') * 100
                                AS BIGINT), 0) AS view_price_cents
           FROM {events} WHERE brand IS NOT NULL AND {range}
           GROUP BY 1, 2)
         GROUP BY 1, 2",
            range = scope.range.sql(),
        )
    };
    let mut cells: Vec<(String, String, Tally)> = Vec::new();
    for b in &engine.run(&sql).await?.batches {
        let c = Columns::new(b);
        let (brand, category, events, views, carts, purchases, revenue, view_price) = (
            c.str("brand")?,
            c.str("category")?,
            c.i64("events")?,
            c.i64("views")?,
            c.i64("carts")?,
            c.i64("purchases")?,
            c.i64("revenue_cents")?,
            c.i64("view_price_cents")?,
        );
        for i in 0..b.num_rows() {
            cells.push((
                brand[i].clone().unwrap_or_default(),
                category[i].clone().unwrap_or_default(),
                Tally {
                    events: count(events[i]),
                    views: count(views[i]),
                    carts: count(carts[i]),
                    purchases: count(purchases[i]),
                    revenue_cents: revenue[i].unwrap_or_default(),
                    view_price_cents: view_price[i].unwrap_or_default(),
                },
            ));
        }
    }
    Ok(classify(cells, options))
}

/// The median (the mean of the two middle values for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn classify(cells: Vec<(String, String, Tally)>, options: &BrandsOptions) -> Vec<BrandRow> {
    // Per brand: totals and per-category tallies; per category: all branded views.
    let mut brands: BTreeMap<String, (Tally, BTreeMap<String, Tally>)> = BTreeMap::new();
    let mut category_views: HashMap<String, u64> = HashMap::new();
    for (brand, category, t) in cells {
        *category_views.entry(category.clone()).or_default() += t.views;
        let entry = brands.entry(brand).or_default();
        entry.0.add(&t);
        entry.1.entry(category).or_default().add(&t);
    }
    struct Partial {
        brand: String,
        category: String,
        total: Tally,
        conversion: f64,
        cart_rate: f64,
        view_share: f64,
        average_price: Option<f64>,
    }
    let mut partials = Vec::new();
    for (brand, (total, by_category)) in brands {
        if total.views < options.min_views {
            continue;
        }
        // Most views, then (for brands without views) most events; ties to the first name
        // (the map iterates names in order and only a strictly larger count replaces).
        let mut primary: Option<(&String, &Tally)> = None;
        for (name, t) in &by_category {
            let better = match primary {
                None => true,
                Some((_, p)) if total.views > 0 => t.views > p.views,
                Some((_, p)) => t.events > p.events,
            };
            if better {
                primary = Some((name, t));
            }
        }
        let Some((category, in_primary)) = primary else {
            continue;
        };
        let views = total.views as f64;
        let branded = category_views.get(category).copied().unwrap_or(0) as f64;
        let average_price = if total.purchases > 0 {
            Some(money(total.revenue_cents) / total.purchases as f64)
        } else if total.views > 0 {
            Some(money(total.view_price_cents) / views)
        } else {
            None
        };
        partials.push(Partial {
            category: category.clone(),
            brand,
            conversion: if views > 0.0 {
                total.purchases as f64 / views
            } else {
                0.0
            },
            cart_rate: if views > 0.0 {
                total.carts as f64 / views
            } else {
                0.0
            },
            view_share: if branded > 0.0 {
                in_primary.views as f64 / branded
            } else {
                0.0
            },
            average_price,
            total,
        });
    }
    // Medians per primary category over the reported brands.
    /// Conversions, view shares and views of one category's reported brands.
    type Peers = (Vec<f64>, Vec<f64>, Vec<f64>);
    let mut groups: HashMap<&str, Peers> = HashMap::new();
    for p in &partials {
        let g = groups.entry(p.category.as_str()).or_default();
        g.0.push(p.conversion);
        g.1.push(p.view_share);
        g.2.push(p.total.views as f64);
    }
    let medians: HashMap<String, (f64, f64, f64)> = groups
        .into_iter()
        .map(|(k, (mut c, mut s, mut v))| {
            (
                k.to_owned(),
                (median(&mut c), median(&mut s), median(&mut v)),
            )
        })
        .collect();
    let mut rows: Vec<BrandRow> = partials
        .into_iter()
        .map(|p| {
            let (mc, ms, mv) = medians.get(&p.category).copied().unwrap_or_default();
            let converts = p.conversion >= mc;
            let exposed = p.view_share >= ms;
            let views = p.total.views as f64;
            let (class, opportunity) = match (converts, exposed) {
                (true, false) => (
                    BrandClass::UnderExposed,
                    p.average_price.map(|a| (mv - views) * p.conversion * a),
                ),
                (false, true) => (
                    BrandClass::UnderConverting,
                    p.average_price.map(|a| views * (mc - p.conversion) * a),
                ),
                (true, true) => (BrandClass::Star, None),
                (false, false) => (BrandClass::Weak, None),
            };
            BrandRow {
                brand: p.brand,
                category: p.category,
                views: p.total.views,
                carts: p.total.carts,
                purchases: p.total.purchases,
                revenue: money(p.total.revenue_cents),
                conversion: p.conversion,
                cart_rate: p.cart_rate,
                view_share: p.view_share,
                class,
                opportunity,
            }
        })
        .collect();
    rows.sort_by(|a, b| match (a.opportunity, b.opportunity) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.brand.cmp(&b.brand)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.brand.cmp(&b.brand),
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
