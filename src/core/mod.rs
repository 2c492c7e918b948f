//! The decision engine: pure functions from a snapshot of objects to the statuses, grants and
//! events the controller must write (see README.md). No I/O, no clock, no randomness: `simulate` and
//! the controller both call it.

pub mod conditions;
pub mod events;
pub mod grants;
pub mod limits;
pub mod owner;
pub mod permissions;
pub mod quota;
pub mod snapshot;
pub mod tenant;

pub use events::{EventSpec, EventType, Regarding};
pub use grants::Grant;
pub use quota::QuotaUpdate;
pub use snapshot::{
    GrantFault, GrantFaultReason, MachineInfo, MachineState, NamespaceInfo, Snapshot, VolumeState, World,
};
pub use tenant::{Evaluator, StatusUpdate, TenantOutcome};

/// Evaluates every tenant of the snapshot, in name order.
pub fn evaluate_all(snap: &Snapshot) -> Vec<TenantOutcome> {
    let mut evaluator = Evaluator::new(snap);
    snap.tenants().iter().map(|ns| evaluator.tenant(ns)).collect()
}
