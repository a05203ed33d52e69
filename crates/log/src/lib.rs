//! The event log: the only hand-off between the collector and its consumers (lake delivery,
//! detector). Records are appended under a key (the user id, so one user's events stay in
//! order) to one of a fixed number of partitions, each an ordered sequence numbered by offset.
//! An append returns only once its records are durable. Each consumer keeps its own position
//! per partition, durably.
//!
//! One trait, [`EventLog`], with the embedded backend [`EmbeddedLog`] (segment files on local
//! disk, a checksum per record, group commit with `fsync`, retention by size and age, recovery
//! that drops a torn tail), and [`KafkaLog`] (a Kafka topic keyed by user id, for scale-out);
//! the [`conformance`] suite states what every backend must do.

mod config;
pub mod conformance;
mod embedded;
mod kafka;
mod ownership;
mod segment;

use std::collections::BTreeMap;

pub use config::{Backend, DEFAULT_TOPIC, KafkaConfig, LogConfig, LogSettings};
pub use embedded::{EmbeddedLog, EmbeddedOptions};
pub use kafka::{KafkaLog, KafkaOptions, group_id};
pub use ownership::{Owned, Ownership};

/// What went wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and on which file.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The files are not a log this release can read, or are damaged before their tail.
    #[error("{0}")]
    Corrupt(String),
    /// A bad argument (partition, consumer name, options).
    #[error("{0}")]
    Argument(String),
    /// The Kafka backend failed (connection, broker, protocol).
    #[error("kafka: {0}")]
    Kafka(String),
    /// A partition holds as much as it may and its oldest records are not yet read by a
    /// protected consumer: the append is refused (nothing of it is written); retry later.
    #[error("{0}")]
    Full(String),
    /// The log stopped after a failed write; reopening recovers it.
    #[error("the log stopped after a failed write ({0}); reopen it to recover")]
    Stopped(String),
}

/// The log's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A record to append: the key decides the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partitioning key (the user id's decimal digits for events).
    pub key: Vec<u8>,
    /// The payload.
    pub value: Vec<u8>,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The record's offset in it.
    pub offset: u64,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its offset in the partition.
    pub offset: u64,
    /// When it was appended (µs since the epoch, the log's clock).
    pub appended_at: i64,
    /// Its key.
    pub key: Vec<u8>,
    /// Its payload.
    pub value: Vec<u8>,
}

/// How much one [`EventLog::read`] returns at most: a number of records, and a number of
/// bytes (keys and values). The first record is returned even when it alone is larger, so a
/// reader always moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The most records.
    pub records: usize,
    /// The most bytes of keys and values; the read stops at the record that reaches it.
    pub bytes: usize,
}

impl Limit {
    /// At most `records` records, of any size.
    pub const fn records(records: usize) -> Self {
        Self {
            records,
            bytes: usize::MAX,
        }
    }

    /// At most `records` records holding at most about `bytes` bytes.
    pub const fn new(records: usize, bytes: usize) -> Self {
        Self { records, bytes }
    }

    /// Whether a read that holds `records` records of `bytes` bytes is done.
    pub fn reached(&self, records: usize, bytes: usize) -> bool {
        records >= self.records || (records > 0 && bytes >= self.bytes)
    }
}

impl Stored {
    /// The bytes it holds (key and value), as [`Limit::bytes`] counts them.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

/// A durable, partitioned, append-only log.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// The number of partitions (fixed for the log's life).
    fn partitions(&self) -> u32;

    /// The partition a key goes to.
    fn partition_for(&self, key: &[u8]) -> u32 {
        partition_for(key, self.partitions())
    }

    /// Appends records, returning their positions (in the order given) once they are durable.
    /// Records of one key keep their order.
    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>>;

    /// Records of a partition from offset `from` on, in order, up to `limit`. Records before
    /// the partition's [`EventLog::start`] are gone (retention): reading from there starts at
    /// the first one kept. Empty at the end.
    async fn read(&self, partition: u32, from: u64, limit: Limit) -> Result<Vec<Stored>>;

    /// The first offset of a partition still kept.
    async fn start(&self, partition: u32) -> Result<u64>;

    /// The offset the next record of a partition will get (everything before it is durable).
    async fn end(&self, partition: u32) -> Result<u64>;

    /// A consumer's committed positions: per partition, the next offset it will read
    /// (partitions it never committed are absent).
    async fn committed(&self, consumer: &str) -> Result<BTreeMap<u32, u64>>;

    /// Durably stores a consumer's positions (merged into those already committed).
    async fn commit(&self, consumer: &str, positions: &BTreeMap<u32, u64>) -> Result<()>;

    /// A log of its own beside this one, named `name` (1-64 of `[A-Za-z0-9_.-]`), with
    /// `partitions` partitions when it has to be made (it keeps the count it was made with;
    /// the embedded log refuses another): for what the processes of one deployment hand each
    /// other besides events. On Kafka the topic `<topic>.<name>`; on the embedded log a log in
    /// `<dir>/companions/<name>`. A backend without companions says so.
    async fn companion(&self, name: &str, partitions: u32) -> Result<std::sync::Arc<dyn EventLog>> {
        let _ = partitions;
        check_consumer(name)?;
        Err(Error::Argument(format!(
            "this log keeps no companion log (asked for {name:?})"
        )))
    }

    /// Joins the consumer group `group`: the partitions this process is to work on for it,
    /// kept up to date as members come and go ([`Ownership`]). On a log one process works
    /// on alone (the embedded one), every partition, for good.
    async fn join(&self, group: &str) -> Result<Ownership> {
        check_consumer(group)?;
        Ok(Ownership::all(self.partitions()))
    }
}

/// The key prefix of records that are refused rows on their way to `quarantine` (a JSON
/// object with `source`, `line`, `field`, `reason`, `raw`), not events. User ids are digits,
/// so no event has it; consumers of events skip it. What follows the prefix (the client's
/// address) spreads refused rows over the partitions.
pub const QUARANTINE_KEY: &[u8] = b"!quarantine";

/// Whether a record's key marks a refused row ([`QUARANTINE_KEY`], with or without a suffix).
pub fn is_quarantine(key: &[u8]) -> bool {
    key.starts_with(QUARANTINE_KEY)
}

/// The partition of a key among `partitions` (XXH3 of the key, modulo).
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

/// Checks a consumer name: 1–64 of `[A-Za-z0-9_.-]` (it names a file).
pub fn check_consumer(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Argument(format!(
            "consumer name {name:?}: expected 1-64 of A-Z a-z 0-9 _ - . (not starting with .)"
        )))
    }
}
