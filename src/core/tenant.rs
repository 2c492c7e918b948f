//! Per-tenant evaluation: the desired status of every object in one namespace, its grants and
//! the events to publish.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::{
    AcceptedSource, ImageShare, ImageShareStatus, PrivateImage, PrivateImageStatus, ReceivedImage, RecipientCounts,
    ShareAcceptance, ShareAcceptanceStatus, ShareState, SharedImageStatus,
};

use super::{
    conditions::{condition, name_list, ready_conditions},
    events::{EventSpec, EventType, Regarding, acceptance_events, image_events, share_events},
    grants::{Grant, build_grant},
    limits::describe,
    owner::{OwnerEval, Refusal, is_expired},
    quota::QuotaUpdate,
    snapshot::{Entry, Snapshot},
};

/// The most images a ShareAcceptance status lists (see README.md).
pub const MAX_RECEIVED_IMAGES: usize = 1000;
/// The serialized size the listed images may take. 1,000 entries with the longest allowed
/// URLs and names would come to about 3 MB, twice what etcd stores in one object; the list
/// stops earlier then, and `moreImages` counts the rest.
pub const MAX_RECEIVED_BYTES: usize = 768 * 1024;
/// Serialized size of an entry besides its variable strings (keys, enums, time, counts).
const RECEIVED_ENTRY_OVERHEAD: usize = 320;

/// Reasons of a ShareAcceptance's Ready condition and of its image entries.
pub mod acceptance_reason {
    pub const APPLIED: &str = "Applied";
    pub const NOTHING_OFFERED: &str = "NothingOffered";
    pub const CONFLICT: &str = "Conflict";
    pub const NO_DECISION: &str = "NoDecision";
    pub const THIS_ACCEPTANCE: &str = "ThisAcceptance";
    pub const NAMED_ACCEPTANCE: &str = "NamedAcceptance";
    pub const OTHER_ACCEPTANCE: &str = "OtherAcceptance";
    /// Would be Accepted, but this namespace holds a ShareAcceptance the operator can not
    /// read, which might refuse it: the pair keeps its state until that one is fixed.
    pub const UNREADABLE_ACCEPTANCE: &str = "UnreadableAcceptance";
}

/// Memoized evaluations of one kind. An entry is reused while the object and its owner's
/// evaluation are the very same (pointer-equal) values, and — when the status differs from
/// the current one, so that new transition times are stamped — the same `now`.
#[derive(Debug)]
pub(crate) struct Memo<K, S>(std::sync::Mutex<std::collections::HashMap<(String, String), MemoEntry<K, S>>>);

impl<K, S> Default for Memo<K, S> {
    fn default() -> Self {
        Memo(std::sync::Mutex::default())
    }
}

type MemoValue<S> = (Arc<StatusUpdate<S>>, Arc<Vec<EventSpec>>);

#[derive(Debug)]
pub(crate) struct MemoEntry<K, S> {
    owner: Arc<OwnerEval>,
    object: Arc<K>,
    now: k8s_openapi::jiff::Timestamp,
    value: MemoValue<S>,
}

/// The memos of the three kinds, kept in the snapshot.
#[derive(Debug, Default)]
pub(crate) struct Memos {
    pub(crate) images: Memo<PrivateImage, PrivateImageStatus>,
    pub(crate) shares: Memo<ImageShare, ImageShareStatus>,
    pub(crate) acceptances: Memo<ShareAcceptance, ShareAcceptanceStatus>,
}

impl<K: kube::Resource, S> Memo<K, S> {
    fn get_or_insert(
        &self,
        snap: &Snapshot,
        owner: &Arc<OwnerEval>,
        entry: &Entry<K>,
        compute: impl FnOnce() -> (StatusUpdate<S>, Vec<EventSpec>),
    ) -> MemoValue<S> {
        let key = (entry.object.namespace().unwrap_or_default(), entry.object.name_any());
        if let Some(hit) = self.lock().get(&key)
            && Arc::ptr_eq(&hit.owner, owner)
            && Arc::ptr_eq(&hit.object, &entry.object)
            && (!hit.value.0.changed || hit.now == snap.now)
        {
            return (hit.value.0.clone(), hit.value.1.clone());
        }
        let (update, events) = compute();
        let value = (Arc::new(update), Arc::new(events));
        let memo = MemoEntry {
            owner: owner.clone(),
            object: entry.object.clone(),
            now: snap.now,
            value: (value.0.clone(), value.1.clone()),
        };
        self.lock().insert(key, memo);
        value
    }

