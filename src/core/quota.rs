//! The ImageQuota of a tenant: the limits in force and what uses them, like a ResourceQuota
//! (README, "Limits and regions").

use crate::{
    api::{ImageQuotaStatus, QuotaHard, QuotaSummary, QuotaUsed},
    config::{Limit, UNLIMITED},
};

use super::{owner::OwnerEval, snapshot::Snapshot};

/// What to do with a namespace's ImageQuota.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum QuotaUpdate {
    /// It is as it should be (or should not exist and does not), or the namespace is leaving.
    #[default]
    Unchanged,
    /// Create it (`create`) or write its status.
    Apply { create: bool, status: ImageQuotaStatus },
    /// The namespace no longer needs one.
    Delete,
}

impl QuotaUpdate {
    /// Writes it needs.
    pub fn writes(&self) -> usize {
        match self {
            QuotaUpdate::Unchanged => 0,
            QuotaUpdate::Apply { create: true, .. } => 2,
            QuotaUpdate::Apply { create: false, .. } | QuotaUpdate::Delete => 1,
        }
    }
}

/// Whether a namespace keeps an ImageQuota: it holds a PrivateImage or ImageShare (also one
/// the operator can not read), or carries a limit annotation.
pub fn wanted(snap: &Snapshot, namespace: &str) -> bool {
    snap.images_in(namespace).next().is_some()
        || snap.shares_in(namespace).next().is_some()
        || snap.unreadable().images.contains_key(namespace)
        || snap.unreadable().shares.contains_key(namespace)
        || snap
            .namespace(namespace)
            .is_some_and(|info| info.has_limit_annotation())
}

/// The quota status of an owner.
pub fn status(own: &OwnerEval) -> ImageQuotaStatus {
    let limits = &own.limits;
    let hard = QuotaHard {
        private_images: limits.private_images,
        shared_images: limits.shared_images,
        recipients_per_image: limits.recipients_per_image,
    };
    let used = QuotaUsed {
        private_images: own.private_images_used as i64,
        shared_images: own.shared_images_used as i64,
    };
    ImageQuotaStatus {
        summary: QuotaSummary {
            private_images: used_of(used.private_images, hard.private_images),
            shared_images: used_of(used.shared_images, hard.shared_images),
        },
        hard,
        used,
    }
}

fn used_of(used: i64, hard: Limit) -> String {
    if hard == UNLIMITED {
        format!("{used}/unlimited")
    } else {
        format!("{used}/{hard}")
    }
}

/// What to write for the ImageQuota of a namespace. Nothing is written into a namespace that
/// is leaving.
pub fn update(snap: &Snapshot, own: &OwnerEval, namespace: &str) -> QuotaUpdate {
    if snap.is_leaving(namespace) {
        return QuotaUpdate::Unchanged;
    }
    let existing = snap.quota(namespace);
    if !wanted(snap, namespace) {
        return match existing {
            Some(_) => QuotaUpdate::Delete,
            None => QuotaUpdate::Unchanged,
        };
    }
    let status = status(own);
    match existing {
        None => QuotaUpdate::Apply { create: true, status },
        Some(q) if q.status.as_ref() != Some(&status) => QuotaUpdate::Apply { create: false, status },
        Some(_) => QuotaUpdate::Unchanged,
    }
}
