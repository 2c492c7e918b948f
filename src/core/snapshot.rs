//! The engine's input: a snapshot of the objects it decides on, with the indexes that let one
//! tenant be evaluated without scanning the cluster.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    api::{ImageShare, PrivateImage, ShareAcceptance},
    config::{Config, SubjectTemplate},
};

/// Position of an object in the "oldest first" order of the README: objects with a
/// `creationTimestamp` by time, then those without in input order; name breaks ties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeKey {
    // Stamped objects are tier 0, unstamped tier 1: unstamped ones are younger than all others.
    tier: u8,
    created: Option<Timestamp>,
    input_order: u64,
    name: String,
}

impl AgeKey {
    pub fn new(created: Option<Timestamp>, input_order: u64, name: &str) -> Self {
        match created {
            Some(ts) => AgeKey {
                created: Some(ts),
                tier: 0,
                input_order: 0,
                name: name.into(),
            },
            None => AgeKey {
                created: None,
                tier: 1,
                input_order,
                name: name.into(),
            },
        }
    }
}

impl AgeKey {
    fn sort_tuple(&self) -> (u8, Option<Timestamp>, u64, &str) {
        (self.tier, self.created, self.input_order, &self.name)
    }
}

impl Ord for AgeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_tuple().cmp(&other.sort_tuple())
    }
}

impl PartialOrd for AgeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An object with its age key.
#[derive(Clone, Debug)]
pub struct Entry<K> {
    pub object: Arc<K>,
    pub age: AgeKey,
}

/// What the engine knows of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub uid: Option<String>,
    /// Being deleted (`deletionTimestamp` set): the tenant is leaving. Its pairs stop being
    /// offered, as owner and as recipient, and nothing more is written into it.
    pub leaving: bool,
}

impl NamespaceInfo {
    pub fn from_namespace(ns: &Namespace) -> Self {
        NamespaceInfo {
            labels: ns.labels().clone(),
            annotations: ns.annotations().clone(),
            uid: ns.metadata.uid.clone(),
            leaving: ns.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Why the grant of an image is not in place although a recipient accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantFaultReason {
    /// A Role or RoleBinding with the grant's name exists and was not made by the operator; it
    /// is never overwritten.
    NameTaken,
    /// The API server refused the write (an admission policy, a quota, a conflict, …).
    WriteFailed,
}

impl GrantFaultReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantFaultReason::NameTaken => "GrantNameTaken",
            GrantFaultReason::WriteFailed => "GrantWriteFailed",
        }
    }
}

/// A grant the controller could not write, as reported on the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantFault {
    pub reason: GrantFaultReason,
    pub message: String,
}

/// Objects the API server holds but the operator could never decode (see `docs/security.md`,
/// "Unreadable objects fail closed"). An object that was decoded once and then became
/// unreadable is not here: its last decoded version stays in the snapshot instead.
///
/// Each entry keeps the part of the object's status that still decodes, when it does: the
/// status is the operator's own record of what it admitted.
#[derive(Clone, Debug, Default)]
pub struct Unreadable {
    /// owner namespace -> image name -> salvaged status.
    pub images: HashMap<String, BTreeMap<String, Option<crate::api::PrivateImageStatus>>>,
    /// owner namespace -> share name -> salvaged status.
    pub shares: HashMap<String, BTreeMap<String, Option<crate::api::ImageShareStatus>>>,
    /// recipient namespace -> names of its unreadable ShareAcceptances.
    pub acceptances: HashMap<String, BTreeSet<String>>,
}

/// State of a PersistentVolumeClaim an image refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeState {
    Bound,
    NotBound,
}

/// State of a KubeVirt VirtualMachine an image refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineState {
    Stopped,
    Running,
}

impl MachineState {
    /// Whether a KubeVirt VirtualMachine (as JSON) counts as stopped (only a
    /// stopped machine can become an image): what KubeVirt reports, or without a status, what
    /// its spec asks for.
    pub fn of_virtual_machine(vm: &serde_json::Value) -> Self {
        if let Some(printable) = vm.pointer("/status/printableStatus").and_then(|v| v.as_str()) {
            return if printable == "Stopped" {
                MachineState::Stopped
            } else {
                MachineState::Running
            };
        }
        let running = vm.pointer("/spec/running").and_then(|v| v.as_bool());
        let strategy = vm.pointer("/spec/runStrategy").and_then(|v| v.as_str());
        match (running, strategy) {
            (Some(true), _) | (_, Some("Always" | "RerunOnFailure" | "Once")) => MachineState::Running,
            _ => MachineState::Stopped,
        }
    }
}

