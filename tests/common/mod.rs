//! Builders shared by the engine tests: small constructors for the three kinds, a scenario
//! around a `Snapshot`, and lookups into the outcomes of an evaluation.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ims_operator::{
    api::{
        Condition, Decision, FileFormat, FileSource, ImageOffer, ImageOfferStatus, ImageQuota, ImageShare,
        ImageShareSpec, ImageShareStatus, ImageSource, PrivateImage, PrivateImageSpec, PrivateImageStatus,
        ServerSource, ShareAcceptance, ShareAcceptanceSpec, ShareAcceptanceStatus, ShareState, VolumeSource,
        ready_condition,
    },
    config::Config,
    core::{self, EventSpec, Grant, Kind, NamespaceInfo, QuotaUpdate, Snapshot, TenantOutcome, World},
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

/// 2026-01-01T00:00:00Z: the base of `at`.
const BASE: i64 = 1_767_225_600;

/// The evaluation time of every test: 2026-06-01T00:00:00Z.
pub fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

/// `minutes` after 2026-01-01T00:00:00Z (well before `now()`): creation times.
pub fn at(minutes: i64) -> Timestamp {
    Timestamp::from_second(BASE + minutes * 60).unwrap()
}

/// `seconds` after `now()` (negative: before).
pub fn from_now(seconds: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() + seconds).unwrap()
}

pub fn meta(ns: &str, name: &str, created: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        creation_timestamp: Some(Time(at(created))),
        generation: Some(1),
        uid: Some(format!("uid-{ns}-{name}")),
        ..Default::default()
    }
}

fn spec_with(source: ImageSource) -> PrivateImageSpec {
    PrivateImageSpec {
        display_name: Some("Display name".into()),
        description: None,
        image_type: Default::default(),
        os_type: None,
        os_version: Some("CentOS 7.6 64bit".into()),
        architecture: Default::default(),
        disk_size_gib: 40,
        min_memory_mib: None,
        source,
        published: false,
    }
}

