//! The operator's watch caches: every watched object, indexed by namespace in a
//! [`Snapshot`](crate::core::Snapshot), kept current from watcher streams. A reconcile reads
//! only from here, never lists, and each change names the tenants it affects.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, PersistentVolumeClaim},
        rbac::v1::{Role, RoleBinding},
    },
    jiff::Timestamp,
};
use kube::{ResourceExt, core::DynamicObject};

use super::guard::Salvaged;
use crate::{
    api::{ImageOffer, ImageQuota, ImageShare, PrivateImage, ShareAcceptance},
    config::Config,
    core::{self, MachineInfo, NamespaceInfo, Snapshot, TenantOutcome, VolumeState, World},
};

/// Grants the operator manages, as currently stored in the cluster.
#[derive(Clone, Debug, Default)]
pub struct ExistingGrants {
    pub roles: BTreeMap<String, Arc<Role>>,
    pub bindings: BTreeMap<String, Arc<RoleBinding>>,
}

/// Shared watch caches.
pub struct Cache {
    snapshot: Mutex<Snapshot>,
    /// Remembers evaluations between reconciles; locked only while the snapshot is.
    evaluator: Mutex<core::Evaluator>,
    roles: Mutex<HashMap<String, BTreeMap<String, Arc<Role>>>>,
    bindings: Mutex<HashMap<String, BTreeMap<String, Arc<RoleBinding>>>>,
    synced: AtomicUsize,
    /// How many feeds must have listed once before the cache is ready (set by whoever starts
    /// them, from the list it starts).
    feeds: AtomicUsize,
    /// Status writes not yet seen by the watches, by namespace: (resourceVersion, when).
    pending_writes: Mutex<HashMap<String, Vec<(String, std::time::Instant)>>>,
    /// Versions the watches brought back recently, by namespace: a watch event can arrive
    /// before the response of the write that caused it.
    recently_seen: Mutex<HashMap<String, Vec<(String, std::time::Instant)>>>,
    /// Objects whose current version does not decode, by kind: (namespace, name).
    unreadable: Mutex<HashMap<&'static str, BTreeSet<(String, String)>>>,
}