    pub(crate) fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_string(), name.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), MemoEntry<K, S>>> {
        // Entries are whole values; a panic elsewhere can not leave one half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reason of an ImageShare whose every pair is offered.
pub const ALL_OFFERED: &str = "AllOffered";
/// Condition of a PrivateImage with accepted recipients: whether its grant is in place.
pub const ACCESS_GRANTED: &str = "AccessGranted";
/// Reason of a True AccessGranted condition.
pub const GRANTED: &str = "Granted";

/// A desired status and whether it differs from the current one.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate<S> {
    pub name: String,
    pub status: S,
    pub changed: bool,
}

/// Everything the controller must write for one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantOutcome {
    pub namespace: String,
    pub images: Vec<Arc<StatusUpdate<PrivateImageStatus>>>,
    pub shares: Vec<Arc<StatusUpdate<ImageShareStatus>>>,
    pub acceptances: Vec<Arc<StatusUpdate<ShareAcceptanceStatus>>>,
    /// The grants that must exist in this namespace (as an owner); any other managed grant
    /// here is pruned.
    pub grants: Arc<Vec<Grant>>,
    /// The namespace's ImageQuota.
    pub quota: QuotaUpdate,
    pub events: Vec<EventSpec>,
}

impl TenantOutcome {
    /// Number of status and quota writes this outcome needs.
    pub fn writes(&self) -> usize {
        self.quota.writes()
            + self.images.iter().filter(|u| u.changed).count()
            + self.shares.iter().filter(|u| u.changed).count()
            + self.acceptances.iter().filter(|u| u.changed).count()
    }
}

/// Evaluates tenants; owner evaluations come from the snapshot's cache.
pub struct Evaluator<'a> {
    snap: &'a Snapshot,
}

impl<'a> Evaluator<'a> {
    pub fn new(snap: &'a Snapshot) -> Self {
        Evaluator { snap }
    }

    /// The owner-side evaluation of a namespace.
    pub fn owner(&mut self, owner: &str) -> Arc<OwnerEval> {
        self.snap.owner_eval(owner)
    }

    /// Everything to write for one namespace: as an owner (images, shares, grants) and as a
    /// recipient (acceptances).
    pub fn tenant(&mut self, namespace: &str) -> TenantOutcome {
        let snap = self.snap;
        let own = self.owner(namespace);
        let mut out = TenantOutcome {
            namespace: namespace.to_string(),
            ..Default::default()
        };
        for warning in &own.limits.invalid_annotations {
            let regarding = Regarding {
                kind: "Namespace",
                namespace: None,
                name: namespace.into(),
                uid: None,
            };
            out.events.push(EventSpec::new(
                &regarding,
                EventType::Warning,
                "InvalidLimitAnnotation",
                "Configure",
                warning.clone(),
            ));
        }
        // Statuses (shared with the snapshot's memos: an object whose inputs did not change is
        // not evaluated again).
        for entry in snap.images_in(namespace) {
            let (update, events) = snap.memos.images.get_or_insert(snap, &own, entry, || {
                let update = image_status(snap, &own, entry);
                let mut events = Vec::new();
                if update.changed {
                    let regarding = regarding("PrivateImage", entry.object.as_ref());
                    events = image_events(&regarding, entry.object.status.as_ref(), &update.status);
                }
                (update, events)
            });
            out.events.extend(events.iter().cloned());
            out.images.push(update);
        }
        for entry in snap.shares_in(namespace) {
            let (update, events) = snap.memos.shares.get_or_insert(snap, &own, entry, || {
                let update = share_status(snap, &own, entry);
                let mut events = Vec::new();
                if update.changed {
                    let regarding = regarding("ImageShare", entry.object.as_ref());
                    events = share_events(&regarding, entry.object.status.as_ref(), &update.status);
                }
                (update, events)
            });
            out.events.extend(events.iter().cloned());
            out.shares.push(update);
        }
        out.grants = own.grants.get_or_init(|| Arc::new(grants(snap, &own))).clone();
        out.quota = super::quota::update(snap, &own, namespace);
        for entry in snap.acceptances_in(namespace) {
            let owner = self.owner(&entry.object.spec.owner);
            let (update, events) = snap.memos.acceptances.get_or_insert(snap, &owner, entry, || {
                let update = acceptance_status(snap, &owner, entry);
                let mut events = Vec::new();
                if update.changed {
                    let regarding = regarding("ShareAcceptance", entry.object.as_ref());
                    let why = |image: &str| withdrawal_cause(snap, &owner, image, namespace);
                    events = acceptance_events(
                        &regarding,
                        &owner.owner,
                        entry.object.status.as_ref(),
                        &update.status,
                        &why,
                    );
                }
                (update, events)
            });
            out.events.extend(events.iter().cloned());
            out.acceptances.push(update);
        }
        out
    }
}

