//! `[alerts]` of `shoplake.toml`: where incidents are kept and for how long once resolved.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use shoplake_events::settings::parse_duration_or_off;

/// `[alerts]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The alert store: `sqlite://PATH` (default `sqlite://DATA/alerts.db`) or
    /// `postgres://user@host:port/db`.
    pub store: Option<String>,
    /// Delete resolved incidents this long after their resolution (default `off`: keep
    /// them), such as `90d`; applied every ten minutes.
    pub retain_resolved: Option<String>,
}

/// The alert store as configured, every value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsSettings {
    /// The store's URL.
    pub url: String,
    /// How long resolved incidents are kept (`None`: for good).
    pub retain_resolved: Option<Duration>,
}

impl AlertsConfig {
    /// The settings, with the store under the data directory `data` unless one is named, or
    /// every problem with them.
    pub fn settings(&self, data: &Path) -> Result<AlertsSettings, Vec<String>> {
        let mut errors = Vec::new();
        let url = match &self.store {
            Some(url) => {
                if !(url.starts_with("sqlite://")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    errors.push(format!(
                        "alerts.store {url:?}: expected sqlite://PATH or postgres://…"
                    ));
                }
                url.clone()
            }
            None => format!("sqlite://{}", data.join("alerts.db").display()),
        };
        let retain_resolved = match &self.retain_resolved {
            None => None,
            Some(v) => parse_duration_or_off(v)
                .map_err(|e| errors.push(format!("alerts.retain_resolved = {e}")))
                .ok()
                .flatten(),
        };
        if errors.is_empty() {
            Ok(AlertsSettings {
                url,
                retain_resolved,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_defaults_to_sqlite_in_the_data_directory() {
        let s = AlertsConfig::default().settings(Path::new("/d")).unwrap();
        assert_eq!(s.url, "sqlite:///d/alerts.db");
        assert_eq!(s.retain_resolved, None);
        let c = AlertsConfig {
            store: Some("postgres://u@h/db".to_owned()),
            retain_resolved: Some("90d".to_owned()),
        };
        let s = c.settings(Path::new("/d")).unwrap();
        assert_eq!(s.retain_resolved, Some(Duration::from_secs(90 * 86_400)));
        let bad = AlertsConfig {
            store: Some("mysql://h".to_owned()),
            retain_resolved: Some("later".to_owned()),
        };
        assert_eq!(bad.settings(Path::new("/d")).unwrap_err().len(), 2);
    }
}
