//! The evaluator's memory: owner evaluations and statuses, kept while what they were computed
//! from is unchanged, so that one changed object re-evaluates only what it touches. The
//! snapshot stays plain data; this is the only place that caches.

use std::{hash::Hash, sync::Arc};

use foldhash::HashMap;
use k8s_openapi::jiff::Timestamp;

use super::{
    events::EventSpec,
    grants::Grant,
    owner::{OwnerEval, evaluate_owner},
    snapshot::Snapshot,
    status::{StatusUpdate, grants},
};
use crate::api::{
    ImageOffer, ImageOfferStatus, ImageShare, ImageShareStatus, PrivateImage, PrivateImageStatus, ShareAcceptance,
    ShareAcceptanceStatus,
};

/// Evaluates tenants, remembering what it computed (see the module docs). One evaluator goes
/// with one snapshot: everything it remembers is checked against the snapshot's revisions
/// and objects before it is used again.
#[derive(Debug)]
pub struct Evaluator {
    owners: HashMap<String, CachedOwner>,
    pub(crate) tenants: HashMap<String, TenantMemo>,
    /// Whether statuses are remembered for the next evaluation of their tenant; a one-shot
    /// evaluation of every tenant has no next one.
    pub(crate) remember_statuses: bool,
}

impl Default for Evaluator {
    fn default() -> Self {
        Evaluator {
            owners: HashMap::default(),
            tenants: HashMap::default(),
            remember_statuses: true,
        }
    }
}

#[derive(Debug)]
struct CachedOwner {
    revision: (u64, u64),
    eval: Arc<OwnerEval>,
    grants: Option<Arc<Vec<Grant>>>,
}

/// What a status was computed from and what it came to.
#[derive(Debug)]
pub(crate) struct Memoized<K, S> {
    owner: Arc<OwnerEval>,
    input: Option<Arc<K>>,
    now: Timestamp,
    pub(crate) update: Option<Arc<StatusUpdate<S>>>,
    pub(crate) events: Arc<[EventSpec]>,
}

/// The statuses of one tenant's objects, by name (ImageOffers by owner).
#[derive(Debug, Default)]
pub(crate) struct TenantMemo {
    pub(crate) images: HashMap<Arc<str>, Memoized<PrivateImage, PrivateImageStatus>>,
    pub(crate) shares: HashMap<Arc<str>, Memoized<ImageShare, ImageShareStatus>>,
    pub(crate) acceptances: HashMap<Arc<str>, Memoized<ShareAcceptance, ShareAcceptanceStatus>>,
    pub(crate) offers: HashMap<Arc<str>, Memoized<ImageOffer, ImageOfferStatus>>,
}

impl TenantMemo {
    pub(crate) fn is_empty(&self) -> bool {
        self.images.is_empty() && self.shares.is_empty() && self.acceptances.is_empty() && self.offers.is_empty()
    }
}

/// Reuses the memoized status of `key` from `old` when the owner's evaluation and the input
/// object are the very same values — and, when the status differs from the current one (so
/// new transition times are stamped), the same `now` — or computes it; either way records it
/// in `new` (unless nothing is to be remembered). Entries not carried over are thereby
/// forgotten. The events it needs are added to `events`; `compute` adds them there too.
#[allow(clippy::too_many_arguments)]
pub(crate) fn memoized<Key: Eq + Hash + Clone, K, S>(
    old: &mut HashMap<Key, Memoized<K, S>>,
    new: &mut HashMap<Key, Memoized<K, S>>,
    remember: bool,
    key: &Key,
    owner: &Arc<OwnerEval>,
    input: Option<&Arc<K>>,
    now: Timestamp,
    events: &mut Vec<EventSpec>,
    compute: impl FnOnce(&mut Vec<EventSpec>) -> Option<StatusUpdate<S>>,
) -> Option<Arc<StatusUpdate<S>>> {
    if !remember {
        return compute(events).map(Arc::new);
    }
    let reusable = old.remove(key).filter(|m| {
        Arc::ptr_eq(&m.owner, owner)
            && match (&m.input, input) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && (m.now == now || !m.update.as_ref().is_some_and(|u| u.changed))
    });
    let memo = match reusable {
        Some(m) => {
            events.extend_from_slice(&m.events);
            m
        }
        None => {
            let start = events.len();
            let update = compute(events);
            Memoized {
                owner: owner.clone(),
                input: input.cloned(),
                now,
                update: update.map(Arc::new),
                events: events[start..].into(),
            }
        }
    };
    let update = memo.update.clone();
    new.insert(key.clone(), memo);
    update
}

impl Evaluator {
    pub fn new() -> Self {
        Evaluator::default()
    }

    /// An evaluator for one pass over the tenants (`simulate`, a full evaluation): owner
    /// evaluations are shared between tenants, statuses are not kept for a next pass.
    pub fn one_shot() -> Self {
        Evaluator {
            remember_statuses: false,
            ..Evaluator::default()
        }
    }

    /// The owner-side evaluation of a namespace, from memory while no change touched it.
    pub fn owner(&mut self, snap: &Snapshot, owner: &str) -> Arc<OwnerEval> {
        let revision = snap.revision(owner);
        if let Some(cached) = self.owners.get(owner)
            && cached.revision == revision
            && cached.eval.holds_at(snap.now)
        {
            return cached.eval.clone();
        }
        let eval = Arc::new(evaluate_owner(snap, owner));
        self.owners.insert(
            owner.to_string(),
            CachedOwner {
                revision,
                eval: eval.clone(),
                grants: None,
            },
        );
        eval
    }

    /// The grants an owner's accepted pairs need, built once per evaluation of the owner.
    pub fn grants(&mut self, snap: &Snapshot, owner: &str) -> Arc<Vec<Grant>> {
        let eval = self.owner(snap, owner);
        let cached = self.owners.get_mut(owner).expect("evaluated just now");
        cached
            .grants
            .get_or_insert_with(|| Arc::new(grants(snap, &eval)))
            .clone()
    }

    /// Forgets what it remembers of a namespace that has nothing left to evaluate.
    pub(crate) fn forget_tenant(&mut self, namespace: &str) {
        self.tenants.remove(namespace);
        if let Some(cached) = self.owners.get(namespace)
            && cached.eval.images.is_empty()
            && cached.eval.by_recipient.is_empty()
        {
            self.owners.remove(namespace);
        }
    }
}