fn regarding<K: kube::Resource>(kind: &'static str, obj: &K) -> Regarding {
    Regarding {
        kind,
        namespace: obj.namespace(),
        name: obj.name_any(),
        uid: obj.uid(),
    }
}

fn image_status(snap: &Snapshot, own: &OwnerEval, entry: &Entry<PrivateImage>) -> StatusUpdate<PrivateImageStatus> {
    let image = &entry.object;
    let name = image.name_any();
    let previous = image.status.as_ref();
    let verdict = &own.images[&name];
    let mut recipients = RecipientCounts::default();
    for pair in own.offered.get(&name).into_iter().flat_map(|m| m.values()) {
        match pair.state {
            ShareState::Pending => recipients.pending += 1,
            ShareState::Accepted => recipients.accepted += 1,
            ShareState::Rejected => recipients.rejected += 1,
            ShareState::Removed => recipients.removed += 1,
        }
    }
    let generation = image.metadata.generation;
    let previous_conditions = previous.map(|s| s.conditions.as_slice());
    let mut conditions = ready_conditions(
        previous_conditions,
        verdict.ready,
        verdict.reason,
        verdict.message.clone(),
        generation,
        snap.now,
    );
    if recipients.accepted > 0 {
        // Whether the accepted recipients can use it: the grant may be blocked.
        let (granted, reason, message) = match snap.grant_fault(&own.owner, &name) {
            Some(fault) => (false, fault.reason.as_str(), fault.message.clone()),
            None => (
                true,
                GRANTED,
                format!(
                    "Role and RoleBinding {} let the {} accepted recipient(s) use the image",
                    super::grants::grant_name(&name),
                    recipients.accepted
                ),
            ),
        };
        conditions.push(condition(
            previous_conditions.unwrap_or_default(),
            ACCESS_GRANTED,
            granted,
            reason,
            message,
            generation,
            snap.now,
        ));
    }
    let status = PrivateImageStatus {
        observed_generation: generation,
        conditions,
        recipients,
    };
    let changed = previous != Some(&status);
    StatusUpdate { name, status, changed }
}

fn share_status(snap: &Snapshot, own: &OwnerEval, entry: &Entry<ImageShare>) -> StatusUpdate<ImageShareStatus> {
    let share = &entry.object;
    let mut images = Vec::with_capacity(share.spec.images.len());
    // reason -> image -> recipients not offered
    let mut refused: BTreeMap<Refusal, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    let (mut offered, mut accepted) = (0, 0);
    for image in &share.spec.images {
        let mut entry = SharedImageStatus {
            name: image.clone(),
            ..Default::default()
        };
        for recipient in &share.spec.recipients {
            match own.refusal(snap, share, image, recipient) {
                Some(reason) => refused
                    .entry(reason)
                    .or_default()
                    .entry(image)
                    .or_default()
                    .push(recipient),
                None => {
                    let state = own
                        .pair(image, recipient)
                        .map(|p| p.state)
                        .unwrap_or(ShareState::Pending);
                    offered += 1;
                    let list = match state {
                        ShareState::Pending => &mut entry.pending,
                        ShareState::Accepted => {
                            accepted += 1;
                            &mut entry.accepted
                        }
                        ShareState::Rejected => &mut entry.rejected,
                        ShareState::Removed => &mut entry.removed,
                    };
                    list.push(recipient.clone());
                }
            }
        }
        for list in [
            &mut entry.pending,
            &mut entry.accepted,
            &mut entry.rejected,
            &mut entry.removed,
        ] {
            list.sort();
        }
        images.push(entry);
    }
    let (ready, reason, message) = match refused.keys().next() {
        None => (true, ALL_OFFERED, format!("{offered} (image, recipient) pairs offered")),
        Some(first) => (false, first.as_str(), refusal_message(share, own, &refused)),
    };
    let previous = share.status.as_ref();
    let generation = share.metadata.generation;
    let status = ImageShareStatus {
        observed_generation: generation,
        conditions: ready_conditions(
            previous.map(|s| s.conditions.as_slice()),
            ready,
            reason,
            message,
            generation,
            snap.now,
        ),
        images,
        offered,
        accepted,
    };
    let changed = previous != Some(&status);
    StatusUpdate {
        name: share.name_any(),
        status,
        changed,
    }
}

