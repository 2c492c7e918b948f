//! Per-tenant orchestration: everything to write for one namespace, as an owner (images,
//! shares, grants, quota) and as a recipient (acceptances, inbox), with the events to publish.

use std::sync::Arc;

use crate::api::{ImageOfferStatus, ImageShareStatus, PrivateImageStatus, ShareAcceptanceStatus};

use super::{
    evaluator::{Evaluator, TenantMemo, memoized},
    events::{EventSpec, EventType, Regarding, acceptance_events, image_events, offer_events, share_events},
    grants::Grant,
    owner::OwnerEval,
    quota::QuotaUpdate,
    snapshot::Snapshot,
    status::{StatusUpdate, acceptance_status, image_status, offer_status, share_status},
    vocabulary::{Action, EventReason, Kind},
    withdrawal::withdrawal_cause,
};

pub use super::status::MAX_LISTED_IMAGES;

/// Everything the controller must write for one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantOutcome {
    pub namespace: String,
    pub images: Vec<Arc<StatusUpdate<PrivateImageStatus>>>,
    pub shares: Vec<Arc<StatusUpdate<ImageShareStatus>>>,
    pub acceptances: Vec<Arc<StatusUpdate<ShareAcceptanceStatus>>>,
    /// The ImageOffers this namespace must hold, by owner (`name` is the owner).
    pub offers: Vec<Arc<StatusUpdate<ImageOfferStatus>>>,
    /// Owners whose ImageOffer this namespace holds but must not any more.
    pub withdrawn_offers: Vec<String>,
    /// The grants that must exist in this namespace (as an owner); any other managed grant
    /// here is pruned.
    pub grants: Arc<Vec<Grant>>,
    /// The namespace's ImageQuota.
    pub quota: QuotaUpdate,
    pub events: Vec<EventSpec>,
}

impl TenantOutcome {
    /// Number of writes this outcome needs, besides grants and events.
    pub fn writes(&self) -> usize {
        self.quota.writes()
            + self.images.iter().filter(|u| u.changed).count()
            + self.shares.iter().filter(|u| u.changed).count()
            + self.acceptances.iter().filter(|u| u.changed).count()
            + self.offers.iter().filter(|u| u.changed).count()
            + self.withdrawn_offers.len()
    }
}

impl Evaluator {
    /// Everything to write for one namespace.
    pub fn tenant(&mut self, snap: &Snapshot, namespace: &str) -> TenantOutcome {
        let own = self.owner(snap, namespace);
        let now = snap.now;
        let remember = self.remember_statuses;
        let mut old = self.tenants.remove(namespace).unwrap_or_default();
        let mut memo = TenantMemo::default();
        let mut out = TenantOutcome {
            namespace: namespace.to_string(),
            ..Default::default()
        };
        let namespace_regarding = Regarding {
            kind: Kind::Namespace,
            namespace: None,
            name: namespace.into(),
            uid: None,
        };
        for warning in &own.limits.invalid_annotations {
            out.events.push(EventSpec::new(
                &namespace_regarding,
                EventType::Warning,
                EventReason::InvalidLimitAnnotation.as_str(),
                Action::Configure,
                warning.clone(),
            ));
        }
        for entry in snap.images_in(namespace) {
            let update = memoized(
                &mut old.images,
                &mut memo.images,
                remember,
                &entry.name,
                &own,
                Some(&entry.object),
                now,
                &mut out.events,
                |events| {
                    let update = image_status(snap, &own, entry);
                    if update.changed {
                        let reason = own.images[&entry.name].reason.as_str();
                        let old = entry.object.status.as_ref();
                        image_events(events, &entry.regarding, old, &update.status, reason);
                    }
                    Some(update)
                },
            );
            out.images.extend(update);
        }
        for entry in snap.shares_in(namespace) {
            let update = memoized(
                &mut old.shares,
                &mut memo.shares,
                remember,
                &entry.name,
                &own,
                Some(&entry.object),
                now,
                &mut out.events,
                |events| {
                    let (update, reason) = share_status(snap, &own, entry);
                    if update.changed {
                        let old = entry.object.status.as_ref();
                        share_events(events, &entry.regarding, old, &update.status, reason);
                    }
                    Some(update)
                },
            );
            out.shares.extend(update);
        }
        out.grants = self.grants(snap, namespace);
        out.quota = super::quota::update(snap, &own, namespace);
        for entry in snap.acceptances_in(namespace) {
            // An acceptance by ownerSelector reads every owner it matches: it is evaluated
            // each time rather than remembered against one owner's evaluation.
            // One owner named, or those the selector matches (no list built for the one).
            let named: [Arc<OwnerEval>; 1];
            let matched: Vec<Arc<OwnerEval>>;
            let (owners, remember_this): (&[Arc<OwnerEval>], bool) = match &entry.object.spec.owner_selector {
                None => {
                    named = [self.owner(snap, &entry.object.spec.owner)];
                    (&named, remember)
                }
                Some(selector) => {
                    let matching: Vec<&str> = snap
                        .owners_offering(namespace)
                        .into_iter()
                        .filter(|owner| super::selector::matches(selector, snap.labels_of(owner)))
                        .collect();
                    matched = matching.into_iter().map(|o| self.owner(snap, o)).collect();
                    (&matched, false)
                }
            };
            let key_owner = owners.first().cloned().unwrap_or_else(|| own.clone());
            let update = memoized(
                &mut old.acceptances,
                &mut memo.acceptances,
                remember_this,
                &entry.name,
                &key_owner,
                Some(&entry.object),
                now,
                &mut out.events,
                |events| {
                    let (update, reason) = acceptance_status(snap, owners, entry);
                    if update.changed {
                        let old = entry.object.status.as_ref();
                        acceptance_events(events, &entry.regarding, old, &update.status, reason);
                    }
                    Some(update)
                },
            );
            out.acceptances.extend(update);
        }
        // The namespace's name, shared by the events about ImageOffers not written yet.
        let namespace_name: Arc<str> = namespace.into();
        for owner_name in snap.owners_offering(namespace) {
            let owner = self.owner(snap, owner_name);
            let current = snap.offer(namespace, owner_name);
            let key: Arc<str> = owner_name.into();
            let update = memoized(
                &mut old.offers,
                &mut memo.offers,
                remember,
                &key,
                &owner,
                current,
                now,
                &mut out.events,
                |events| {
                    let update = offer_status(snap, &owner, namespace, current.map(|o| &**o));
                    let old_status = current.and_then(|o| o.status.as_ref());
                    let new_status = update.as_ref().map(|u| &u.status);
                    if old_status != new_status {
                        let regarding = match current {
                            Some(o) => Regarding::object(Kind::ImageOffer, &o.metadata),
                            None => Regarding {
                                kind: Kind::ImageOffer,
                                namespace: Some(namespace_name.clone()),
                                name: key.clone(),
                                uid: None,
                            },
                        };
                        let why = |image: &str| withdrawal_cause(snap, &owner, image, namespace);
                        let deciding =
                            |acceptance: &str| snap.acceptance(namespace, acceptance).map(|e| e.regarding.clone());
                        offer_events(events, &regarding, owner_name, old_status, new_status, &why, &deciding);
                    }
                    update
                },
            );
            match update {
                Some(update) => out.offers.push(update),
                None if current.is_some() => out.withdrawn_offers.push(owner_name.to_string()),
                None => {}
            }
        }
        if memo.is_empty() {
            self.forget_tenant(namespace);
        } else {
            self.tenants.insert(namespace.to_string(), memo);
        }
        out
    }
}