/// How long a reconcile waits for the watch to bring back the operator's own status writes
/// (a relist may skip a version, so the wait is bounded).
pub const WRITE_ECHO_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock can only come from a bug in pure code; the data itself
    // is still a consistent cache, so keep serving it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Cache {
    pub fn new(config: Config, kubevirt: bool) -> Result<Self, crate::config::ConfigError> {
        let snapshot = Snapshot::new(config, World::Cluster { kubevirt }, Timestamp::now())?;
        Ok(Cache {
            snapshot: Mutex::new(snapshot),
            evaluator: Mutex::default(),
            roles: Mutex::default(),
            bindings: Mutex::default(),
            synced: AtomicUsize::new(0),
            feeds: AtomicUsize::new(usize::MAX),
            pending_writes: Mutex::default(),
            recently_seen: Mutex::default(),
            unreadable: Mutex::default(),
        })
    }

    /// Sets how many feeds fill the cache.
    pub fn expect_feeds(&self, feeds: usize) {
        self.feeds.store(feeds, Ordering::SeqCst);
    }

    /// Marks one feed as having completed its initial list.
    pub fn mark_synced(&self) {
        self.synced.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every feed has listed at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst) >= self.feeds.load(Ordering::SeqCst)
    }

    /// Remembers status writes of a namespace until the watches bring them back.
    pub fn expect_writes(&self, namespace: &str, resource_versions: Vec<String>) {
        if resource_versions.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let mut seen = lock(&self.recently_seen);
        let already: Vec<String> = seen
            .get(namespace)
            .map(|l| l.iter().map(|(rv, _)| rv.clone()).collect())
            .unwrap_or_default();
        let mut pending = lock(&self.pending_writes);
        for rv in resource_versions {
            if already.contains(&rv) {
                continue;
            }
            pending.entry(namespace.to_string()).or_default().push((rv, now));
        }
        if let Some(list) = seen.get_mut(namespace) {
            list.retain(|(_, at)| at.elapsed() < WRITE_ECHO_WAIT);
        }
    }

    /// A watch brought back an object version.
    pub fn observed(&self, namespace: &str, resource_version: Option<&str>) {
        let Some(rv) = resource_version else { return };
        let mut seen = lock(&self.recently_seen);
        let list = seen.entry(namespace.to_string()).or_default();
        list.retain(|(_, at)| at.elapsed() < WRITE_ECHO_WAIT);
        list.push((rv.to_string(), std::time::Instant::now()));
        drop(seen);
        let mut pending = lock(&self.pending_writes);
        if let Some(list) = pending.get_mut(namespace) {
            list.retain(|(written, _)| written != rv);
            if list.is_empty() {
                pending.remove(namespace);
            }
        }
    }

    /// Whether the cache still lacks a recent status write of the namespace. Evaluating then
    /// would see the old status and write the same transition again with a newer time.
    pub fn awaiting_writes(&self, namespace: &str) -> bool {
        let mut pending = lock(&self.pending_writes);
        let Some(list) = pending.get_mut(namespace) else {
            return false;
        };
        list.retain(|(_, at)| at.elapsed() < WRITE_ECHO_WAIT);
        if list.is_empty() {
            pending.remove(namespace);
            return false;
        }
        true
    }

    /// Records that the current version of an object does not decode (`Some`), with what the
    /// engine should keep of it when no earlier version was decoded (`Some(Some(..))`), or that
    /// it decodes again or is gone (`None`). Returns whether anything changed.
    pub fn set_unreadable(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        unreadable: Option<Option<Salvaged>>,
    ) -> bool {
        let key = (namespace.to_string(), name.to_string());
        let mut all = lock(&self.unreadable);
        let set = all.entry(kind).or_default();
        let changed = match &unreadable {
            Some(_) => set.insert(key),
            None => set.remove(&key),
        };
        drop(all);
        let mut snap = lock(&self.snapshot);
        match unreadable {
            Some(Some(Salvaged::Image(status))) => snap.set_unreadable_image(namespace, name, Some(status)),
            Some(Some(Salvaged::Share(status))) => snap.set_unreadable_share(namespace, name, Some(status)),
            Some(Some(Salvaged::Acceptance)) => snap.set_unreadable_acceptance(namespace, name, true),
            Some(None) => {}
            None => match kind {
                "PrivateImage" => snap.set_unreadable_image(namespace, name, None),
                "ImageShare" => snap.set_unreadable_share(namespace, name, None),
                "ShareAcceptance" => snap.set_unreadable_acceptance(namespace, name, false),
                _ => {}
            },
        }
        changed
    }

    /// How many objects of a kind do not decode.
    pub fn unreadable_count(&self, kind: &'static str) -> usize {
        lock(&self.unreadable).get(kind).map_or(0, BTreeSet::len)
    }

    /// The objects of a kind that do not decode.
    pub fn unreadable_keys(&self, kind: &'static str) -> BTreeSet<(String, String)> {
        lock(&self.unreadable).get(kind).cloned().unwrap_or_default()
    }

    /// Whether the current version of an object does not decode. Its status is not written:
    /// the engine judges it by an older version, and the write would come back unreadable.
    pub fn is_unreadable(&self, kind: &'static str, namespace: &str, name: &str) -> bool {
        lock(&self.unreadable)
            .get(kind)
            .is_some_and(|s| s.contains(&(namespace.to_string(), name.to_string())))
    }

    /// The tenants an unreadable object of a namespace may matter to: the namespace, and for
    /// an acceptance (whose owner is unknown) every owner that shares with it.
    pub fn touched_by_unreadable(&self, kind: &'static str, namespace: &str) -> BTreeSet<String> {
        let snap = lock(&self.snapshot);
        let mut out = with_partners(&snap, namespace);
        match kind {
            "ShareAcceptance" => out.extend(owners_sharing_with(&snap, namespace)),
            // The recipients an unreadable share's salvaged status records.
            "ImageShare" => out.extend(
                snap.unreadable()
                    .shares
                    .get(namespace)
                    .into_iter()
                    .flat_map(|m| m.values().flatten())
                    .flat_map(|status| &status.images)
                    .flat_map(|i| i.recipients().map(|r| r.to_string())),
            ),
            _ => {}
        }
        out
    }

    /// Whether a namespace is being deleted: nothing is written into it any more.
    pub fn is_leaving(&self, namespace: &str) -> bool {
        lock(&self.snapshot).is_leaving(namespace)
    }

    /// Records why the grant of an image could not be written (or clears it). Returns whether
    /// that changed what the image reports.
    pub fn set_grant_fault(&self, namespace: &str, image: &str, fault: Option<core::GrantFault>) -> bool {
        let mut snap = lock(&self.snapshot);
        if snap.grant_fault(namespace, image) == fault.as_ref() {
            return false;
        }
        snap.set_grant_fault(namespace, image, fault);
        true
    }

    /// Clears the grant faults of images of a namespace that need no grant any more.
    pub fn clear_grant_faults_except(&self, namespace: &str, keep: &BTreeSet<String>) -> bool {
        lock(&self.snapshot).clear_grant_faults_except(namespace, keep)
    }

    /// Evaluates one tenant at `now`, with the grants that exist in it.
    pub fn evaluate(&self, namespace: &str, now: Timestamp) -> (TenantOutcome, ExistingGrants, Option<Timestamp>) {
        let mut snap = lock(&self.snapshot);
        snap.set_now(now);
        let outcome = lock(&self.evaluator).tenant(&snap, namespace);
        let next_expiry = snap
            .shares_in(namespace)
            .filter_map(|s| s.object.spec.expires_at.as_ref().map(|t| t.0))
            .filter(|t| *t > now)
            .min();
        drop(snap);
        let existing = ExistingGrants {
            roles: lock(&self.roles).get(namespace).cloned().unwrap_or_default(),
            bindings: lock(&self.bindings).get(namespace).cloned().unwrap_or_default(),
        };
        (outcome, existing, next_expiry)
    }

    /// Runs `f` on the snapshot (for feeds and tests).
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        f(&mut lock(&self.snapshot))
    }

    /// Offered pairs by state over all owners (for the metrics). A pair several shares list
    /// is one membership and counts once.
    pub fn pair_counts(&self) -> BTreeMap<&'static str, usize> {
        let snap = lock(&self.snapshot);
        let mut pairs = std::collections::HashMap::new();
        for (owner, entries) in &snap.shares {
            for share in entries.values() {
                for img in share.object.status.iter().flat_map(|s| &s.images) {
                    for (state, list) in img.lists() {
                        for r in list {
                            pairs.insert((owner.as_str(), img.name.as_str(), &**r), state.as_str());
                        }
                    }
                }
            }
        }
        let mut counts = BTreeMap::from([("Pending", 0), ("Accepted", 0), ("Rejected", 0), ("Removed", 0)]);
        for state in pairs.values() {
            *counts.entry(*state).or_default() += 1;
        }
        counts
    }
}

