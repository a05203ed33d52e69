//! One report request, as the CLI and the HTTP API both take it: the report's name and its
//! options by name, as text (command-line flags, URL query parameters), parsed and given
//! their defaults here, once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Abandonment, AbandonmentOptions, ActivityCell, BotDay, BrandRow, BrandsOptions,
    CategoriesOptions, CategoryRow, Level, ReportScope, VisitorsDay,
};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::range::ReportRange;

/// Rows of the abandonment report's retargeting list unless asked otherwise.
pub const DEFAULT_RETARGET_ROWS: usize = 20;

/// A report's options by name, as text or numbers, every one optional (the defaults are
/// the library's). Unknown names are refused when deserialized (URL query parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// The first local day, `YYYY-MM-DD`.
    pub from: Option<String>,
    /// The last local day, `YYYY-MM-DD`.
    pub to: Option<String>,
    /// The IANA zone of the days (default UTC).
    pub tz: Option<String>,
    /// Count bot traffic too (default: humans only).
    pub all_traffic: Option<bool>,
    /// `auto` (default), `events` or `marts`.
    pub source: Option<String>,
    /// Abandonment: how long after the first cart a purchase recovers it (`24h`).
    pub window: Option<String>,
    /// Abandonment, categories: entries in each top list.
    pub top: Option<usize>,
    /// Abandonment: rows of the retargeting list (0: all; default 20).
    pub list: Option<usize>,
    /// Categories: `hour` (default) or `weekday`.
    pub by: Option<String>,
    /// Categories: `1` (default), `2`, `3` or `full`.
    pub level: Option<String>,
    /// Categories: `views` (default), `carts`, `purchases`, `revenue` or `visitors`.
    pub metric: Option<String>,
    /// Brands: brands with fewer views are left out (default 100).
    pub min_views: Option<u64>,
}

/// Which report, with its own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportKind {
    /// Unique visitors per day.
    Visitors,
    /// Events per local weekday and hour.
    Activity,
    /// Users flagged as bots per UTC day.
    Bots,
    /// Abandoned carts.
    Abandonment(AbandonmentOptions),
    /// Top categories per hour or weekday.
    Categories(CategoriesOptions),
    /// Brands that need more marketing.
    Brands(BrandsOptions),
}

/// The report names, as the CLI and the URL spell them.
pub const REPORTS: &[&str] = &[
    "visitors",
    "abandonment",
    "categories",
    "brands",
    "activity",
    "bots",
];

/// A report and what it covers, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    /// Days, zone, source, bot traffic.
    pub scope: ReportScope,
    /// The report and its options.
    pub kind: ReportKind,
}

/// A report's answer: its rows (the abandonment report is one object of several lists).
/// Serialized as those rows alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReportAnswer {
    /// One row per local day.
    Visitors(Vec<VisitorsDay>),
    /// One cell per weekday and hour with events.
    Activity(Vec<ActivityCell>),
    /// One row per UTC day with flags.
    Bots(Vec<BotDay>),
    /// The abandonment report.
    Abandonment(Box<Abandonment>),
    /// The top categories of each bucket.
    Categories(Vec<CategoryRow>),
    /// The brands, ranked.
    Brands(Vec<BrandRow>),
}

impl ReportRequest {
    /// The report `name` with these options (an unknown report, a bad value: an
    /// [`Error::Argument`] naming the option).
    pub fn parse(name: &str, p: &ReportParams) -> Result<ReportRequest> {
        let scope = ReportScope {
            range: ReportRange::parse(p.from.as_deref(), p.to.as_deref(), p.tz.as_deref())?,
            all_traffic: p.all_traffic.unwrap_or(false),
            source: match &p.source {
                Some(s) => s.parse()?,
                None => Default::default(),
            },
        };
        let kind = match name {
            "visitors" => ReportKind::Visitors,
            "activity" => ReportKind::Activity,
            "bots" => ReportKind::Bots,
            "abandonment" => ReportKind::Abandonment(abandonment_options(p)?),
            "categories" => ReportKind::Categories(categories_options(p)?),
            "brands" => ReportKind::Brands(BrandsOptions {
                min_views: p.min_views.unwrap_or(BrandsOptions::default().min_views),
            }),
            other => {
                return Err(Error::Argument(format!(
                    "no report {other:?}: expected {}",
                    REPORTS.join(", ")
                )));
            }
        };
        Ok(ReportRequest { scope, kind })
    }

