//! The `s3://` (and `s3a://`) scheme for delta-rs, on object_store's own S3 client.
//!
//! delta-rs's `s3` feature would bring the AWS SDK and a second TLS stack (aws-lc) only to
//! resolve credentials; object_store's client already signs requests, reads the `AWS_*`
//! variables, web-identity tokens and container or instance credentials, and commits with
//! conditional puts (`If-None-Match`), which is what delta-rs's default log store needs for
//! safe concurrent writers. Shared AWS config profiles (`~/.aws/config`) are not read: give
//! keys in `[lake.s3]` or the environment.

use std::str::FromStr;
use std::sync::{Arc, Once};

use deltalake::logstore::{
    DeltaIOStorageBackend, LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef,
    StorageConfig, default_logstore, logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use object_store::ObjectStoreScheme;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use url::Url;

/// Registers the scheme with delta-rs, once per process (before any `s3://` table opens).
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stores = Arc::new(S3Stores);
        let logs = Arc::new(S3Logs);
        for url in ["s3://", "s3a://"]
            .into_iter()
            .filter_map(|s| Url::parse(s).ok())
        {
            object_store_factories().insert(url.clone(), stores.clone());
            logstore_factories().insert(url, logs.clone());
        }
    });
}

/// Builds the object store of an `s3://bucket/prefix` URL from the storage options (the
/// `AWS_*` names, in either case) over the process's `AWS_*` variables.
struct S3Stores;

impl ObjectStoreFactory for S3Stores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = builder(url, config.raw.iter()).build()?;
        let (_, path) =
            ObjectStoreScheme::parse(url).map_err(|e| DeltaTableError::GenericError {
                source: Box::new(e),
            })?;
        let store: ObjectStoreRef = match &config.runtime {
            Some(runtime) => Arc::new(DeltaIOStorageBackend::new(store, runtime.clone())),
            None => Arc::new(store),
        };
        Ok((store, Path::parse(path)?))
    }
}

/// The builder for `url`: the `AWS_*` environment first, then each option object_store knows
/// (options it does not know, such as delta-rs's own, are left to delta-rs).
fn builder<'a>(
    url: &Url,
    options: impl Iterator<Item = (&'a String, &'a String)>,
) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_url(url.to_string());
    for (key, value) in options {
        if let Ok(key) = AmazonS3ConfigKey::from_str(&key.to_ascii_lowercase()) {
            builder = builder.with_config(key, value.clone());
        }
    }
    builder
}

/// delta-rs's default log store: commits are conditional puts of the next version's file.
struct S3Logs;

impl LogStoreFactory for S3Logs {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::aws::AmazonS3ConfigKey as Key;
    use std::collections::HashMap;

    #[test]
    fn options_in_either_case_reach_the_client_and_unknown_ones_are_left_alone() {
        let url = Url::parse("s3://bucket/prefix/").unwrap();
        let options: HashMap<String, String> = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("aws_region", "eu-west-3"),
            ("conditional_put", "etag"),
            ("SOMETHING_ELSE", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let b = builder(&url, options.iter());
        assert_eq!(
            b.get_config_value(&Key::Endpoint).as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            b.get_config_value(&Key::Region).as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(
            b.get_config_value(&Key::ConditionalPut).as_deref(),
            Some("etag")
        );
        assert_eq!(
            b.get_config_value(&Key::Bucket).as_deref(),
            None,
            "the URL is read at build"
        );
    }

    #[test]
    fn the_scheme_opens_a_table_location_with_its_prefix() {
        register();
        let url = Url::parse("s3://bucket/some/prefix/").unwrap();
        let config = StorageConfig::parse_options([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ALLOW_HTTP", "true"),
        ])
        .unwrap();
        let factory = object_store_factories()
            .get(&Url::parse("s3://").unwrap())
            .map(|f| f.value().clone())
            .expect("registered");
        let (_, path) = factory.parse_url_opts(&url, &config).unwrap();
        assert_eq!(path.as_ref(), "some/prefix");
    }
}