/// What the engine knows of a KubeVirt VirtualMachine: whether it is stopped, and the claims
/// its disks use (an accepted recipient of an image made from it gets to read and clone them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineInfo {
    pub state: MachineState,
    /// PersistentVolumeClaims and DataVolumes of its disks, sorted and deduplicated (a
    /// DataVolume creates a PVC of the same name).
    pub claims: Vec<String>,
}

impl MachineInfo {
    pub fn of_virtual_machine(vm: &serde_json::Value) -> Self {
        let volumes = vm.pointer("/spec/template/spec/volumes").and_then(|v| v.as_array());
        let claims: BTreeSet<String> = volumes
            .into_iter()
            .flatten()
            .filter_map(|v| {
                v.pointer("/persistentVolumeClaim/claimName")
                    .or_else(|| v.pointer("/dataVolume/name"))
                    .and_then(|n| n.as_str())
            })
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        MachineInfo {
            state: MachineState::of_virtual_machine(vm),
            claims: claims.into_iter().collect(),
        }
    }
}

/// A machine known only by its state has no known disks.
impl From<MachineState> for MachineInfo {
    fn from(state: MachineState) -> Self {
        MachineInfo {
            state,
            claims: Vec::new(),
        }
    }
}

/// How referenced objects that are not in the snapshot are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    /// A live cluster: what is not in the caches does not exist. Without KubeVirt support the
    /// operator does not watch PVCs or VirtualMachines, so such sources are unsupported.
    Cluster { kubevirt: bool },
    /// `simulate`: a namespace, PVC or VirtualMachine referenced but not given exists and is
    /// ready.
    Offline,
}

/// The snapshot the engine evaluates.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub subjects: Vec<SubjectTemplate>,
    pub now: Timestamp,
    pub world: World,
    pub(crate) namespaces: HashMap<String, NamespaceInfo>,
    pub(crate) images: HashMap<String, BTreeMap<String, Entry<PrivateImage>>>,
    pub(crate) shares: HashMap<String, BTreeMap<String, Entry<ImageShare>>>,
    pub(crate) acceptances: HashMap<String, BTreeMap<String, Entry<ShareAcceptance>>>,
    /// recipient namespace -> owner namespace -> names of the recipient's acceptances.
    pub(crate) acceptances_by_owner: HashMap<String, HashMap<String, BTreeSet<String>>>,
    pub(crate) volumes: HashMap<(String, String), VolumeState>,
    pub(crate) machines: HashMap<(String, String), MachineInfo>,
    pub(crate) unreadable: Unreadable,
    /// The ImageQuota each namespace holds (none in `simulate`: it would create them all).
    pub(crate) quotas: HashMap<String, Arc<crate::api::ImageQuota>>,
    /// Grants the controller could not write, by (owner namespace, image).
    pub(crate) grant_faults: HashMap<(String, String), GrantFault>,
    next_input_order: u64,
    /// Owner evaluations, kept until a change touches the owner (see `invalidate_owner`).
    pub(crate) owner_cache: OwnerCache,
    /// Statuses, kept while their inputs are the same objects.
    pub(crate) memos: crate::core::tenant::Memos,
}

/// Cached owner evaluations. Every mutation of the snapshot drops the evaluations it may
/// change, so a reconcile after one change re-evaluates only the owners that change touches.
#[derive(Debug, Default)]
pub(crate) struct OwnerCache(std::sync::Mutex<HashMap<String, Arc<crate::core::owner::OwnerEval>>>);

impl OwnerCache {
    pub(crate) fn get(&self, owner: &str) -> Option<Arc<crate::core::owner::OwnerEval>> {
        self.lock().get(owner).cloned()
    }

    pub(crate) fn put(&self, eval: Arc<crate::core::owner::OwnerEval>) {
        self.lock().insert(eval.owner.clone(), eval);
    }

    fn remove(&self, owner: &str) {
        self.lock().remove(owner);
    }

    fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<crate::core::owner::OwnerEval>>> {
        // Evaluations are pure values; a panic elsewhere can not leave one half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Snapshot {
            config: self.config.clone(),
            subjects: self.subjects.clone(),
            now: self.now,
            world: self.world,
            namespaces: self.namespaces.clone(),
            images: self.images.clone(),
            shares: self.shares.clone(),
            acceptances: self.acceptances.clone(),
            acceptances_by_owner: self.acceptances_by_owner.clone(),
            volumes: self.volumes.clone(),
            machines: self.machines.clone(),
            unreadable: self.unreadable.clone(),
            quotas: self.quotas.clone(),
            grant_faults: self.grant_faults.clone(),
            next_input_order: self.next_input_order,
            owner_cache: OwnerCache::default(),
            memos: Default::default(),
        }
    }
}

impl Snapshot {
    /// An empty snapshot. Fails only when the config's grantSubjects do not parse.
    pub fn new(config: Config, world: World, now: Timestamp) -> Result<Self, crate::config::ConfigError> {
        let subjects = config.subject_templates()?;
        Ok(Snapshot {
            config,
            subjects,
            now,
            world,
            namespaces: HashMap::new(),
            images: HashMap::new(),
            shares: HashMap::new(),
            acceptances: HashMap::new(),
            acceptances_by_owner: HashMap::new(),
            volumes: HashMap::new(),
            machines: HashMap::new(),
            unreadable: Unreadable::default(),
            quotas: HashMap::new(),
            grant_faults: HashMap::new(),
            next_input_order: 0,
            owner_cache: OwnerCache::default(),
            memos: Default::default(),
        })
    }