    /// Runs the report.
    pub async fn run(&self, engine: &Engine) -> Result<ReportAnswer> {
        let scope = &self.scope;
        Ok(match &self.kind {
            ReportKind::Visitors => ReportAnswer::Visitors(super::visitors(engine, scope).await?),
            ReportKind::Activity => ReportAnswer::Activity(super::activity(engine, scope).await?),
            ReportKind::Bots => ReportAnswer::Bots(super::bots(engine, scope).await?),
            ReportKind::Abandonment(o) => {
                ReportAnswer::Abandonment(Box::new(super::abandonment(engine, scope, o).await?))
            }
            ReportKind::Categories(o) => {
                ReportAnswer::Categories(super::categories(engine, scope, o).await?)
            }
            ReportKind::Brands(o) => ReportAnswer::Brands(super::brands(engine, scope, o).await?),
        })
    }
}

/// What a report's figures reflect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsOf {
    /// The `events` version read (`None`: no table yet).
    pub events_version: Option<i64>,
    /// When the report read marts behind the latest `events` (a refresh due or running):
    /// how long the oldest commit they lack has been in the lake.
    pub lag: Option<Duration>,
}

impl ReportRequest {
    /// The zone whose marts the report reads when they are up to date (`None`: it reads
    /// `events` whatever the marts hold).
    pub fn marts_zone(&self) -> Option<chrono_tz::Tz> {
        let reads_marts = matches!(
            self.kind,
            ReportKind::Visitors
                | ReportKind::Activity
                | ReportKind::Abandonment(_)
                | ReportKind::Categories(_)
                | ReportKind::Brands(_)
        );
        (reads_marts && self.scope.source == super::Source::Auto && !self.scope.all_traffic)
            .then_some(self.scope.range.tz)
    }

    /// Runs the report; when the marts it reads are behind the engine's `events` (or
    /// `bot_flags`) by at most `lag` (the oldest commit they lack is that young: a refresh is
    /// due or running), from the snapshot they reflect: exact for the `events` version [`AsOf`] names, and as fast
    /// as up-to-date marts. Otherwise (or should that snapshot no longer be readable) from
    /// the versions the engine reads.
    pub async fn run_recent(&self, engine: &Engine, lag: Duration) -> Result<(ReportAnswer, AsOf)> {
        if let Some(tz) = self.marts_zone().filter(|_| !lag.is_zero())
            && !crate::stamp::fresh(engine, tz).await?
            && let Some(behind) = crate::stamp::behind(engine, tz).await?
        {
            let age = behind
                .lacks_since
                .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default());
            if let Some(age) = age.filter(|a| *a <= lag) {
                let snapshot = behind.engine.with_timeout(engine.timeout());
                match self.run(&snapshot).await {
                    Ok(answer) => {
                        let as_of = AsOf {
                            events_version: Some(behind.events_version),
                            lag: Some(age),
                        };
                        return Ok((answer, as_of));
                    }
                    Err(e @ Error::Timeout(_)) => return Err(e),
                    Err(e) => {
                        tracing::info!(error = %e, "the marts' snapshot: reading the latest instead");
                    }
                }
            }
        }
        let as_of = AsOf {
            events_version: engine.events_version(),
            lag: None,
        };
        Ok((self.run(engine).await?, as_of))
    }
}

fn abandonment_options(p: &ReportParams) -> Result<AbandonmentOptions> {
    let defaults = AbandonmentOptions::default();
    Ok(AbandonmentOptions {
        window: match &p.window {
            Some(w) => window(w)?,
            None => defaults.window,
        },
        top: p.top.unwrap_or(defaults.top),
        retarget_limit: match p.list {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(DEFAULT_RETARGET_ROWS),
        },
    })
}

fn window(w: &str) -> Result<Duration> {
    humantime::parse_duration(w.trim())
        .map_err(|e| Error::Argument(format!("window {w:?}: {e} (for example 24h or 90m)")))
}