/// One kind the cache can hold: how to put it in, take it out, and which tenants it touches.
pub trait Cached: kube::Resource + Clone + Send + Sync + 'static {
    fn store(cache: &Cache, object: Arc<Self>);
    fn forget(cache: &Cache, namespace: &str, name: &str);
    /// Names of the objects of this kind in the cache (to find those deleted during a relist).
    fn known(cache: &Cache) -> BTreeSet<(String, String)>;
    /// The tenants whose evaluation may change with this object.
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String>;
    /// The tenants the cached object of this key relates to (read before the object is
    /// replaced or forgotten, so that the relations it had are covered too).
    fn touched_by_key(cache: &Cache, namespace: &str, _name: &str) -> BTreeSet<String> {
        with_partners(&lock(&cache.snapshot), namespace)
    }
}

fn key_of<K: kube::Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// The recipients an owner's shares name or list in their status.
fn recipients_of(snap: &Snapshot, owner: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for share in snap.shares_in(owner) {
        out.extend(share_recipients(snap, owner, &share.object));
    }
    out
}

/// The namespaces a share names, selects by label, or records as offered in its status.
fn share_recipients(snap: &Snapshot, owner: &str, share: &ImageShare) -> Vec<String> {
    let listed = share.status.iter().flat_map(|s| &s.images).flat_map(|i| i.recipients());
    let selected = snap.selected_by(owner, share).into_iter();
    share
        .spec
        .recipients
        .iter()
        .map(String::as_str)
        .chain(listed.map(|r| &**r))
        .chain(selected)
        .map(String::from)
        .collect()
}

/// Owners whose shares name a namespace.
fn owners_sharing_with(snap: &Snapshot, recipient: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (owner, shares) in &snap.shares {
        if shares
            .values()
            .any(|s| share_recipients(snap, owner, &s.object).iter().any(|r| r == recipient))
        {
            out.insert(owner.clone());
        }
    }
    out
}

/// Owners a namespace has acceptances for: those they name, and for an acceptance by
/// ownerSelector every owner that offers it something.
fn owners_accepted_by(snap: &Snapshot, recipient: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = snap
        .acceptances_in(recipient)
        .filter(|a| a.object.spec.owner_selector.is_none())
        .map(|a| a.object.spec.owner.clone())
        .collect();
    if snap.selector_acceptances_in(recipient).next().is_some() {
        out.extend(snap.owners_offering(recipient).into_iter().map(String::from));
    }
    out
}

fn with_partners(snap: &Snapshot, namespace: &str) -> BTreeSet<String> {
    let mut out = recipients_of(snap, namespace);
    out.insert(namespace.to_string());
    out
}

