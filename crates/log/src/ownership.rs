//! Which partitions of the log a process works on for a consumer group. On the embedded log
//! one process owns them all, always; on Kafka the group's members share them, the group
//! coordinator deciding who owns which (cooperative-sticky: a rebalance moves only the
//! partitions it has to, the others keep being worked on).
//!
//! Owning a partition is a hint, never a guarantee: a member that lost its partitions without
//! noticing yet (paused, cut off from the brokers) still believes it owns them for up to a
//! session timeout. Whatever a consumer commits must therefore fence itself (the lake's
//! delivery commits its positions as Delta application transactions, and Delta's conflict
//! check refuses a commit when another of the same application id landed since its read).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

/// The partitions a process owns for a group, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// The partitions.
    pub partitions: BTreeSet<u32>,
    /// Rebalances this member has taken part in (assignments and revocations).
    pub rebalances: u64,
}

/// A process's membership of a consumer group: the partitions it owns now, and a way to wait
/// for them to change. Dropping the last clone leaves the group (its partitions move to the
/// other members at once, not after a session timeout).
#[derive(Clone)]
pub struct Ownership {
    owned: watch::Receiver<Owned>,
    /// Kept alive for as long as the ownership is: the group membership itself.
    member: Option<Arc<dyn Send + Sync>>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("owned", &*self.owned.borrow())
            .finish_non_exhaustive()
    }
}

impl Ownership {
    /// Every partition of `0..partitions`, for good (a log one process works on alone).
    pub fn all(partitions: u32) -> Ownership {
        let owned = Owned {
            partitions: (0..partitions).collect(),
            rebalances: 0,
        };
        // The sender goes: the value never changes.
        let (_, rx) = watch::channel(owned);
        Ownership {
            owned: rx,
            member: None,
        }
    }

    /// Ownership that follows a group membership: `owned` is updated by it, and `member`
    /// kept until the last clone is dropped.
    pub fn following(owned: watch::Receiver<Owned>, member: Arc<dyn Send + Sync>) -> Ownership {
        Ownership {
            owned,
            member: Some(member),
        }
    }

    /// Whether the partitions are shared by the members of a group (a Kafka consumer group),
    /// not all this process's for good.
    pub fn is_group(&self) -> bool {
        self.member.is_some()
    }

    /// The partitions owned now.
    pub fn partitions(&self) -> BTreeSet<u32> {
        self.owned.borrow().partitions.clone()
    }

    /// The partitions owned now and the rebalances so far.
    pub fn now(&self) -> Owned {
        self.owned.borrow().clone()
    }

    /// Whether the group has given this member its share at least once (which may be no
    /// partition at all); always, on a log one process works on alone. Joining a Kafka group
    /// takes seconds (the coordinator waits for members to join, or a departed one to time out).
    pub fn assigned(&self) -> bool {
        self.member.is_none() || self.owned.borrow().rebalances > 0
    }

    /// Waits until the group has given this member its share ([`Ownership::assigned`]), or
    /// `timeout` passes; returns whether it has.
    pub async fn wait_assigned(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.assigned() {
            if tokio::time::timeout_at(deadline, self.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        self.assigned()
    }

    /// Waits until the ownership changes (forever when it cannot: the embedded log's).
    pub async fn changed(&mut self) {
        if self.owned.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until `ready` holds for the partitions owned, or `timeout` passes; returns the
    /// last ones seen.
    pub async fn wait_for(
        &mut self,
        timeout: std::time::Duration,
        mut ready: impl FnMut(&BTreeSet<u32>) -> bool,
    ) -> BTreeSet<u32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.partitions();
            if ready(&now) {
                return now;
            }
            if tokio::time::timeout_at(deadline, self.changed())
                .await
                .is_err()
            {
                return self.partitions();
            }
        }
    }
}
