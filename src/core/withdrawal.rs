//! Why an image a recipient was offered is offered no more, told without leaking anything
//! about images it was never offered (docs/security.md, "No oracle").

use super::{
    owner::{OwnerEval, is_expired, share_reaches},
    snapshot::{Entry, Snapshot},
};
use crate::api::ImageShare;

/// Withdrawal causes that depend on nothing about the image, not even whether it exists.
const STOPPED_SHARING: &str = "the owner stopped sharing it with this namespace";
const NO_LONGER_OFFERED: &str = "the owner no longer offers it to this namespace";

/// Why an image the recipient's status listed is no longer offered; empty when it still is.
///
/// The recipient's status may be forged, so it names images the recipient was never offered
/// too. Causes read from the owner's namespace and shares (leaving, not listed, expired, other
/// region) are the same whether such an image exists or not; causes that depend on the image
/// itself are only given for pairs the owner's own record (its ImageShare statuses, in a
/// namespace the recipient can not write) still says were offered. The owner's reconcile may
/// rewrite that record first; then the answer is the generic one.
pub fn withdrawal_cause(snap: &Snapshot, owner: &OwnerEval, image: &str, recipient: &str) -> String {
    if owner.pair(image, recipient).is_some() {
        return String::new();
    }
    if snap.is_leaving(&owner.owner) {
        return "the owner's namespace is being deleted".into();
    }
    let listing: Vec<&Entry<ImageShare>> = snap
        .shares_in(&owner.owner)
        .filter(|s| {
            s.object.spec.images.iter().any(|i| i == image) && share_reaches(snap, &owner.owner, &s.object, recipient)
        })
        .collect();
    if listing.is_empty() {
        return STOPPED_SHARING.into();
    }
    if listing.iter().all(|s| is_expired(snap, &s.object)) {
        return "the share expired".into();
    }
    if super::limits::region_of(snap, recipient) != owner.region.as_deref() {
        return "this namespace is no longer in the owner's region".into();
    }
    let recorded = snap.shares_in(&owner.owner).any(|s| {
        s.object
            .status
            .iter()
            .flat_map(|st| &st.images)
            .any(|i| i.name == image && i.recipients().any(|r| **r == *recipient))
    });
    if !recorded {
        return NO_LONGER_OFFERED.into();
    }
    let Some(entry) = snap.image(&owner.owner, image) else {
        return "the owner deleted the image".into();
    };
    if entry.object.spec.published || !owner.images.get(image).is_some_and(|v| v.ready) {
        return "the image is no longer available for sharing".into();
    }
    "the owner's sharing limits no longer admit it".into()
}