/// A PrivateImage with a valid `file` source, created `created` minutes after the base time.
pub fn image(ns: &str, name: &str, created: i64) -> PrivateImage {
    PrivateImage {
        metadata: meta(ns, name, created),
        spec: spec_with(ImageSource {
            file: Some(FileSource {
                url: format!("s3://{ns}-images/{name}.qcow2"),
                format: FileFormat::Qcow2,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn volume_image(ns: &str, name: &str, pvc: &str, created: i64) -> PrivateImage {
    PrivateImage {
        metadata: meta(ns, name, created),
        spec: spec_with(ImageSource {
            volume: Some(VolumeSource {
                persistent_volume_claim: pvc.into(),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn server_image(ns: &str, name: &str, vm: &str, created: i64) -> PrivateImage {
    PrivateImage {
        metadata: meta(ns, name, created),
        spec: spec_with(ImageSource {
            server: Some(ServerSource { name: vm.into() }),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn share(ns: &str, name: &str, images: &[&str], recipients: &[&str], created: i64) -> ImageShare {
    ImageShare {
        metadata: meta(ns, name, created),
        spec: ImageShareSpec {
            images: images.iter().map(|s| s.to_string()).collect(),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            recipient_selector: None,
            expires_at: None,
        },
        status: None,
    }
}

pub fn acceptance(
    ns: &str,
    name: &str,
    owner: &str,
    images: &[&str],
    decision: Decision,
    created: i64,
) -> ShareAcceptance {
    ShareAcceptance {
        metadata: meta(ns, name, created),
        spec: ShareAcceptanceSpec {
            owner: owner.into(),
            owner_selector: None,
            images: images.iter().map(|s| s.to_string()).collect(),
            decision,
        },
        status: None,
    }
}

/// A config with the given default limits.
pub fn limits(private: i64, shared: i64, recipients: i64) -> Config {
    let mut config = Config::default();
    config.limits.private_images_per_tenant = private;
    config.limits.shared_images_per_tenant = shared;
    config.limits.recipients_per_image = recipients;
    config
}

/// A snapshot under construction.
pub struct Scenario {
    pub snap: Snapshot,
}

impl Scenario {
    pub fn new(config: Config, world: World) -> Self {
        Scenario {
            snap: Snapshot::new(config, world, now()).unwrap(),
        }
    }

    /// The default config in a cluster with KubeVirt support.
    pub fn cluster() -> Self {
        Self::new(Config::default(), World::Cluster { kubevirt: true })
    }

    /// Namespaces without labels or annotations.
    pub fn namespaces(&mut self, names: &[&str]) -> &mut Self {
        for n in names {
            self.namespace(n, &[], &[]);
        }
        self
    }

    pub fn namespace(&mut self, name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> &mut Self {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.snap.upsert_namespace(
            name,
            NamespaceInfo {
                labels: map(labels),
                annotations: map(annotations),
                uid: Some(format!("uid-ns-{name}")),
                leaving: false,
            },
        );
        self
    }

    /// Marks a namespace as being deleted.
    pub fn leaving(&mut self, name: &str) -> &mut Self {
        let mut info = self.snap.namespace(name).map(|c| c.into_owned()).unwrap_or_default();
        info.leaving = true;
        self.snap.upsert_namespace(name, info);
        self
    }

    pub fn image(&mut self, image: PrivateImage) -> &mut Self {
        self.snap.upsert_image(Arc::new(image));
        self
    }

    pub fn share(&mut self, share: ImageShare) -> &mut Self {
        self.snap.upsert_share(Arc::new(share));
        self
    }

    pub fn acceptance(&mut self, acceptance: ShareAcceptance) -> &mut Self {
        self.snap.upsert_acceptance(Arc::new(acceptance));
        self
    }

    pub fn eval(&self) -> Outcome {
        Outcome(core::evaluate_all(&self.snap))
    }

    /// Writes the desired statuses into the objects, as the controller's status writes would.
    pub fn feed_back(&mut self, out: &Outcome) {
        feed_back(&mut self.snap, &out.0);
    }

    /// Evaluates and writes the statuses back; returns the evaluation.
    pub fn settle(&mut self) -> Outcome {
        let out = self.eval();
        self.feed_back(&out);
        out
    }

    /// Changes the decision of an existing acceptance, keeping its status (a spec edit).
    pub fn set_decision(&mut self, ns: &str, name: &str, decision: Decision) -> &mut Self {
        let mut acc = self.get_acceptance(ns, name);
        acc.spec.decision = decision;
        acc.metadata.generation = acc.metadata.generation.map(|g| g + 1);
        self.acceptance(acc)
    }

    pub fn get_image(&self, ns: &str, name: &str) -> PrivateImage {
        (*self.snap.image(ns, name).expect("image exists").object).clone()
    }

    pub fn get_share(&self, ns: &str, name: &str) -> ImageShare {
        let entry = self
            .snap
            .shares_in(ns)
            .find(|e| e.object.metadata.name.as_deref() == Some(name));
        (*entry.expect("share exists").object).clone()
    }

    pub fn get_acceptance(&self, ns: &str, name: &str) -> ShareAcceptance {
        let entry = self
            .snap
            .acceptances_in(ns)
            .find(|e| e.object.metadata.name.as_deref() == Some(name));
        (*entry.expect("acceptance exists").object).clone()
    }
}

/// Sets `status` of every evaluated object to its desired status.
pub fn feed_back(snap: &mut Snapshot, outcomes: &[TenantOutcome]) {
    write_back(snap, outcomes, true);
}

/// Writes back what the controller would write: changed statuses and ImageOffers only (an
/// unchanged object is not written, so its version in the snapshot stays the same), the
/// quotas, and deletes withdrawn ImageOffers.
pub fn feed_back_changed(snap: &mut Snapshot, outcomes: &[TenantOutcome]) {
    write_back(snap, outcomes, false);
}

/// Writes the outcomes' statuses and ImageOffers into the snapshot: every one (`all`), or only
/// those that changed.
fn write_back(snap: &mut Snapshot, outcomes: &[TenantOutcome], all: bool) {
    for o in outcomes {
        let ns = o.namespace.as_str();
        for u in o.images.iter().filter(|u| all || u.changed) {
            let mut obj = (*snap.image(ns, &u.name).expect("evaluated image exists").object).clone();
            obj.status = Some(u.status.clone());
            snap.upsert_image(Arc::new(obj));
        }
        for u in o.shares.iter().filter(|u| all || u.changed) {
            let entry = snap
                .shares_in(ns)
                .find(|e| e.object.metadata.name.as_deref() == Some(&*u.name));
            let mut obj = (*entry.expect("evaluated share exists").object).clone();
            obj.status = Some(u.status.clone());
            snap.upsert_share(Arc::new(obj));
        }
        for u in o.acceptances.iter().filter(|u| all || u.changed) {
            let entry = snap.acceptance(ns, &u.name).expect("evaluated acceptance exists");
            let mut obj = (*entry.object).clone();
            obj.status = Some(u.status.clone());
            snap.upsert_acceptance(Arc::new(obj));
        }
        for u in o.offers.iter().filter(|u| all || u.changed) {
            let offer = ImageOffer::of(ns, &u.name, u.status.clone());
            snap.set_offer(ns, &u.name, Some(Arc::new(offer)));
        }
        for owner in &o.withdrawn_offers {
            snap.set_offer(ns, owner, None);
        }
        match &o.quota {
            QuotaUpdate::Unchanged => {}
            QuotaUpdate::Apply { status, .. } => {
                snap.set_quota(ns, Some(Arc::new(ImageQuota::of(ns, status.clone()))));
            }
            QuotaUpdate::Delete => snap.set_quota(ns, None),
        }
    }
}

/// The outcomes of one evaluation, with lookups.
pub struct Outcome(pub Vec<TenantOutcome>);

impl Outcome {
    pub fn tenant(&self, ns: &str) -> &TenantOutcome {
        self.0
            .iter()
            .find(|o| o.namespace == ns)
            .unwrap_or_else(|| panic!("no outcome for namespace {ns}"))
    }

    pub fn image(&self, ns: &str, name: &str) -> &PrivateImageStatus {
        let u = self.tenant(ns).images.iter().find(|u| &*u.name == name);
        &u.unwrap_or_else(|| panic!("no PrivateImage {ns}/{name}")).status
    }

    pub fn share(&self, ns: &str, name: &str) -> &ImageShareStatus {
        let u = self.tenant(ns).shares.iter().find(|u| &*u.name == name);
        &u.unwrap_or_else(|| panic!("no ImageShare {ns}/{name}")).status
    }

    /// The ImageOffer of `owner` in `recipient`.
    pub fn offer(&self, recipient: &str, owner: &str) -> Option<&ImageOfferStatus> {
        self.0
            .iter()
            .find(|o| o.namespace == recipient)?
            .offers
            .iter()
            .find(|u| &*u.name == owner)
            .map(|u| &u.status)
    }

    /// (image, state, decidedBy) of the ImageOffer of `owner` in `recipient`.
    pub fn inbox(&self, recipient: &str, owner: &str) -> Vec<(String, ShareState, Option<String>)> {
        self.offer(recipient, owner)
            .into_iter()
            .flat_map(|o| &o.images)
            .map(|i| (i.name.to_string(), i.state, i.decided_by.as_deref().map(String::from)))
            .collect()
    }

    pub fn acceptance(&self, ns: &str, name: &str) -> &ShareAcceptanceStatus {
        let u = self.tenant(ns).acceptances.iter().find(|u| &*u.name == name);
        &u.unwrap_or_else(|| panic!("no ShareAcceptance {ns}/{name}")).status
    }

    pub fn grants(&self, ns: &str) -> &[Grant] {
        self.0
            .iter()
            .find(|o| o.namespace == ns)
            .map(|o| o.grants.as_slice())
            .unwrap_or_default()
    }

    /// Grant subjects by image, as `Kind:name` strings.
    pub fn grant_subjects(&self, ns: &str) -> BTreeMap<String, Vec<String>> {
        self.grants(ns)
            .iter()
            .map(|g| {
                let binding = g.binding();
                let subjects = binding.subjects.iter().flatten();
                (
                    g.image.clone(),
                    subjects.map(|s| format!("{}:{}", s.kind, s.name)).collect(),
                )
            })
            .collect()
    }

    pub fn events(&self) -> Vec<&EventSpec> {
        self.0.iter().flat_map(|o| &o.events).collect()
    }

    /// Events about one object.
    pub fn events_on(&self, kind: &str, ns: &str, name: &str) -> Vec<&EventSpec> {
        self.events()
            .into_iter()
            .filter(|e| {
                e.regarding.kind.as_str() == kind
                    && *e.regarding.name == *name
                    && (e.regarding.kind == Kind::Namespace || e.regarding.namespace.as_deref() == Some(ns))
            })
            .collect()
    }

    /// Number of statuses that differ from the current ones.
    /// How many statuses of the three kinds change (the ImageQuotas are counted apart).
    pub fn changed(&self) -> usize {
        self.0
            .iter()
            .map(|o| {
                o.images.iter().filter(|u| u.changed).count()
                    + o.shares.iter().filter(|u| u.changed).count()
                    + o.acceptances.iter().filter(|u| u.changed).count()
            })
            .sum()
    }
}

/// (status, reason, message) of the Ready condition.
pub fn ready(conditions: &[Condition]) -> (&str, &str, &str) {
    let c = ready_condition(conditions).expect("a Ready condition");
    (&*c.status, &*c.reason, c.message.as_str())
}

/// (status, reason) of the Ready condition, to compare with [`t`].
pub fn sr(conditions: &[Condition]) -> (String, String) {
    let (s, r, _) = ready(conditions);
    (s.to_string(), r.to_string())
}

/// An expected (status, reason).
pub fn t(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

/// The state of (image, recipient) in an ImageShare status, if offered.
pub fn pair_state(status: &ImageShareStatus, image: &str, recipient: &str) -> Option<ShareState> {
    status.images.iter().find(|i| i.name == image)?.state_of(recipient)
}

/// Every recipient an ImageShare status lists for an image, any state.
pub fn listed(status: &ImageShareStatus, image: &str) -> BTreeSet<String> {
    status
        .images
        .iter()
        .filter(|i| i.name == image)
        .flat_map(|i| i.recipients())
        .map(|r| r.to_string())
        .collect()
}

/// (image name, state, reason, decidedBy) of a ShareAcceptance status.
pub fn received(status: &ShareAcceptanceStatus) -> Vec<(String, ShareState, String, Option<String>)> {
    status
        .images
        .iter()
        .map(|i| {
            (
                i.name.to_string(),
                i.state,
                i.reason.as_str().to_string(),
                i.decided_by.as_deref().map(String::from),
            )
        })
        .collect()
}
