//! The decision engine: pure functions from a snapshot of objects to the statuses, grants and
//! events the controller must write (see README.md). No I/O, no clock, no randomness: `simulate` and
//! the controller both call it.

pub mod conditions;
pub mod evaluator;
pub mod events;
pub mod grants;
pub mod limits;
pub mod owner;
pub mod permissions;
pub mod quota;
pub mod selector;
pub mod snapshot;
pub mod status;
pub mod tenant;
pub mod vocabulary;
pub mod withdrawal;

pub use evaluator::Evaluator;
pub use events::{EventSpec, EventType, Regarding};
pub use grants::Grant;
pub use quota::QuotaUpdate;
pub use snapshot::{GrantFault, MachineInfo, MachineState, NamespaceInfo, Snapshot, VolumeState, World};
pub use status::StatusUpdate;
pub use tenant::TenantOutcome;
pub use vocabulary::{AccessReason, Action, EventReason, ImageReason, Kind, Refusal};

/// Evaluates every tenant of the snapshot, in name order, from scratch.
pub fn evaluate_all(snap: &Snapshot) -> Vec<TenantOutcome> {
    let mut evaluator = Evaluator::one_shot();
    snap.tenants().iter().map(|ns| evaluator.tenant(snap, ns)).collect()
}