impl Cached for PrivateImage {
    fn store(cache: &Cache, object: Arc<Self>) {
        lock(&cache.snapshot).upsert_image(object);
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        lock(&cache.snapshot).remove_image(namespace, name);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        let snap = lock(&cache.snapshot);
        snap.images
            .values()
            .flat_map(|m| m.values())
            .map(|e| key_of(e.object.as_ref()))
            .collect()
    }
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String> {
        with_partners(&lock(&cache.snapshot), &object.namespace().unwrap_or_default())
    }
}

impl Cached for ImageShare {
    fn store(cache: &Cache, object: Arc<Self>) {
        lock(&cache.snapshot).upsert_share(object);
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        lock(&cache.snapshot).remove_share(namespace, name);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        let snap = lock(&cache.snapshot);
        snap.shares
            .values()
            .flat_map(|m| m.values())
            .map(|e| key_of(e.object.as_ref()))
            .collect()
    }
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String> {
        let owner = object.namespace().unwrap_or_default();
        let mut out: BTreeSet<String> = share_recipients(&lock(&cache.snapshot), &owner, object)
            .into_iter()
            .collect();
        out.insert(owner);
        out
    }
    fn touched_by_key(cache: &Cache, namespace: &str, name: &str) -> BTreeSet<String> {
        let snap = lock(&cache.snapshot);
        let mut out: BTreeSet<String> = snap
            .shares_in(namespace)
            .filter(|s| s.object.metadata.name.as_deref() == Some(name))
            .flat_map(|s| share_recipients(&snap, namespace, &s.object))
            .collect();
        out.insert(namespace.to_string());
        out
    }
}

impl Cached for ShareAcceptance {
    fn store(cache: &Cache, object: Arc<Self>) {
        lock(&cache.snapshot).upsert_acceptance(object);
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        lock(&cache.snapshot).remove_acceptance(namespace, name);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        let snap = lock(&cache.snapshot);
        snap.acceptances
            .values()
            .flat_map(|m| m.values())
            .map(|e| key_of(e.object.as_ref()))
            .collect()
    }
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String> {
        let recipient = object.namespace().unwrap_or_default();
        let mut out = BTreeSet::from([recipient.clone()]);
        if object.spec.owner_selector.is_some() {
            // It may decide for every owner that offers this namespace something.
            let snap = lock(&cache.snapshot);
            out.extend(snap.owners_offering(&recipient).into_iter().map(String::from));
        } else {
            out.insert(object.spec.owner.clone());
        }
        out
    }
    fn touched_by_key(cache: &Cache, namespace: &str, name: &str) -> BTreeSet<String> {
        let current = lock(&cache.snapshot)
            .acceptances_in(namespace)
            .find(|a| a.object.metadata.name.as_deref() == Some(name))
            .map(|a| a.object.clone());
        match current {
            Some(acceptance) => Self::touched(cache, &acceptance),
            None => BTreeSet::from([namespace.to_string()]),
        }
    }
}

impl Cached for Namespace {
    fn store(cache: &Cache, object: Arc<Self>) {
        lock(&cache.snapshot).upsert_namespace(&object.name_any(), NamespaceInfo::from_namespace(&object));
    }
    fn forget(cache: &Cache, _namespace: &str, name: &str) {
        lock(&cache.snapshot).remove_namespace(name);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        lock(&cache.snapshot)
            .namespaces
            .keys()
            .map(|n| (String::new(), n.clone()))
            .collect()
    }
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String> {
        Self::touched_by_key(cache, "", &object.name_any())
    }
    fn touched_by_key(cache: &Cache, _namespace: &str, name: &str) -> BTreeSet<String> {
        let snap = lock(&cache.snapshot);
        let mut out = with_partners(&snap, name);
        out.extend(owners_sharing_with(&snap, name));
        out.extend(owners_accepted_by(&snap, name));
        // Its labels may start or stop matching a recipientSelector or an ownerSelector.
        out.extend(snap.selecting_owners().map(String::from));
        out.extend(snap.selector_acceptances.keys().cloned());
        out
    }
}

impl Cached for Role {
    fn store(cache: &Cache, object: Arc<Self>) {
        let (ns, name) = key_of(object.as_ref());
        lock(&cache.roles).entry(ns).or_default().insert(name, object);
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        forget_grant(&mut lock(&cache.roles), namespace, name);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        known_grants(&lock(&cache.roles))
    }
    fn touched(_cache: &Cache, object: &Self) -> BTreeSet<String> {
        BTreeSet::from([object.namespace().unwrap_or_default()])
    }
    fn touched_by_key(_cache: &Cache, namespace: &str, _name: &str) -> BTreeSet<String> {
        BTreeSet::from([namespace.to_string()])
    }
}

