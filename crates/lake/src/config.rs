//! `[lake]` of `shoplake.toml`: where the lake is and how to reach its object store.

use std::collections::HashMap;

use serde::Deserialize;

/// `[lake]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// The lake root: a directory (default `data/lake`) or `s3://bucket/prefix`.
    pub root: Option<String>,
    /// `[lake.s3]`: settings for an `s3://` root. Values left out are taken from the usual
    /// `AWS_*` environment variables.
    #[serde(default)]
    pub s3: S3Config,
}

/// `[lake.s3]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint of an S3-compatible store (`http://127.0.0.1:8333`); AWS when absent.
    pub endpoint: Option<String>,
    /// The region (`us-east-1`).
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (local stores).
    pub allow_http: Option<bool>,
}

/// The `AWS_*` variables that override `[lake.s3]`.
const AWS_VARIABLES: [&str; 7] = [
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
];

impl LakeConfig {
    /// Every problem with the section.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(root) = &self.root {
            if root.trim().is_empty() {
                errors.push("lake.root is empty".to_owned());
            } else if let Some((scheme, _)) = root.split_once("://")
                && !matches!(scheme, "s3" | "s3a" | "file")
            {
                errors.push(format!(
                    "lake.root: the scheme {scheme}:// is not supported; use a directory or s3://"
                ));
            }
        }
        if let Some(e) = &self.s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(format!(
                "lake.s3.endpoint {e:?} should start with http:// or https://"
            ));
        }
        if self.s3.access_key_id.is_some() != self.s3.secret_access_key.is_some() {
            errors
                .push("lake.s3.access_key_id and lake.s3.secret_access_key go together".to_owned());
        }
        errors
    }

    /// Object-store options: `[lake.s3]`, overridden by the `AWS_*` variables set in `env`.
    pub fn storage_options(&self, env: impl Fn(&str) -> Option<String>) -> HashMap<String, String> {
        let s3 = &self.s3;
        let mut out = HashMap::new();
        for (k, v) in [
            ("AWS_ENDPOINT_URL", s3.endpoint.clone()),
            ("AWS_REGION", s3.region.clone()),
            ("AWS_ACCESS_KEY_ID", s3.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.clone()),
            ("AWS_ALLOW_HTTP", s3.allow_http.map(|b| b.to_string())),
        ] {
            if let Some(v) = v {
                out.insert(k.to_owned(), v);
            }
        }
        for k in AWS_VARIABLES {
            if let Some(v) = env(k) {
                out.insert(k.to_owned(), v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_listed_and_the_environment_wins() {
        let c = LakeConfig {
            root: Some("gs://b/p".to_owned()),
            s3: S3Config {
                endpoint: Some("localhost:9000".to_owned()),
                access_key_id: Some("k".to_owned()),
                ..S3Config::default()
            },
        };
        assert_eq!(c.validate().len(), 3, "{:?}", c.validate());
        let ok = LakeConfig {
            root: Some("s3://b/p".to_owned()),
            s3: S3Config {
                endpoint: Some("http://127.0.0.1:8333".to_owned()),
                region: Some("eu-west-1".to_owned()),
                allow_http: Some(true),
                ..S3Config::default()
            },
        };
        assert!(ok.validate().is_empty());
        let options = ok.storage_options(|k| (k == "AWS_REGION").then(|| "us-east-1".to_owned()));
        assert_eq!(options["AWS_ALLOW_HTTP"], "true");
        assert_eq!(options["AWS_REGION"], "us-east-1");
    }
}