fn refusal_message(
    share: &ImageShare,
    own: &OwnerEval,
    refused: &BTreeMap<Refusal, BTreeMap<&str, Vec<&str>>>,
) -> String {
    let mut parts = Vec::new();
    for (reason, by_image) in refused {
        let detail = match reason {
            Refusal::Expired => format!(
                "the share expired at {}",
                share
                    .spec
                    .expires_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            ),
            Refusal::SharedImageLimitExceeded => {
                format!("limit {} shared images per tenant", describe(own.limits.shared_images))
            }
            Refusal::RecipientLimitExceeded => {
                format!(
                    "limit {} recipients per image",
                    describe(own.limits.recipients_per_image)
                )
            }
            _ => String::new(),
        };
        let pairs: Vec<String> = by_image
            .iter()
            .map(|(image, recipients)| format!("{image} → {}", name_list(recipients.iter().copied(), 10)))
            .collect();
        let pairs = name_list(pairs.iter().map(String::as_str), 10);
        if detail.is_empty() {
            parts.push(format!("{}: {pairs}", reason.as_str()));
        } else {
            parts.push(format!("{} ({detail}): {pairs}", reason.as_str()));
        }
    }
    format!("not offered: {}", parts.join("; "))
}

fn grants(snap: &Snapshot, own: &OwnerEval) -> Vec<Grant> {
    let mut out = Vec::new();
    for (image, pairs) in &own.offered {
        let accepted: Vec<&str> = pairs
            .iter()
            .filter(|(_, p)| p.state == ShareState::Accepted)
            .map(|(r, _)| r.as_str())
            .collect();
        if accepted.is_empty() {
            continue;
        }
        if let Some(entry) = snap.image(&own.owner, image) {
            out.push(build_grant(snap, &entry.object, &accepted));
        }
    }
    out
}