impl Cached for RoleBinding {
    fn store(cache: &Cache, object: Arc<Self>) {
        let (ns, name) = key_of(object.as_ref());
        lock(&cache.bindings).entry(ns).or_default().insert(name, object);
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        forget_grant(&mut lock(&cache.bindings), namespace, name);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        known_grants(&lock(&cache.bindings))
    }
    fn touched(_cache: &Cache, object: &Self) -> BTreeSet<String> {
        BTreeSet::from([object.namespace().unwrap_or_default()])
    }
    fn touched_by_key(_cache: &Cache, namespace: &str, _name: &str) -> BTreeSet<String> {
        BTreeSet::from([namespace.to_string()])
    }
}

fn forget_grant<K>(map: &mut HashMap<String, BTreeMap<String, K>>, namespace: &str, name: &str) {
    if let Some(m) = map.get_mut(namespace) {
        m.remove(name);
        if m.is_empty() {
            map.remove(namespace);
        }
    }
}

fn known_grants<K>(map: &HashMap<String, BTreeMap<String, K>>) -> BTreeSet<(String, String)> {
    map.iter()
        .flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone())))
        .collect()
}

impl Cached for PersistentVolumeClaim {
    fn store(cache: &Cache, object: Arc<Self>) {
        let (ns, name) = key_of(object.as_ref());
        let bound = object.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let state = if bound {
            VolumeState::Bound
        } else {
            VolumeState::NotBound
        };
        lock(&cache.snapshot).set_volume(&ns, &name, Some(state));
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        lock(&cache.snapshot).set_volume(namespace, name, None);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        lock(&cache.snapshot).volumes.keys().cloned().collect()
    }
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String> {
        with_partners(&lock(&cache.snapshot), &object.namespace().unwrap_or_default())
    }
}

/// KubeVirt VirtualMachines are read as dynamic objects: the operator only needs to know
/// whether one is stopped and which claims its disks use, not the whole KubeVirt API.
impl Cached for DynamicObject {
    fn store(cache: &Cache, object: Arc<Self>) {
        let (ns, name) = key_of(object.as_ref());
        let info = MachineInfo::of_virtual_machine(&object.data);
        lock(&cache.snapshot).set_machine(&ns, &name, Some(info));
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        lock(&cache.snapshot).set_machine(namespace, name, None::<MachineInfo>);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        lock(&cache.snapshot).machines.keys().cloned().collect()
    }
    fn touched(cache: &Cache, object: &Self) -> BTreeSet<String> {
        with_partners(&lock(&cache.snapshot), &object.namespace().unwrap_or_default())
    }
}

/// The operator's own ImageQuotas, so that an unchanged one is not written again.
impl Cached for ImageQuota {
    fn store(cache: &Cache, object: Arc<Self>) {
        let ns = object.namespace().unwrap_or_default();
        lock(&cache.snapshot).set_quota(&ns, Some(object));
    }
    fn forget(cache: &Cache, namespace: &str, _name: &str) {
        lock(&cache.snapshot).set_quota(namespace, None);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        lock(&cache.snapshot)
            .quotas
            .values()
            .map(|q| key_of(q.as_ref()))
            .collect()
    }
    fn touched(_cache: &Cache, object: &Self) -> BTreeSet<String> {
        BTreeSet::from([object.namespace().unwrap_or_default()])
    }
    fn touched_by_key(_cache: &Cache, namespace: &str, _name: &str) -> BTreeSet<String> {
        BTreeSet::from([namespace.to_string()])
    }
}

/// The operator's own ImageOffers, so that an unchanged one is not written again and one no
/// longer wanted is deleted.
impl Cached for ImageOffer {
    fn store(cache: &Cache, object: Arc<Self>) {
        let (ns, owner) = key_of(object.as_ref());
        lock(&cache.snapshot).set_offer(&ns, &owner, Some(object));
    }
    fn forget(cache: &Cache, namespace: &str, name: &str) {
        lock(&cache.snapshot).set_offer(namespace, name, None);
    }
    fn known(cache: &Cache) -> BTreeSet<(String, String)> {
        lock(&cache.snapshot)
            .offers
            .iter()
            .flat_map(|(ns, m)| m.keys().map(move |owner| (ns.clone(), owner.clone())))
            .collect()
    }
    fn touched(_cache: &Cache, object: &Self) -> BTreeSet<String> {
        BTreeSet::from([object.namespace().unwrap_or_default()])
    }
    fn touched_by_key(_cache: &Cache, namespace: &str, _name: &str) -> BTreeSet<String> {
        BTreeSet::from([namespace.to_string()])
    }
}