fn categories_options(p: &ReportParams) -> Result<CategoriesOptions> {
    let defaults = CategoriesOptions::default();
    Ok(CategoriesOptions {
        by: match &p.by {
            Some(b) => b.parse()?,
            None => defaults.by,
        },
        level: match &p.level {
            Some(l) => l.parse::<Level>()?,
            None => defaults.level,
        },
        top: p.top.unwrap_or(defaults.top),
        metric: match &p.metric {
            Some(m) => m.parse()?,
            None => defaults.metric,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::reports::{Bucketing, Metric};

    fn params(pairs: &[(&str, &str)]) -> ReportParams {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        serde_urlencoded_like(&query.join("&"))
    }

    /// The URL form through serde, as axum's `Query` reads it (numbers and booleans from
    /// text).
    fn serde_urlencoded_like(query: &str) -> ReportParams {
        let mut map = serde_json::Map::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            let value = match k {
                "top" | "list" | "min_views" => serde_json::json!(v.parse::<u64>().unwrap()),
                "all_traffic" => serde_json::json!(v == "true"),
                _ => serde_json::json!(v),
            };
            map.insert(k.to_owned(), value);
        }
        serde_json::from_value(serde_json::Value::Object(map)).unwrap()
    }

    #[test]
    fn defaults_come_from_the_library() {
        let r = ReportRequest::parse("abandonment", &ReportParams::default()).unwrap();
        assert_eq!(
            r.kind,
            ReportKind::Abandonment(AbandonmentOptions {
                window: Duration::from_secs(24 * 3600),
                top: 10,
                retarget_limit: Some(DEFAULT_RETARGET_ROWS),
            })
        );
        assert_eq!(r.scope, ReportScope::default());
        let r = ReportRequest::parse("categories", &ReportParams::default()).unwrap();
        assert_eq!(r.kind, ReportKind::Categories(CategoriesOptions::default()));
        let r = ReportRequest::parse("brands", &ReportParams::default()).unwrap();
        assert_eq!(r.kind, ReportKind::Brands(BrandsOptions { min_views: 100 }));
    }

    #[test]
    fn options_are_typed_and_a_list_of_zero_means_all() {
        let p = params(&[
            ("window", "90m"),
            ("top", "3"),
            ("list", "0"),
            ("tz", "Europe/Berlin"),
            ("all_traffic", "true"),
        ]);
        let r = ReportRequest::parse("abandonment", &p).unwrap();
        assert_eq!(
            r.kind,
            ReportKind::Abandonment(AbandonmentOptions {
                window: Duration::from_secs(90 * 60),
                top: 3,
                retarget_limit: None,
            })
        );
        assert!(r.scope.all_traffic);
        assert_eq!(r.scope.range.tz.name(), "Europe/Berlin");
        let p = params(&[("by", "weekday"), ("level", "full"), ("metric", "revenue")]);
        let r = ReportRequest::parse("categories", &p).unwrap();
        assert_eq!(
            r.kind,
            ReportKind::Categories(CategoriesOptions {
                by: Bucketing::Weekday,
                level: Level::Full,
                top: 5,
                metric: Metric::Revenue,
            })
        );
    }

    #[test]
    fn a_bad_value_names_its_option_not_a_flag() {
        for (name, pairs, says) in [
            ("categories", vec![("level", "4")], "level \"4\""),
            ("categories", vec![("by", "minute")], "by \"minute\""),
            ("categories", vec![("metric", "likes")], "metric \"likes\""),
            ("abandonment", vec![("window", "soon")], "window \"soon\""),
            ("visitors", vec![("source", "cache")], "source \"cache\""),
            (
                "visitors",
                vec![("from", "27/10/2019")],
                "from \"27/10/2019\"",
            ),
            (
                "visitors",
                vec![("from", "2019-10-28"), ("to", "2019-10-27")],
                "from 2019-10-28",
            ),
            ("funnel", vec![], "no report \"funnel\""),
        ] {
            let e = ReportRequest::parse(name, &params(&pairs)).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, Error::Argument(_)), "{text}");
            assert!(text.contains(says), "{text}");
            assert!(
                !text.contains("--"),
                "a flag name in a library message: {text}"
            );
        }
    }

    #[test]
    fn unknown_parameters_are_refused() {
        let e = serde_json::from_value::<ReportParams>(serde_json::json!({"form": "2019-10-01"}));
        assert!(e.is_err());
    }
}