    fn age_of(&mut self, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> AgeKey {
        let order = self.next_input_order;
        self.next_input_order += 1;
        AgeKey::new(
            meta.creation_timestamp.as_ref().map(|t| t.0),
            order,
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// Drops the cached evaluation of one owner.
    pub fn invalidate_owner(&self, owner: &str) {
        self.owner_cache.remove(owner);
    }

    pub fn upsert_namespace(&mut self, name: &str, info: NamespaceInfo) {
        if self.namespaces.get(name) != Some(&info) {
            // Limits, region and existence of a namespace feed every owner sharing with it;
            // namespaces change rarely, so drop everything rather than track who shares where.
            self.owner_cache.clear();
        }
        self.namespaces.insert(name.to_string(), info);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.owner_cache.clear();
        }
    }

    pub fn upsert_image(&mut self, image: Arc<PrivateImage>) {
        let age = self.age_of(&image.metadata);
        let ns = image.namespace().unwrap_or_default();
        self.invalidate_owner(&ns);
        self.images
            .entry(ns)
            .or_default()
            .insert(image.name_any(), Entry { object: image, age });
    }

    pub fn remove_image(&mut self, namespace: &str, name: &str) {
        self.invalidate_owner(namespace);
        self.memos.images.forget(namespace, name);
        remove_from(&mut self.images, namespace, name);
    }

    pub fn upsert_share(&mut self, share: Arc<ImageShare>) {
        let age = self.age_of(&share.metadata);
        let ns = share.namespace().unwrap_or_default();
        self.invalidate_owner(&ns);
        self.shares
            .entry(ns)
            .or_default()
            .insert(share.name_any(), Entry { object: share, age });
    }

    pub fn remove_share(&mut self, namespace: &str, name: &str) {
        self.invalidate_owner(namespace);
        self.memos.shares.forget(namespace, name);
        remove_from(&mut self.shares, namespace, name);
    }

    pub fn upsert_acceptance(&mut self, acceptance: Arc<ShareAcceptance>) {
        let ns = acceptance.namespace().unwrap_or_default();
        let name = acceptance.name_any();
        self.remove_acceptance(&ns, &name);
        let age = self.age_of(&acceptance.metadata);
        self.invalidate_owner(&acceptance.spec.owner);
        self.acceptances_by_owner
            .entry(ns.clone())
            .or_default()
            .entry(acceptance.spec.owner.clone())
            .or_default()
            .insert(name.clone());
        self.acceptances.entry(ns).or_default().insert(
            name,
            Entry {
                object: acceptance,
                age,
            },
        );
    }

    pub fn remove_acceptance(&mut self, namespace: &str, name: &str) {
        let Some(old) = self.acceptances.get_mut(namespace).and_then(|m| m.remove(name)) else {
            return;
        };
        let owner = &old.object.spec.owner;
        self.owner_cache.remove(owner);
        self.memos.acceptances.forget(namespace, name);
        if let Some(by_owner) = self.acceptances_by_owner.get_mut(namespace) {
            if let Some(names) = by_owner.get_mut(owner) {
                names.remove(name);
                if names.is_empty() {
                    by_owner.remove(owner);
                }
            }
            if by_owner.is_empty() {
                self.acceptances_by_owner.remove(namespace);
            }
        }
        if self.acceptances.get(namespace).is_some_and(|m| m.is_empty()) {
            self.acceptances.remove(namespace);
        }
    }

    pub fn set_volume(&mut self, namespace: &str, name: &str, state: Option<VolumeState>) {
        self.invalidate_owner(namespace);
        let key = (namespace.to_string(), name.to_string());
        match state {
            Some(s) => self.volumes.insert(key, s),
            None => self.volumes.remove(&key),
        };
    }

    pub fn set_machine(&mut self, namespace: &str, name: &str, info: Option<impl Into<MachineInfo>>) {
        self.invalidate_owner(namespace);
        let key = (namespace.to_string(), name.to_string());
        match info {
            Some(i) => self.machines.insert(key, i.into()),
            None => self.machines.remove(&key),
        };
    }

    /// Whether a namespace is being deleted.
    pub fn is_leaving(&self, name: &str) -> bool {
        self.namespaces.get(name).is_some_and(|n| n.leaving)
    }

    /// Records a PrivateImage that does not decode and was never decoded (`None` forgets it).
    pub fn set_unreadable_image(
        &mut self,
        namespace: &str,
        name: &str,
        status: Option<Option<crate::api::PrivateImageStatus>>,
    ) {
        self.invalidate_owner(namespace);
        set_unreadable(&mut self.unreadable.images, namespace, name, status);
    }

    /// Records an ImageShare that does not decode and was never decoded (`None` forgets it).
    pub fn set_unreadable_share(
        &mut self,
        namespace: &str,
        name: &str,
        status: Option<Option<crate::api::ImageShareStatus>>,
    ) {
        self.invalidate_owner(namespace);
        set_unreadable(&mut self.unreadable.shares, namespace, name, status);
    }

    /// Records a ShareAcceptance that does not decode and was never decoded (`false` forgets
    /// it). Its owner is unknown, so every owner's evaluation may change.
    pub fn set_unreadable_acceptance(&mut self, namespace: &str, name: &str, unreadable: bool) {
        let names = self.unreadable.acceptances.entry(namespace.to_string()).or_default();
        let changed = if unreadable {
            names.insert(name.to_string())
        } else {
            names.remove(name)
        };
        if names.is_empty() {
            self.unreadable.acceptances.remove(namespace);
        }
        if changed {
            self.owner_cache.clear();
        }
    }

    /// Records (or, with `None`, clears) why the grant of an image could not be written.
    pub fn set_grant_fault(&mut self, namespace: &str, image: &str, fault: Option<GrantFault>) {
        let key = (namespace.to_string(), image.to_string());
        let changed = match fault {
            Some(f) => self.grant_faults.insert(key, f.clone()) != Some(f),
            None => self.grant_faults.remove(&key).is_some(),
        };
        if changed {
            self.invalidate_owner(namespace);
        }
    }

    /// Clears the grant faults of a namespace's images that have no grant to write any more.
    /// Returns whether any was cleared.
    pub fn clear_grant_faults_except(&mut self, namespace: &str, keep: &BTreeSet<String>) -> bool {
        let before = self.grant_faults.len();
        self.grant_faults
            .retain(|(ns, image), _| ns != namespace || keep.contains(image));
        let cleared = self.grant_faults.len() != before;
        if cleared {
            self.invalidate_owner(namespace);
        }
        cleared
    }

    /// Why the grant of an image could not be written, if it could not.
    pub fn grant_fault(&self, namespace: &str, image: &str) -> Option<&GrantFault> {
        self.grant_faults.get(&(namespace.to_string(), image.to_string()))
    }

    /// Whether a recipient namespace holds a ShareAcceptance that was never decoded.
    pub fn has_unreadable_acceptance(&self, recipient: &str) -> bool {
        self.unreadable.acceptances.contains_key(recipient)
    }

    /// The never-decoded objects.
    pub fn unreadable(&self) -> &Unreadable {
        &self.unreadable
    }

    /// Whether a namespace exists, and what is known of it.
    pub fn namespace(&self, name: &str) -> Option<std::borrow::Cow<'_, NamespaceInfo>> {
        match self.namespaces.get(name) {
            Some(info) => Some(std::borrow::Cow::Borrowed(info)),
            None if self.world == World::Offline => Some(std::borrow::Cow::Owned(NamespaceInfo::default())),
            None => None,
        }
    }

    pub fn images_in(&self, namespace: &str) -> impl Iterator<Item = &Entry<PrivateImage>> {
        self.images.get(namespace).into_iter().flat_map(|m| m.values())
    }

    pub fn image(&self, namespace: &str, name: &str) -> Option<&Entry<PrivateImage>> {
        self.images.get(namespace)?.get(name)
    }

    pub fn shares_in(&self, namespace: &str) -> impl Iterator<Item = &Entry<ImageShare>> {
        self.shares.get(namespace).into_iter().flat_map(|m| m.values())
    }

    pub fn acceptances_in(&self, namespace: &str) -> impl Iterator<Item = &Entry<ShareAcceptance>> {
        self.acceptances.get(namespace).into_iter().flat_map(|m| m.values())
    }

    /// The acceptances a recipient namespace wrote about one owner.
    pub fn acceptances_for(&self, recipient: &str, owner: &str) -> impl Iterator<Item = &Entry<ShareAcceptance>> {
        let names = self.acceptances_by_owner.get(recipient).and_then(|m| m.get(owner));
        let all = self.acceptances.get(recipient);
        names
            .into_iter()
            .flat_map(|n| n.iter())
            .filter_map(move |n| all.and_then(|m| m.get(n)))
    }

    /// Every namespace the engine has something to say about: those that hold an object of the
    /// three kinds or an ImageQuota, or carry a limit annotation.
    pub fn tenants(&self) -> BTreeSet<String> {
        let annotated = self
            .namespaces
            .iter()
            .filter(|(_, info)| super::limits::has_limit_annotation(info))
            .map(|(name, _)| name);
        self.images
            .keys()
            .chain(self.shares.keys())
            .chain(self.acceptances.keys())
            .chain(self.quotas.keys())
            .chain(annotated)
            .cloned()
            .collect()
    }

    /// Records the ImageQuota a namespace holds (`None`: it holds none).
    pub fn set_quota(&mut self, namespace: &str, quota: Option<Arc<crate::api::ImageQuota>>) {
        match quota {
            Some(q) => self.quotas.insert(namespace.to_string(), q),
            None => self.quotas.remove(namespace),
        };
    }

    /// The ImageQuota a namespace holds.
    pub fn quota(&self, namespace: &str) -> Option<&Arc<crate::api::ImageQuota>> {
        self.quotas.get(namespace)
    }

    pub fn volume(&self, namespace: &str, name: &str) -> Option<VolumeState> {
        self.volumes.get(&(namespace.to_string(), name.to_string())).copied()
    }

    pub fn machine(&self, namespace: &str, name: &str) -> Option<MachineState> {
        self.machines
            .get(&(namespace.to_string(), name.to_string()))
            .map(|m| m.state)
    }

    /// The disk claims of a VirtualMachine; none when it is not known.
    pub fn machine_claims(&self, namespace: &str, name: &str) -> &[String] {
        self.machines
            .get(&(namespace.to_string(), name.to_string()))
            .map_or(&[], |m| m.claims.as_slice())
    }
}

fn set_unreadable<S>(
    map: &mut HashMap<String, BTreeMap<String, Option<S>>>,
    namespace: &str,
    name: &str,
    status: Option<Option<S>>,
) {
    match status {
        Some(status) => {
            map.entry(namespace.to_string())
                .or_default()
                .insert(name.to_string(), status);
        }
        None => {
            if let Some(m) = map.get_mut(namespace) {
                m.remove(name);
                if m.is_empty() {
                    map.remove(namespace);
                }
            }
        }
    }
}

fn remove_from<K>(map: &mut HashMap<String, BTreeMap<String, Entry<K>>>, namespace: &str, name: &str) {
    if let Some(m) = map.get_mut(namespace) {
        m.remove(name);
        if m.is_empty() {
            map.remove(namespace);
        }
    }
}