fn acceptance_status(
    snap: &Snapshot,
    owner: &OwnerEval,
    entry: &Entry<ShareAcceptance>,
) -> StatusUpdate<ShareAcceptanceStatus> {
    use acceptance_reason::*;
    let acceptance = &entry.object;
    let namespace = acceptance.namespace().unwrap_or_default();
    let name = acceptance.name_any();
    let spec = &acceptance.spec;
    let previous = acceptance.status.as_ref();
    // The previous list is sorted by name, like the new one.
    let previous_images: &[ReceivedImage] = previous.map(|s| s.images.as_slice()).unwrap_or_default();

    let mut covered = 0usize;
    let mut conflicts: Vec<String> = Vec::new();
    let mut images = Vec::new();
    let mut more_images = 0;
    let mut listed_bytes = 0usize;
    for (image, pair) in owner.offered_to(&namespace) {
        let named = spec.images.iter().any(|i| i == image);
        let covers = named || spec.images.is_empty();
        let reason = match &pair.winner {
            _ if pair.withheld => UNREADABLE_ACCEPTANCE,
            None => NO_DECISION,
            Some(_) if !covers => OTHER_ACCEPTANCE,
            Some(w) if w.named && !named => NAMED_ACCEPTANCE,
            Some(w) if w.decision != spec.decision => {
                conflicts.push(format!(
                    "{image}: {} of ShareAcceptance {} overrides {}",
                    w.decision.as_str(),
                    w.acceptance,
                    spec.decision.as_str()
                ));
                CONFLICT
            }
            Some(_) => THIS_ACCEPTANCE,
        };
        if covers {
            covered += 1;
        }
        if images.len() >= MAX_RECEIVED_IMAGES || listed_bytes >= MAX_RECEIVED_BYTES {
            more_images += 1;
            continue;
        }
        let Some(source_image) = snap.image(&owner.owner, image) else {
            continue;
        };
        let spec_of = &source_image.object.spec;
        let entry_bytes = RECEIVED_ENTRY_OVERHEAD
            + image.len()
            + owner.owner.len()
            + pair.winner.as_ref().map_or(0, |w| w.acceptance.len())
            + spec_of.display_name.as_ref().map_or(0, String::len)
            + spec_of.os_version.as_ref().map_or(0, String::len)
            + spec_of.source.file.as_ref().map_or(0, |f| f.url.len())
            + spec_of
                .source
                .volume
                .as_ref()
                .map_or(0, |v| v.persistent_volume_claim.len())
            + spec_of.source.server.as_ref().map_or(0, |v| v.name.len());
        if listed_bytes + entry_bytes > MAX_RECEIVED_BYTES {
            listed_bytes = MAX_RECEIVED_BYTES;
            more_images += 1;
            continue;
        }
        listed_bytes += entry_bytes;
        let previous_entry = previous_images
            .binary_search_by(|p| p.name.as_str().cmp(image))
            .ok()
            .map(|i| &previous_images[i]);
        let last_transition_time = match previous_entry {
            Some(prev) if prev.state == pair.state => prev.last_transition_time.clone(),
            _ => Some(Time(snap.now)),
        };
        let source = (pair.state == ShareState::Accepted).then(|| AcceptedSource {
            namespace: owner.owner.clone(),
            file: spec_of.source.file.as_ref().map(Into::into),
            persistent_volume_claim: spec_of
                .source
                .volume
                .as_ref()
                .map(|v| v.persistent_volume_claim.clone()),
            virtual_machine: spec_of.source.server.as_ref().map(|s| s.name.clone()),
        });
        images.push(ReceivedImage {
            name: image.clone(),
            state: pair.state,
            reason: reason.into(),
            decided_by: pair.winner.as_ref().map(|w| w.acceptance.clone()),
            last_transition_time,
            display_name: spec_of.display_name.clone(),
            image_type: spec_of.image_type,
            os_type: spec_of.os_type,
            os_version: spec_of.os_version.clone(),
            architecture: spec_of.architecture,
            disk_size_gib: spec_of.disk_size_gib,
            source,
        });
    }
    let (ready, reason, message) = if !conflicts.is_empty() {
        (
            false,
            CONFLICT,
            format!(
                "overridden by an equally specific decision: {}",
                name_list(conflicts.iter().map(String::as_str), 10)
            ),
        )
    } else if covered > 0 {
        (
            true,
            APPLIED,
            format!(
                "{} covers {covered} image(s) offered by {}",
                spec.decision.as_str(),
                owner.owner
            ),
        )
    } else if owner.owner == namespace {
        (
            false,
            NOTHING_OFFERED,
            "spec.owner is this namespace; a tenant can not share images with itself".into(),
        )
    } else if spec.images.is_empty() {
        (
            false,
            NOTHING_OFFERED,
            format!("{} offers no images to namespace {namespace}", owner.owner),
        )
    } else {
        (
            false,
            NOTHING_OFFERED,
            format!(
                "{} offers none of {} to namespace {namespace}",
                owner.owner,
                name_list(spec.images.iter().map(String::as_str), 10)
            ),
        )
    };
    let generation = acceptance.metadata.generation;
    let status = ShareAcceptanceStatus {
        observed_generation: generation,
        conditions: ready_conditions(
            previous.map(|s| s.conditions.as_slice()),
            ready,
            reason,
            message,
            generation,
            snap.now,
        ),
        images,
        more_images,
    };
    let changed = previous != Some(&status);
    StatusUpdate { name, status, changed }
}

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
fn withdrawal_cause(snap: &Snapshot, owner: &OwnerEval, image: &str, recipient: &str) -> String {
    if owner.pair(image, recipient).is_some() {
        return String::new();
    }
    if snap.is_leaving(&owner.owner) {
        return "the owner's namespace is being deleted".into();
    }
    let listing: Vec<&Entry<ImageShare>> = snap
        .shares_in(&owner.owner)
        .filter(|s| {
            s.object.spec.images.iter().any(|i| i == image) && s.object.spec.recipients.iter().any(|r| r == recipient)
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
            .any(|i| i.name == image && i.recipients().any(|r| r == recipient))
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
