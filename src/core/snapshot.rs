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

/// Position of an object in the "oldest first" order of SPEC §3.1: objects with a
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
}

impl NamespaceInfo {
    pub fn from_namespace(ns: &Namespace) -> Self {
        NamespaceInfo {
            labels: ns.labels().clone(),
            annotations: ns.annotations().clone(),
            uid: ns.metadata.uid.clone(),
        }
    }
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
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub config: Config,
    pub subjects: Vec<SubjectTemplate>,
    pub now: Timestamp,
    pub world: World,
    pub(crate) namespaces: HashMap<String, NamespaceInfo>,
    pub(crate) images: HashMap<String, BTreeMap<String, Entry<PrivateImage>>>,
    pub(crate) shares: HashMap<String, BTreeMap<String, Entry<ImageShare>>>,
    pub(crate) acceptances: HashMap<String, BTreeMap<String, Entry<ShareAcceptance>>>,
    /// (recipient namespace, owner namespace) -> names of the recipient's acceptances.
    pub(crate) acceptances_by_owner: HashMap<(String, String), BTreeSet<String>>,
    pub(crate) volumes: HashMap<(String, String), VolumeState>,
    pub(crate) machines: HashMap<(String, String), MachineState>,
    next_input_order: u64,
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
            next_input_order: 0,
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

    pub fn upsert_namespace(&mut self, name: &str, info: NamespaceInfo) {
        self.namespaces.insert(name.to_string(), info);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn upsert_image(&mut self, image: Arc<PrivateImage>) {
        let age = self.age_of(&image.metadata);
        let ns = image.namespace().unwrap_or_default();
        self.images
            .entry(ns)
            .or_default()
            .insert(image.name_any(), Entry { object: image, age });
    }

    pub fn remove_image(&mut self, namespace: &str, name: &str) {
        remove_from(&mut self.images, namespace, name);
    }

    pub fn upsert_share(&mut self, share: Arc<ImageShare>) {
        let age = self.age_of(&share.metadata);
        let ns = share.namespace().unwrap_or_default();
        self.shares
            .entry(ns)
            .or_default()
            .insert(share.name_any(), Entry { object: share, age });
    }

    pub fn remove_share(&mut self, namespace: &str, name: &str) {
        remove_from(&mut self.shares, namespace, name);
    }

    pub fn upsert_acceptance(&mut self, acceptance: Arc<ShareAcceptance>) {
        let ns = acceptance.namespace().unwrap_or_default();
        let name = acceptance.name_any();
        self.remove_acceptance(&ns, &name);
        let age = self.age_of(&acceptance.metadata);
        self.acceptances_by_owner
            .entry((ns.clone(), acceptance.spec.owner.clone()))
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
        let key = (namespace.to_string(), old.object.spec.owner.clone());
        if let Some(names) = self.acceptances_by_owner.get_mut(&key) {
            names.remove(name);
            if names.is_empty() {
                self.acceptances_by_owner.remove(&key);
            }
        }
        if self.acceptances.get(namespace).is_some_and(|m| m.is_empty()) {
            self.acceptances.remove(namespace);
        }
    }

    pub fn set_volume(&mut self, namespace: &str, name: &str, state: Option<VolumeState>) {
        let key = (namespace.to_string(), name.to_string());
        match state {
            Some(s) => self.volumes.insert(key, s),
            None => self.volumes.remove(&key),
        };
    }

    pub fn set_machine(&mut self, namespace: &str, name: &str, state: Option<MachineState>) {
        let key = (namespace.to_string(), name.to_string());
        match state {
            Some(s) => self.machines.insert(key, s),
            None => self.machines.remove(&key),
        };
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
        let names = self
            .acceptances_by_owner
            .get(&(recipient.to_string(), owner.to_string()));
        let all = self.acceptances.get(recipient);
        names
            .into_iter()
            .flat_map(|n| n.iter())
            .filter_map(move |n| all.and_then(|m| m.get(n)))
    }

    /// Every namespace that holds at least one object of the three kinds.
    pub fn tenants(&self) -> BTreeSet<String> {
        self.images
            .keys()
            .chain(self.shares.keys())
            .chain(self.acceptances.keys())
            .cloned()
            .collect()
    }

    pub fn volume(&self, namespace: &str, name: &str) -> Option<VolumeState> {
        self.volumes.get(&(namespace.to_string(), name.to_string())).copied()
    }

    pub fn machine(&self, namespace: &str, name: &str) -> Option<MachineState> {
        self.machines.get(&(namespace.to_string(), name.to_string())).copied()
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
