//! The engine's input: a snapshot of the objects it decides on, with the indexes that let one
//! tenant be evaluated without scanning the cluster.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use foldhash::HashMap;
use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    api::{ImageOffer, ImageQuota, ImageShare, PrivateImage, ShareAcceptance},
    config::{Config, SubjectTemplate},
};

use super::{
    events::Regarding,
    vocabulary::{AccessReason, Kind},
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

/// A recipient's acceptances of one owner, by recipient, then by name.
pub(crate) type AcceptancesByRecipient = BTreeMap<String, BTreeMap<Arc<str>, Arc<Entry<ShareAcceptance>>>>;

/// An object with its name and age key.
#[derive(Clone, Debug)]
pub struct Entry<K> {
    pub object: Arc<K>,
    /// `metadata.name`, shared by everything the engine derives from the object.
    pub name: Arc<str>,
    pub age: AgeKey,
    /// The object as events refer to it, built once rather than for every event.
    pub regarding: Regarding,
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
    /// Whether it carries a limit annotation (it then gets an ImageQuota, also before it holds
    /// anything).
    pub fn has_limit_annotation(&self) -> bool {
        super::vocabulary::LIMIT_ANNOTATIONS
            .iter()
            .any(|key| self.annotations.contains_key(*key))
    }

    pub fn from_namespace(ns: &Namespace) -> Self {
        NamespaceInfo {
            labels: ns.labels().clone(),
            annotations: ns.annotations().clone(),
            uid: ns.metadata.uid.clone(),
            leaving: ns.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// A grant the controller could not write, as reported on the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantFault {
    /// `GrantNameTaken` or `GrantWriteFailed`.
    pub reason: AccessReason,
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

/// The labels of a namespace that is not in the snapshot.
static EMPTY_LABELS: BTreeMap<String, String> = BTreeMap::new();

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

/// The snapshot the engine evaluates: plain data. Evaluations are memoised by the
/// [`Evaluator`](super::Evaluator), which tells from the revisions kept here what a change
/// touched.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub config: Config,
    pub subjects: Arc<[SubjectTemplate]>,
    pub now: Timestamp,
    pub world: World,
    pub(crate) namespaces: HashMap<String, NamespaceInfo>,
    pub(crate) images: HashMap<String, BTreeMap<Arc<str>, Entry<PrivateImage>>>,
    pub(crate) shares: HashMap<String, BTreeMap<Arc<str>, Entry<ImageShare>>>,
    /// Acceptance entries are shared with the indexes below, which deciding an owner's pairs
    /// reads for every recipient: no lookup by name there.
    pub(crate) acceptances: HashMap<String, BTreeMap<Arc<str>, Arc<Entry<ShareAcceptance>>>>,
    /// owner namespace -> recipient namespace -> the recipient's acceptances that name the
    /// owner, by name. Recipients in name order, as an owner's evaluation walks them.
    pub(crate) acceptances_about: HashMap<String, AcceptancesByRecipient>,
    /// recipient namespace -> owner namespace -> how many of the owner's ImageShares list it.
    pub(crate) listed_by: HashMap<String, BTreeMap<String, usize>>,
    /// owner namespace -> how many of its ImageShares select recipients by label.
    pub(crate) selecting_owners: BTreeMap<String, usize>,
    /// recipient namespace -> its acceptances that select owners by label.
    pub(crate) selector_acceptances: HashMap<String, BTreeMap<Arc<str>, Arc<Entry<ShareAcceptance>>>>,
    pub(crate) volumes: HashMap<(String, String), VolumeState>,
    pub(crate) machines: HashMap<(String, String), MachineInfo>,
    pub(crate) unreadable: Unreadable,
    /// The ImageQuota each namespace holds (none in `simulate`: it would create them all).
    pub(crate) quotas: HashMap<String, Arc<ImageQuota>>,
    /// The ImageOffers each recipient namespace holds, by owner.
    pub(crate) offers: HashMap<String, BTreeMap<String, Arc<ImageOffer>>>,
    /// Grants the controller could not write, by (owner namespace, image).
    pub(crate) grant_faults: HashMap<(String, String), GrantFault>,
    next_input_order: u64,
    /// Revisions: every change that may alter an owner's evaluation gives that owner a new
    /// revision; a change that may alter every owner's (a namespace, an unreadable acceptance)
    /// moves the epoch.
    revisions: HashMap<String, u64>,
    epoch: u64,
    next_revision: u64,
}

impl Snapshot {
    /// An empty snapshot. Fails only when the config's grantSubjects do not parse.
    pub fn new(config: Config, world: World, now: Timestamp) -> Result<Self, crate::config::ConfigError> {
        let subjects = config.subject_templates()?.into();
        Ok(Snapshot {
            config,
            subjects,
            now,
            world,
            namespaces: HashMap::default(),
            images: HashMap::default(),
            shares: HashMap::default(),
            acceptances: HashMap::default(),
            acceptances_about: HashMap::default(),
            listed_by: HashMap::default(),
            selecting_owners: BTreeMap::new(),
            selector_acceptances: HashMap::default(),
            volumes: HashMap::default(),
            machines: HashMap::default(),
            unreadable: Unreadable::default(),
            quotas: HashMap::default(),
            offers: HashMap::default(),
            grant_faults: HashMap::default(),
            next_input_order: 0,
            revisions: HashMap::default(),
            epoch: 0,
            next_revision: 1,
        })
    }

    /// The revision of what an owner's evaluation reads: (epoch, owner revision). Equal
    /// revisions mean an equal evaluation at the same time.
    pub fn revision(&self, owner: &str) -> (u64, u64) {
        (self.epoch, self.revisions.get(owner).copied().unwrap_or(0))
    }

    /// Marks an owner's evaluation as changed.
    pub fn touch_owner(&mut self, owner: &str) {
        let revision = self.next_revision;
        self.next_revision += 1;
        match self.revisions.get_mut(owner) {
            Some(r) => *r = revision,
            None => {
                self.revisions.insert(owner.to_string(), revision);
            }
        }
    }

    /// Marks every owner's evaluation as changed.
    fn touch_all(&mut self) {
        self.epoch += 1;
    }

    /// The age of an object; an update of an object without `creationTimestamp` keeps the
    /// input order it was first given (`known`), so writing its status does not make it younger.
    fn age_of(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        known: Option<AgeKey>,
    ) -> AgeKey {
        if let Some(age) = known.filter(|_| meta.creation_timestamp.is_none()) {
            return age;
        }
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

    pub fn upsert_namespace(&mut self, name: &str, info: NamespaceInfo) {
        if self.namespaces.get(name) != Some(&info) {
            // Limits, region and existence of a namespace feed every owner sharing with it;
            // namespaces change rarely, so every evaluation is redone rather than tracking
            // who shares where.
            self.touch_all();
            self.namespaces.insert(name.to_string(), info);
        }
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.touch_all();
        }
    }

    pub fn upsert_image(&mut self, image: Arc<PrivateImage>) {
        let ns = image.namespace().unwrap_or_default();
        self.touch_owner(&ns);
        let name: Arc<str> = image.name_any().into();
        let known = self.images.get(&ns).and_then(|m| m.get(&name)).map(|e| e.age.clone());
        let age = self.age_of(&image.metadata, known);
        self.images.entry(ns).or_default().insert(
            name.clone(),
            Entry {
                regarding: Regarding::named(Kind::PrivateImage, &image.metadata, name.clone()),
                object: image,
                name,
                age,
            },
        );
    }

    pub fn remove_image(&mut self, namespace: &str, name: &str) {
        self.touch_owner(namespace);
        remove_from(&mut self.images, namespace, name);
    }

    pub fn upsert_share(&mut self, share: Arc<ImageShare>) {
        let ns = share.namespace().unwrap_or_default();
        let name: Arc<str> = share.name_any().into();
        let known = self.shares.get(&ns).and_then(|m| m.get(&name)).map(|e| e.age.clone());
        self.remove_share(&ns, &name);
        let age = self.age_of(&share.metadata, known);
        for recipient in &share.spec.recipients {
            *self
                .listed_by
                .entry(recipient.clone())
                .or_default()
                .entry(ns.clone())
                .or_default() += 1;
        }
        if share.spec.recipient_selector.is_some() {
            *self.selecting_owners.entry(ns.clone()).or_default() += 1;
        }
        self.shares.entry(ns).or_default().insert(
            name.clone(),
            Entry {
                regarding: Regarding::named(Kind::ImageShare, &share.metadata, name.clone()),
                object: share,
                name,
                age,
            },
        );
    }

    pub fn remove_share(&mut self, namespace: &str, name: &str) {
        self.touch_owner(namespace);
        let Some(old) = self.shares.get_mut(namespace).and_then(|m| m.remove(name)) else {
            return;
        };
        for recipient in &old.object.spec.recipients {
            if let Some(owners) = self.listed_by.get_mut(recipient.as_str()) {
                if let Some(count) = owners.get_mut(namespace) {
                    *count -= 1;
                    if *count == 0 {
                        owners.remove(namespace);
                    }
                }
                if owners.is_empty() {
                    self.listed_by.remove(recipient.as_str());
                }
            }
        }
        if old.object.spec.recipient_selector.is_some()
            && let Some(count) = self.selecting_owners.get_mut(namespace)
        {
            *count -= 1;
            if *count == 0 {
                self.selecting_owners.remove(namespace);
            }
        }
        if self.shares.get(namespace).is_some_and(|m| m.is_empty()) {
            self.shares.remove(namespace);
        }
    }

    pub fn upsert_acceptance(&mut self, acceptance: Arc<ShareAcceptance>) {
        let ns = acceptance.namespace().unwrap_or_default();
        let name: Arc<str> = acceptance.name_any().into();
        let known = self
            .acceptances
            .get(&ns)
            .and_then(|m| m.get(&name))
            .map(|e| e.age.clone());
        self.remove_acceptance(&ns, &name);
        let age = self.age_of(&acceptance.metadata, known);
        let entry = Arc::new(Entry {
            regarding: Regarding::named(Kind::ShareAcceptance, &acceptance.metadata, name.clone()),
            object: acceptance,
            name: name.clone(),
            age,
        });
        let spec = &entry.object.spec;
        if spec.owner_selector.is_some() {
            // It may decide for any owner whose labels match.
            self.touch_all();
            self.selector_acceptances
                .entry(ns.clone())
                .or_default()
                .insert(name.clone(), entry.clone());
        } else {
            self.touch_owner(&spec.owner);
            self.acceptances_about
                .entry(spec.owner.clone())
                .or_default()
                .entry(ns.clone())
                .or_default()
                .insert(name.clone(), entry.clone());
        }
        self.acceptances.entry(ns).or_default().insert(name, entry);
    }

    pub fn remove_acceptance(&mut self, namespace: &str, name: &str) {
        let Some(old) = self.acceptances.get_mut(namespace).and_then(|m| m.remove(name)) else {
            return;
        };
        if old.object.spec.owner_selector.is_some() {
            self.touch_all();
            if let Some(names) = self.selector_acceptances.get_mut(namespace) {
                names.remove(name);
                if names.is_empty() {
                    self.selector_acceptances.remove(namespace);
                }
            }
        }
        let owner = &old.object.spec.owner;
        self.touch_owner(owner);
        if let Some(by_recipient) = self.acceptances_about.get_mut(owner) {
            if let Some(names) = by_recipient.get_mut(namespace) {
                names.remove(name);
                if names.is_empty() {
                    by_recipient.remove(namespace);
                }
            }
            if by_recipient.is_empty() {
                self.acceptances_about.remove(owner);
            }
        }
        if self.acceptances.get(namespace).is_some_and(|m| m.is_empty()) {
            self.acceptances.remove(namespace);
        }
    }

    pub fn set_volume(&mut self, namespace: &str, name: &str, state: Option<VolumeState>) {
        self.touch_owner(namespace);
        let key = (namespace.to_string(), name.to_string());
        match state {
            Some(s) => self.volumes.insert(key, s),
            None => self.volumes.remove(&key),
        };
    }

    pub fn set_machine(&mut self, namespace: &str, name: &str, info: Option<impl Into<MachineInfo>>) {
        self.touch_owner(namespace);
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
        self.touch_owner(namespace);
        set_unreadable(&mut self.unreadable.images, namespace, name, status);
    }

    /// Records an ImageShare that does not decode and was never decoded (`None` forgets it).
    pub fn set_unreadable_share(
        &mut self,
        namespace: &str,
        name: &str,
        status: Option<Option<crate::api::ImageShareStatus>>,
    ) {
        self.touch_owner(namespace);
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
            self.touch_all();
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
            self.touch_owner(namespace);
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
            self.touch_owner(namespace);
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
        self.acceptances
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|e| &**e)
    }

    /// The acceptances that name `owner`, by recipient in name order (see
    /// [`Snapshot::selecting_acceptances`] for those that select it by label).
    pub fn acceptances_naming<'a>(
        &'a self,
        owner: &str,
    ) -> impl Iterator<Item = (&'a str, impl Iterator<Item = &'a Entry<ShareAcceptance>> + 'a)> + 'a {
        self.acceptances_about
            .get(owner)
            .into_iter()
            .flatten()
            .map(|(recipient, named)| (recipient.as_str(), named.values().map(|e| &**e)))
    }

    /// The acceptances of a recipient whose ownerSelector matches the labels of `owner`.
    pub fn selecting_acceptances<'a>(
        &'a self,
        recipient: &str,
        owner: &str,
    ) -> impl Iterator<Item = &'a Entry<ShareAcceptance>> + use<'a> {
        let labels = self.labels_of(owner);
        self.selector_acceptances_in(recipient).filter(move |e| {
            e.object
                .spec
                .owner_selector
                .as_ref()
                .is_some_and(|sel| super::selector::matches(sel, labels))
        })
    }

    /// The namespaces an ImageShare's recipientSelector selects, by name: existing, not being
    /// deleted, not the owner. (Namespaces of another region are left out by the engine.)
    pub fn selected_by(&self, owner: &str, share: &ImageShare) -> Vec<&str> {
        let Some(selector) = share.spec.recipient_selector.as_ref() else {
            return Vec::new();
        };
        let mut names: Vec<&str> = self
            .namespaces
            .iter()
            .filter(|(name, info)| {
                name.as_str() != owner && !info.leaving && super::selector::matches(selector, &info.labels)
            })
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The labels of a namespace (none when it is not known).
    pub fn labels_of(&self, namespace: &str) -> &BTreeMap<String, String> {
        self.namespaces
            .get(namespace)
            .map_or(&EMPTY_LABELS, |info| &info.labels)
    }

    /// The ShareAcceptances of a recipient that select owners by label.
    pub fn selector_acceptances_in<'a>(
        &'a self,
        recipient: &str,
    ) -> impl Iterator<Item = &'a Entry<ShareAcceptance>> + use<'a> {
        self.selector_acceptances
            .get(recipient)
            .into_iter()
            .flat_map(|n| n.values())
            .map(|e| &**e)
    }

    /// The owners with an ImageShare that selects recipients by label.
    pub fn selecting_owners(&self) -> impl Iterator<Item = &str> {
        self.selecting_owners.keys().map(String::as_str)
    }

    /// Every namespace the engine has something to say about: those that hold an object of the
    /// three kinds, an ImageQuota or an ImageOffer, carry a limit annotation, or are listed as
    /// a recipient.
    pub fn tenants(&self) -> BTreeSet<String> {
        let annotated = self
            .namespaces
            .iter()
            .filter(|(_, info)| info.has_limit_annotation())
            .map(|(name, _)| name);
        self.images
            .keys()
            .chain(self.shares.keys())
            .chain(self.acceptances.keys())
            .chain(self.quotas.keys())
            .chain(self.offers.keys())
            .chain(self.listed_by.keys())
            .chain(annotated)
            .cloned()
            .chain(self.selected_recipients().map(str::to_string))
            .collect()
    }

    /// Every namespace some ImageShare selects by label.
    fn selected_recipients(&self) -> impl Iterator<Item = &str> {
        self.selecting_owners().flat_map(move |owner| {
            self.shares_in(owner)
                .flat_map(move |s| self.selected_by(owner, &s.object))
        })
    }

    /// Records the ImageQuota a namespace holds (`None`: it holds none).
    pub fn set_quota(&mut self, namespace: &str, quota: Option<Arc<ImageQuota>>) {
        match quota {
            Some(q) => self.quotas.insert(namespace.to_string(), q),
            None => self.quotas.remove(namespace),
        };
    }

    /// The ImageQuota a namespace holds.
    pub fn quota(&self, namespace: &str) -> Option<&Arc<ImageQuota>> {
        self.quotas.get(namespace)
    }

    /// Records the ImageOffer of `owner` a recipient namespace holds (`None`: it holds none).
    pub fn set_offer(&mut self, recipient: &str, owner: &str, offer: Option<Arc<ImageOffer>>) {
        match offer {
            Some(o) => {
                self.offers
                    .entry(recipient.to_string())
                    .or_default()
                    .insert(owner.to_string(), o);
            }
            None => {
                if let Some(m) = self.offers.get_mut(recipient) {
                    m.remove(owner);
                    if m.is_empty() {
                        self.offers.remove(recipient);
                    }
                }
            }
        }
    }

    /// The ImageOffer of `owner` a recipient namespace holds.
    pub fn offer(&self, recipient: &str, owner: &str) -> Option<&Arc<ImageOffer>> {
        self.offers.get(recipient)?.get(owner)
    }

    /// A ShareAcceptance by name.
    pub fn acceptance(&self, namespace: &str, name: &str) -> Option<&Entry<ShareAcceptance>> {
        self.acceptances.get(namespace)?.get(name).map(|e| &**e)
    }

    /// The ImageOffers a recipient namespace holds, by owner.
    pub fn offers_in(&self, recipient: &str) -> impl Iterator<Item = (&String, &Arc<ImageOffer>)> {
        self.offers.get(recipient).into_iter().flat_map(|m| m.iter())
    }

    /// The owners that may offer something to a recipient: those whose ImageShares list or
    /// select it, and those whose ImageOffer it holds (the offer may have to go).
    pub fn owners_offering(&self, recipient: &str) -> BTreeSet<&str> {
        let listing = self.listed_by.get(recipient).into_iter().flat_map(|m| m.keys());
        let holding = self.offers.get(recipient).into_iter().flat_map(|m| m.keys());
        let selecting = self.selecting_owners().filter(|owner| {
            self.shares_in(owner)
                .any(|s| self.selected_by(owner, &s.object).contains(&recipient))
        });
        listing.chain(holding).map(String::as_str).chain(selecting).collect()
    }

    /// The recipients an owner's ImageShares list or select.
    pub fn recipients_listed_by(&self, owner: &str) -> BTreeSet<&str> {
        self.shares_in(owner)
            .flat_map(|s| {
                let listed = s.object.spec.recipients.iter().map(String::as_str);
                listed.chain(self.selected_by(owner, &s.object))
            })
            .collect()
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

fn remove_from<K>(map: &mut HashMap<String, BTreeMap<Arc<str>, Entry<K>>>, namespace: &str, name: &str) {
    if let Some(m) = map.get_mut(namespace) {
        m.remove(name);
        if m.is_empty() {
            map.remove(namespace);
        }
    }
}
