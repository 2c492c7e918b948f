//! A reference model of the sharing rules, written straight from the README ("The API",
//! "Limits and regions") and docs/security.md ("Unreadable objects fail closed", "Tenants leave
//! cleanly"): no indexes, no memoisation, every question answered by scanning the whole (small)
//! world again. A proptest property checks that the engine agrees with it on random worlds — on
//! the first evaluation, once the statuses are written back, and after that with limits lowered,
//! recipients swapped, decisions changed, images added and objects turned unreadable (sticky
//! admission) — about every listed (image, recipient) pair (offered and in which state, or the
//! reason it is refused), every PrivateImage's admission and readiness, every grant subject,
//! every recipient's inbox (the ImageOffer of each owner: the images offered, their states, the
//! acceptance that decided each and when the offer ends; which ImageOffers must go) and every
//! ShareAcceptance's own decisions (the offered images it covers, each with its state, whose
//! decision is in effect, and its Ready reason).
//!
//! The model decides admissions and winners itself; it reads only the objects (specs, the
//! current statuses as the record of what was admitted, namespaces and volumes, and which
//! ImageOffers the recipients hold). `Rules` names the points where the engine departed (or
//! departs) from the documented rules; a test per point holds its minimal case and checks that
//! the model tells the two rules apart there. A departure the engine still has would be listed
//! in `KNOWN_DIVERGENCES` (empty: none is known).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{acceptance, at, from_now, image, limits, now, share, volume_image};
use ims_operator::{
    api::{
        Decision, DecisionReason, ImageOffer, ImageShare, ImageShareStatus, PrivateImage, PrivateImageStatus,
        ShareAcceptance, ShareState,
    },
    core::{self, NamespaceInfo, Snapshot, TenantOutcome, VolumeState, World},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

const CASES: u32 = 512;
const REGION_LABEL: &str = "ims.imageshare.io/region";
const LIMIT_KEYS: [&str; 3] = [
    "ims.imageshare.io/limit.private-images",
    "ims.imageshare.io/limit.shared-images",
    "ims.imageshare.io/limit.recipients-per-image",
];
/// The config defaults of these worlds (private images, shared images, recipients per image):
/// small, so that the limits bite.
const DEFAULTS: [i64; 3] = [3, 2, 2];
/// The operator's region (the config default).
const DEFAULT_REGION: &str = "default";
/// Names referenced by shares and acceptances range over more than exist.
const IMAGE_NAMES: u8 = 5;
const NAMESPACE_NAMES: u8 = 6;

// ---------------------------------------------------------------------------------------------
// The world: the objects both the engine and the model read.

/// An object with its input order (the order it is put into the snapshot).
#[derive(Clone, Debug)]
struct Obj<K> {
    seq: u64,
    object: K,
}

#[derive(Clone, Debug, Default)]
struct Cluster {
    namespaces: BTreeMap<String, NamespaceInfo>,
    volumes: BTreeMap<(String, String), VolumeState>,
    images: Vec<Obj<PrivateImage>>,
    shares: Vec<Obj<ImageShare>>,
    acceptances: Vec<Obj<ShareAcceptance>>,
    /// Objects the operator holds but never decoded: (namespace, name) -> the status part, when
    /// that decodes on its own.
    unreadable_images: BTreeMap<(String, String), Option<PrivateImageStatus>>,
    unreadable_shares: BTreeMap<(String, String), Option<ImageShareStatus>>,
    unreadable_acceptances: BTreeSet<(String, String)>,
    /// The ImageOffers the operator keeps, by (recipient, owner).
    offers: BTreeMap<(String, String), ImageOffer>,
}

fn ns_of<K: kube::Resource>(o: &K) -> String {
    o.meta().namespace.clone().unwrap_or_default()
}

fn name_of<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

/// A snapshot holding the cluster, objects put in in input order.
fn snapshot(c: &Cluster) -> Snapshot {
    let config = limits(DEFAULTS[0], DEFAULTS[1], DEFAULTS[2]);
    let mut snap = Snapshot::new(config, World::Cluster { kubevirt: true }, now()).unwrap();
    for (name, info) in &c.namespaces {
        snap.upsert_namespace(name, info.clone());
    }
    for ((ns, name), state) in &c.volumes {
        snap.set_volume(ns, name, Some(*state));
    }
    enum Put<'a> {
        Image(&'a PrivateImage),
        Share(&'a ImageShare),
        Acceptance(&'a ShareAcceptance),
    }
    let mut all: Vec<(u64, Put)> = Vec::new();
    all.extend(c.images.iter().map(|o| (o.seq, Put::Image(&o.object))));
    all.extend(c.shares.iter().map(|o| (o.seq, Put::Share(&o.object))));
    all.extend(c.acceptances.iter().map(|o| (o.seq, Put::Acceptance(&o.object))));
    all.sort_by_key(|(seq, _)| *seq);
    for ((ns, name), status) in &c.unreadable_images {
        snap.set_unreadable_image(ns, name, Some(status.clone()));
    }
    for ((ns, name), status) in &c.unreadable_shares {
        snap.set_unreadable_share(ns, name, Some(status.clone()));
    }
    for (ns, name) in &c.unreadable_acceptances {
        snap.set_unreadable_acceptance(ns, name, true);
    }
    for (_, put) in all {
        match put {
            Put::Image(o) => snap.upsert_image(Arc::new(o.clone())),
            Put::Share(o) => snap.upsert_share(Arc::new(o.clone())),
            Put::Acceptance(o) => snap.upsert_acceptance(Arc::new(o.clone())),
        }
    }
    for ((recipient, owner), offer) in &c.offers {
        snap.set_offer(recipient, owner, Some(Arc::new(offer.clone())));
    }
    snap
}

/// Writes the engine's desired statuses into the objects (input order unchanged), and its
/// ImageOffers: written when they changed, deleted when withdrawn.
fn feed_back(c: &mut Cluster, outcomes: &[TenantOutcome]) {
    for o in outcomes {
        for u in o.offers.iter().filter(|u| u.changed) {
            let offer = ImageOffer::of(&o.namespace, &u.name, u.status.clone());
            c.offers.insert((o.namespace.clone(), u.name.to_string()), offer);
        }
        for owner in &o.withdrawn_offers {
            c.offers.remove(&(o.namespace.clone(), owner.clone()));
        }
        for u in &o.images {
            for obj in c.images.iter_mut() {
                if ns_of(&obj.object) == o.namespace && *name_of(&obj.object) == *u.name {
                    obj.object.status = Some(u.status.clone());
                }
            }
        }
        for u in &o.shares {
            for obj in c.shares.iter_mut() {
                if ns_of(&obj.object) == o.namespace && *name_of(&obj.object) == *u.name {
                    obj.object.status = Some(u.status.clone());
                }
            }
        }
        for u in &o.acceptances {
            for obj in c.acceptances.iter_mut() {
                if ns_of(&obj.object) == o.namespace && *name_of(&obj.object) == *u.name {
                    obj.object.status = Some(u.status.clone());
                }
            }
        }
    }
}

/// A compact, readable listing of a cluster (for failure messages).
fn describe(c: &Cluster) -> String {
    let mut out = String::new();
    let created = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| match &m.creation_timestamp {
        Some(t) => format!("t={}min", (t.0.as_second() - at(0).as_second()) / 60),
        None => "unstamped".to_string(),
    };
    for (name, info) in &c.namespaces {
        out += &format!(
            "Namespace {name} labels={:?} annotations={:?}{}\n",
            info.labels,
            info.annotations,
            if info.leaving { " LEAVING" } else { "" }
        );
    }
    for ((ns, name), state) in &c.volumes {
        out += &format!("PVC {ns}/{name} {state:?}\n");
    }
    for o in &c.images {
        let i = &o.object;
        let source = match (&i.spec.source.file, &i.spec.source.volume) {
            (Some(_), _) => "file".to_string(),
            (_, Some(v)) => format!("volume {}", v.persistent_volume_claim),
            _ => "?".into(),
        };
        let status = i.status.as_ref().map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
                .collect::<Vec<_>>()
        });
        out += &format!(
            "PrivateImage {}/{} seq={} {} source={source} published={} status={status:?}\n",
            ns_of(i),
            name_of(i),
            o.seq,
            created(&i.metadata),
            i.spec.published
        );
    }
    for o in &c.shares {
        let s = &o.object;
        let record: Vec<String> = s
            .status
            .iter()
            .flat_map(|st| &st.images)
            .flat_map(|i| {
                i.lists()
                    .into_iter()
                    .flat_map(move |(state, list)| list.iter().map(move |r| format!("{}→{r}:{state:?}", i.name)))
            })
            .collect();
        out += &format!(
            "ImageShare {}/{} seq={} {} images={:?} recipients={:?} expiresAt={:?} recorded={record:?}\n",
            ns_of(s),
            name_of(s),
            o.seq,
            created(&s.metadata),
            s.spec.images,
            s.spec.recipients,
            s.spec.expires_at.as_ref().map(|t| t.0.to_string()),
        );
    }
    for ((ns, name), status) in &c.unreadable_images {
        let status = status
            .as_ref()
            .map(|s| s.conditions.iter().map(|c| c.reason.clone()).collect::<Vec<_>>());
        out += &format!("unreadable PrivateImage {ns}/{name} status reasons={status:?}\n");
    }
    for ((ns, name), status) in &c.unreadable_shares {
        let record = status.as_ref().map(|s| {
            s.images
                .iter()
                .flat_map(|i| i.recipients().map(move |r| format!("{}→{r}", i.name)))
                .collect::<Vec<_>>()
        });
        out += &format!("unreadable ImageShare {ns}/{name} recorded={record:?}\n");
    }
    for (ns, name) in &c.unreadable_acceptances {
        out += &format!("unreadable ShareAcceptance {ns}/{name}\n");
    }
    for o in &c.acceptances {
        let a = &o.object;
        out += &format!(
            "ShareAcceptance {}/{} seq={} {} owner={} images={:?} decision={:?}\n",
            ns_of(a),
            name_of(a),
            o.seq,
            created(&a.metadata),
            a.spec.owner,
            a.spec.images,
            a.spec.decision
        );
    }
    for ((recipient, owner), offer) in &c.offers {
        let images: Vec<String> = offer
            .status
            .iter()
            .flat_map(|s| &s.images)
            .map(|i| format!("{}:{:?}", i.name, i.state))
            .collect();
        out += &format!("ImageOffer {recipient}/{owner} images={images:?}\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What is compared.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Offered(ShareState),
    /// Not offered, and the reason the ImageShare's Ready condition names.
    Refused(String),
}

/// Everything decided, in a comparable form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct View {
    /// (owner, share, image, recipient) for every pair an ImageShare lists.
    pairs: BTreeMap<(String, String, String, String), Verdict>,
    /// (namespace, image) -> (admitted under the private-images limit, Ready).
    images: BTreeMap<(String, String), (bool, bool)>,
    /// (owner, image, recipient) with a RoleBinding subject system:serviceaccounts:<recipient>.
    grants: BTreeSet<(String, String, String)>,
    /// (namespace, acceptance) -> its Ready reason, and the images its status lists: the
    /// offered images it covers, each with its state, whose decision is in effect and who that
    /// is when not this acceptance.
    received: BTreeMap<(String, String), (String, Vec<Received>)>,
    /// (recipient, owner) -> the images the ImageOffer lists.
    offers: BTreeMap<(String, String), Vec<Offered>>,
    /// (recipient, owner) of the ImageOffers that must be deleted.
    withdrawn: BTreeSet<(String, String)>,
}

/// An entry of a ShareAcceptance status: (image, state, reason, decidedBy).
type Received = (String, ShareState, DecisionReason, Option<String>);

/// An entry of an ImageOffer: (image, state, decidedBy, expiresAt).
type Offered = (String, ShareState, Option<String>, Option<Timestamp>);

/// Refusal written for every pair of a leaving owner: its statuses are never written (nothing is
/// written into a leaving namespace), so only "not offered" is compared.
const LEAVING: &str = "(owner leaving: not offered)";

fn diff(expected: &View, actual: &View) -> String {
    fn maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
        what: &str,
        e: &BTreeMap<K, V>,
        a: &BTreeMap<K, V>,
        out: &mut String,
    ) {
        let keys: BTreeSet<&K> = e.keys().chain(a.keys()).collect();
        for k in keys {
            if e.get(k) != a.get(k) {
                *out += &format!("  {what} {k:?}: model {:?}, engine {:?}\n", e.get(k), a.get(k));
            }
        }
    }
    let mut out = String::new();
    maps("pair", &expected.pairs, &actual.pairs, &mut out);
    maps("image", &expected.images, &actual.images, &mut out);
    for g in expected.grants.symmetric_difference(&actual.grants) {
        let who = if expected.grants.contains(g) {
            "model only"
        } else {
            "engine only"
        };
        out += &format!("  grant {g:?}: {who}\n");
    }
    maps("received", &expected.received, &actual.received, &mut out);
    maps("inbox", &expected.offers, &actual.offers, &mut out);
    for w in expected.withdrawn.symmetric_difference(&actual.withdrawn) {
        let who = if expected.withdrawn.contains(w) {
            "model only"
        } else {
            "engine only"
        };
        out += &format!("  withdrawn ImageOffer {w:?}: {who}\n");
    }
    out
}

/// The engine's decisions, read from its outcomes.
fn engine_view(c: &Cluster, outcomes: &[TenantOutcome]) -> Result<View, String> {
    let mut view = View::default();
    for o in outcomes {
        let owner = &o.namespace;
        let leaving = c.namespaces.get(owner).is_some_and(|n| n.leaving);
        for u in &o.images {
            let ready = u.status.conditions.iter().find(|c| c.type_ == "Ready");
            let ready = ready.ok_or(format!("PrivateImage {owner}/{} has no Ready condition", u.name))?;
            view.images.insert(
                (owner.clone(), u.name.to_string()),
                (ready.reason != "QuotaExceeded", ready.status == "True"),
            );
        }
        for u in &o.shares {
            let spec = &c
                .shares
                .iter()
                .find(|s| ns_of(&s.object) == *owner && *name_of(&s.object) == *u.name)
                .ok_or("unknown share")?
                .object
                .spec;
            let mut found: BTreeMap<(String, String), Verdict> = BTreeMap::new();
            for img in &u.status.images {
                for (state, list) in img.lists() {
                    for r in list {
                        found.insert((img.name.clone(), r.to_string()), Verdict::Offered(state));
                    }
                }
            }
            let ready = u.status.conditions.iter().find(|c| c.type_ == "Ready");
            let ready = ready.ok_or(format!("ImageShare {owner}/{} has no Ready condition", u.name))?;
            for (reason, image, recipient) in parse_refusals(&ready.message)? {
                let verdict = Verdict::Refused(if leaving { LEAVING.to_string() } else { reason });
                if let Some(before) = found.insert((image.clone(), recipient.clone()), verdict) {
                    return Err(format!(
                        "ImageShare {owner}/{}: {image} → {recipient} both {before:?} and refused",
                        u.name
                    ));
                }
            }
            for image in &spec.images {
                for recipient in &spec.recipients {
                    let verdict = found
                        .remove(&(image.clone(), recipient.clone()))
                        .unwrap_or(Verdict::Refused("(neither listed nor refused)".into()));
                    view.pairs.insert(
                        (owner.clone(), u.name.to_string(), image.clone(), recipient.clone()),
                        verdict,
                    );
                }
            }
            if !found.is_empty() {
                return Err(format!(
                    "ImageShare {owner}/{} reports pairs it does not list: {found:?}",
                    u.name
                ));
            }
        }
        for g in o.grants.iter() {
            let binding = g.binding();
            for s in binding.subjects.iter().flatten() {
                if let Some(r) = s.name.strip_prefix("system:serviceaccounts:") {
                    view.grants.insert((owner.clone(), g.image.clone(), r.to_string()));
                }
            }
        }
        for u in &o.acceptances {
            let ready = u.status.conditions.iter().find(|c| c.type_ == "Ready");
            let ready = ready.ok_or(format!("ShareAcceptance {owner}/{} has no Ready condition", u.name))?;
            if u.status.more_images != 0 {
                return Err(format!("ShareAcceptance {owner}/{} cut its list short", u.name));
            }
            let list = u
                .status
                .images
                .iter()
                .map(|i| {
                    (
                        i.name.to_string(),
                        i.state,
                        i.reason,
                        i.decided_by.as_deref().map(String::from),
                    )
                })
                .collect();
            view.received
                .insert((owner.clone(), u.name.to_string()), (ready.reason.to_string(), list));
        }
        // `owner` is the recipient here: the ImageOffers it holds are named after their owners.
        let recipient = owner;
        for u in &o.offers {
            let s = &u.status;
            let what = format!("ImageOffer {recipient}/{}", u.name);
            if s.images.is_empty() || s.more_images != 0 {
                return Err(format!(
                    "{what} lists {} images, {} more",
                    s.images.len(),
                    s.more_images
                ));
            }
            let count = |state| s.images.iter().filter(|i| i.state == state).count() as i32;
            let counts = [
                ShareState::Pending,
                ShareState::Accepted,
                ShareState::Rejected,
                ShareState::Removed,
            ]
            .map(count);
            if [s.pending, s.accepted, s.rejected, s.removed] != counts {
                return Err(format!("{what}: counts {s:?}"));
            }
            let mut list = Vec::new();
            for i in &s.images {
                let source = i.source.as_ref().map(|src| src.namespace.as_str());
                let expected = (i.state == ShareState::Accepted).then_some(&*u.name);
                if source != expected {
                    return Err(format!("{what}: {} {:?} with source {:?}", i.name, i.state, i.source));
                }
                list.push((
                    i.name.to_string(),
                    i.state,
                    i.decided_by.as_deref().map(String::from),
                    i.expires_at.as_ref().map(|t| t.0),
                ));
            }
            if view
                .offers
                .insert((recipient.clone(), u.name.to_string()), list)
                .is_some()
            {
                return Err(format!("{what} twice"));
            }
        }
        for w in &o.withdrawn_offers {
            if !c.offers.contains_key(&(recipient.clone(), w.clone())) {
                return Err(format!("ImageOffer {recipient}/{w} withdrawn but not held"));
            }
            view.withdrawn.insert((recipient.clone(), w.clone()));
        }
    }
    Ok(view)
}

/// (reason, image, recipient) of every pair a Ready message names as not offered:
/// `not offered: Reason (detail): img → r1, r2, img2 → r3; Reason2: …`.
fn parse_refusals(message: &str) -> Result<Vec<(String, String, String)>, String> {
    let Some(rest) = message.strip_prefix("not offered: ") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in rest.split("; ") {
        let end = part.find([' ', ':']).ok_or(format!("unparsed {part:?}"))?;
        let reason = &part[..end];
        let tail = &part[end..];
        let pairs = match tail.strip_prefix(": ") {
            Some(p) => p,
            None => {
                let at = tail.find("): ").ok_or(format!("unparsed {part:?}"))?;
                &tail[at + 3..]
            }
        };
        let mut image = None;
        for token in pairs.split(", ") {
            let recipient = match token.split_once(" → ") {
                Some((i, r)) => {
                    image = Some(i.to_string());
                    r
                }
                None => token,
            };
            if recipient.contains(" more") {
                return Err(format!("list cut short in {message:?}"));
            }
            let image = image.clone().ok_or(format!("unparsed {part:?}"))?;
            out.push((reason.to_string(), image, recipient.to_string()));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The reference model.

/// Points on which the engine departed from the documented rules (the first three until commit
/// c9d14d9, the last one still); `true` is the documented rule, `false` what the engine did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rules {
    /// Sticky admission: an image of which any ImageShare status lists a pair keeps its
    /// shared-image slot, also when the pairs it is offered in are new ones (the owner swapped
    /// recipients). `false`: only if a recorded pair is still listed and valid.
    slot_kept_by_any_record: bool,
    /// New shared images are admitted in the order of the oldest ImageShare that lists them.
    /// `false`: the oldest ImageShare in which they have a valid (offerable) pair.
    order_by_listing: bool,
    /// An expired ImageShare still lists its images and recipients (for that order, and the
    /// order of new recipients). `false`: expired shares are left out of the order.
    expired_shares_list: bool,
    /// An ImageShare that can not be decoded holds the pairs its status records, and so the
    /// shared-image slots of the images in those pairs. `false` (the engine today): every image
    /// its status names holds a slot, also one listed with no recipient (all its pairs refused).
    unreadable_share_holds_recorded_pairs_only: bool,
}

const DOCUMENTED: Rules = Rules {
    slot_kept_by_any_record: true,
    order_by_listing: true,
    expired_shares_list: true,
    unreadable_share_holds_recorded_pairs_only: true,
};

/// The divergences the engine is known to have, each with an `#[ignore]`d test holding its
/// minimal case: the property accepts the engine's answer where it equals the model with exactly
/// these rules changed. Empty once the engine follows the documented rules.
const KNOWN_DIVERGENCES: &[fn(Rules) -> Rules] = &[];

/// "Oldest first": objects with a creationTimestamp by time, then name; objects without one are
/// younger than all of them, and among themselves ordered by input order.
type Age = (bool, Option<Timestamp>, u64, String);

fn age<K: kube::Resource>(o: &Obj<K>) -> Age {
    let meta = o.object.meta();
    match &meta.creation_timestamp {
        Some(t) => (false, Some(t.0), 0, name_of(&o.object)),
        None => (true, None, o.seq, name_of(&o.object)),
    }
}

/// `limit` leaves room for one more after `used` (-1: unlimited).
fn room(limit: i64, used: usize) -> bool {
    limit == -1 || (used as i64) < limit
}

struct Model<'a> {
    c: &'a Cluster,
    rules: Rules,
}

/// What the model decides for one owner.
#[derive(Default)]
struct OwnerDecision {
    /// image -> (admitted, Ready)
    images: BTreeMap<String, (bool, bool)>,
    /// Images admitted under the shared-images limit.
    shared: BTreeSet<String>,
    /// Offered pairs and their state.
    offered: BTreeMap<(String, String), ShareState>,
    /// Offered pairs: how their state was decided.
    decided: BTreeMap<(String, String), Decided>,
}

/// How the state of an offered pair was decided.
#[derive(Clone, Debug, Default)]
struct Decided {
    /// The winning ShareAcceptance: (name, names the image, decision).
    winner: Option<(String, bool, Decision)>,
    /// The winner accepts, but the recipient holds a ShareAcceptance the operator can not read
    /// (which might refuse): the pair keeps the state the owner's statuses record.
    withheld: bool,
}

/// Remove > Reject > Accept.
fn strength(d: Decision) -> u8 {
    match d {
        Decision::Accept => 0,
        Decision::Reject => 1,
        Decision::Remove => 2,
    }
}

fn covers(a: &ShareAcceptance, image: &str) -> bool {
    a.spec.images.is_empty() || a.spec.images.iter().any(|i| i == image)
}

impl Model<'_> {
    fn leaving(&self, ns: &str) -> bool {
        self.c.namespaces.get(ns).is_some_and(|n| n.leaving)
    }

    /// The region of an existing namespace that is not being deleted.
    fn region(&self, ns: &str) -> Option<String> {
        let info = self.c.namespaces.get(ns)?;
        if info.leaving {
            return None;
        }
        Some(info.labels.get(REGION_LABEL).cloned().unwrap_or(DEFAULT_REGION.into()))
    }

    /// Limit `k` (0 private images, 1 shared images, 2 recipients per image) of a namespace: its
    /// annotation when that is an integer >= -1, else the config default.
    fn limit(&self, ns: &str, k: usize) -> i64 {
        let value = self.c.namespaces.get(ns).and_then(|n| n.annotations.get(LIMIT_KEYS[k]));
        match value.and_then(|v| v.parse::<i64>().ok()) {
            Some(v) if v >= -1 => v,
            _ => DEFAULTS[k],
        }
    }

    fn images_of(&self, owner: &str) -> Vec<&Obj<PrivateImage>> {
        let mut v: Vec<&Obj<PrivateImage>> = self.c.images.iter().filter(|o| ns_of(&o.object) == owner).collect();
        v.sort_by_key(|o| age(o));
        v
    }

    fn shares_of(&self, owner: &str) -> Vec<&Obj<ImageShare>> {
        let mut v: Vec<&Obj<ImageShare>> = self.c.shares.iter().filter(|o| ns_of(&o.object) == owner).collect();
        v.sort_by_key(|o| age(o));
        v
    }

    fn expired(&self, s: &ImageShare) -> bool {
        s.spec.expires_at.as_ref().is_some_and(|t| t.0 <= now())
    }

    fn source_ok(&self, i: &PrivateImage) -> bool {
        let src = &i.spec.source;
        match (&src.file, &src.volume) {
            (Some(_), None) => true,
            (None, Some(v)) => {
                self.c.volumes.get(&(ns_of(i), v.persistent_volume_claim.clone())) == Some(&VolumeState::Bound)
            }
            _ => false,
        }
    }

    /// Admission under the private-images limit: what the statuses record (a Ready condition
    /// whose reason is not QuotaExceeded) stays; new images oldest first while there is room.
    fn judge_images(&self, owner: &str) -> BTreeMap<String, (bool, bool)> {
        let images = self.images_of(owner);
        let recorded = |i: &PrivateImage| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason != "QuotaExceeded")
            })
        };
        // A PrivateImage never decoded keeps its slot unless its status says QuotaExceeded.
        let unreadable = self
            .c
            .unreadable_images
            .iter()
            .filter(|((ns, _), status)| {
                ns == owner
                    && !status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.reason == "QuotaExceeded")
                    })
            })
            .count();
        let mut used = unreadable + images.iter().filter(|o| recorded(&o.object)).count();
        let limit = self.limit(owner, 0);
        let mut out = BTreeMap::new();
        for o in images {
            let admitted = if recorded(&o.object) {
                true
            } else if room(limit, used) {
                used += 1;
                true
            } else {
                false
            };
            let ready = admitted && self.source_ok(&o.object);
            out.insert(name_of(&o.object), (admitted, ready));
        }
        out
    }

    /// Why an image can not be offered at all.
    fn image_refusal(&self, owner: &str, images: &BTreeMap<String, (bool, bool)>, image: &str) -> Option<&'static str> {
        let Some((_, ready)) = images.get(image) else {
            return Some("ImageNotFound");
        };
        if !ready {
            return Some("ImageNotReady");
        }
        let obj = self
            .c
            .images
            .iter()
            .find(|o| ns_of(&o.object) == owner && name_of(&o.object) == image)?;
        obj.object.spec.published.then_some("ImagePublished")
    }

    /// Why a namespace can not be offered anything by `owner`.
    fn recipient_refusal(&self, owner: &str, recipient: &str) -> Option<&'static str> {
        if recipient == owner {
            return Some("RecipientIsOwner");
        }
        let Some(region) = self.region(recipient) else {
            return Some("RecipientNotFound");
        };
        (self.region(owner) != Some(region)).then_some("RegionMismatch")
    }

    /// A listed pair that nothing but the limits stands against.
    fn valid(&self, owner: &str, images: &BTreeMap<String, (bool, bool)>, s: &ImageShare, i: &str, r: &str) -> bool {
        !self.leaving(owner)
            && !self.expired(s)
            && self.image_refusal(owner, images, i).is_none()
            && self.recipient_refusal(owner, r).is_none()
    }

    fn decide_owner(&self, owner: &str) -> OwnerDecision {
        let images = self.judge_images(owner);
        let shares = self.shares_of(owner);
        let mut d = OwnerDecision {
            images: images.clone(),
            ..Default::default()
        };
        // Every pair listed in any of the four lists of any ImageShare status of the owner.
        let mut recorded: BTreeSet<(String, String)> = BTreeSet::new();
        for s in &shares {
            for img in s.object.status.iter().flat_map(|st| &st.images) {
                for (_, list) in img.lists() {
                    for r in list {
                        recorded.insert((img.name.clone(), r.to_string()));
                    }
                }
            }
        }
        // Pairs that only the limits can refuse.
        let mut candidates: BTreeSet<(String, String)> = BTreeSet::new();
        for s in &shares {
            for i in &s.object.spec.images {
                for r in &s.object.spec.recipients {
                    if self.valid(owner, &images, &s.object, i, r) {
                        candidates.insert((i.clone(), r.clone()));
                    }
                }
            }
        }
        let candidate_images: BTreeSet<String> = candidates.iter().map(|(i, _)| i.clone()).collect();
        // Slots held by what can not be read (never offered): the pairs an unreadable share's
        // status records, and the recorded pairs of unreadable images. An unreadable share whose
        // status does not decode either holds what nobody knows: nothing new is admitted.
        let mut held: BTreeSet<(String, String)> = BTreeSet::new();
        let mut frozen = false;
        let mut held_images: BTreeSet<String> = BTreeSet::new();
        for ((ns, _), status) in &self.c.unreadable_shares {
            if ns != owner {
                continue;
            }
            match status {
                Some(st) => {
                    for img in &st.images {
                        for (_, list) in img.lists() {
                            held.extend(list.iter().map(|r| (img.name.clone(), r.to_string())));
                        }
                        if !self.rules.unreadable_share_holds_recorded_pairs_only {
                            held_images.insert(img.name.clone());
                        }
                    }
                }
                None => frozen = true,
            }
        }
        for (i, r) in &recorded {
            if self.c.unreadable_images.contains_key(&(owner.to_string(), i.clone())) {
                held.insert((i.clone(), r.clone()));
            }
        }
        let lists = |s: &Obj<ImageShare>| self.rules.expired_shares_list || !self.expired(&s.object);

        // Shared images: those with a recorded pair keep their slot; new ones oldest first.
        let holds_slot = |i: &String| {
            recorded.iter().any(|(ri, rr)| {
                ri == i && (self.rules.slot_kept_by_any_record || candidates.contains(&(ri.clone(), rr.clone())))
            })
        };
        let shared_limit = self.limit(owner, 1);
        let recipient_limit = self.limit(owner, 2);
        let mut slots: BTreeSet<&String> = held.iter().map(|(i, _)| i).chain(&held_images).collect();
        let mut new_images: Vec<((Age, usize), String)> = Vec::new();
        for i in &candidate_images {
            if holds_slot(i) || slots.contains(i) {
                d.shared.insert(i.clone());
                slots.insert(i);
                continue;
            }
            let key = shares
                .iter()
                .filter(|s| lists(s))
                .filter(|s| {
                    self.rules.order_by_listing
                        || s.object
                            .spec
                            .recipients
                            .iter()
                            .any(|r| self.valid(owner, &images, &s.object, i, r))
                })
                .filter_map(|s| {
                    let pos = s.object.spec.images.iter().position(|x| x == i)?;
                    Some((age(s), pos))
                })
                .min()
                .expect("a candidate image is listed");
            new_images.push((key, i.clone()));
        }
        new_images.sort();
        let mut used = slots.len();
        for (_, i) in new_images {
            // An image that could get no recipient does not become a shared image.
            if !frozen && recipient_limit != 0 && room(shared_limit, used) {
                used += 1;
                d.shared.insert(i);
            }
        }

        // Recipients of each shared image: recorded ones stay; new ones oldest first.
        for i in &d.shared {
            let rs: Vec<&String> = candidates.iter().filter(|(ci, _)| ci == i).map(|(_, r)| r).collect();
            // Distinct recipients using the image: held ones and offered ones.
            let mut using: BTreeSet<&String> = held.iter().filter(|(hi, _)| hi == i).map(|(_, r)| r).collect();
            let mut new_recipients: Vec<((Age, usize), &String)> = Vec::new();
            for r in rs {
                if recorded.contains(&(i.clone(), r.clone())) {
                    d.offered.insert((i.clone(), r.clone()), ShareState::Pending);
                    using.insert(r);
                    continue;
                }
                let key = shares
                    .iter()
                    .filter(|s| lists(s) && s.object.spec.images.contains(i))
                    .filter_map(|s| {
                        let pos = s.object.spec.recipients.iter().position(|x| x == r)?;
                        Some((age(s), pos))
                    })
                    .min()
                    .expect("a candidate pair is listed");
                new_recipients.push((key, r));
            }
            new_recipients.sort();
            for (_, r) in new_recipients {
                if !frozen && room(recipient_limit, using.len()) {
                    using.insert(r);
                    d.offered.insert((i.clone(), r.clone()), ShareState::Pending);
                }
            }
        }

        // States: the winning ShareAcceptance of the recipient, if any covers the pair: one that
        // names the image beats one that covers all; between equals the strongest decision,
        // then the oldest.
        for ((i, r), state) in d.offered.iter_mut() {
            let best = self
                .c
                .acceptances
                .iter()
                .filter(|o| ns_of(&o.object) == *r && o.object.spec.owner == owner && covers(&o.object, i))
                .max_by_key(|o| {
                    let spec = &o.object.spec;
                    (
                        spec.images.contains(i),
                        strength(spec.decision),
                        std::cmp::Reverse(age(o)),
                    )
                });
            let winner = best.map(|o| {
                (
                    name_of(&o.object),
                    o.object.spec.images.contains(i),
                    o.object.spec.decision,
                )
            });
            *state = winner
                .as_ref()
                .map_or(ShareState::Pending, |(_, _, decision)| decision.state());
            // A never-decoded ShareAcceptance of the recipient may be a refusal: no pair becomes
            // Accepted; it keeps the state the owner's ImageShare statuses record.
            let blind = self.c.unreadable_acceptances.iter().any(|(ns, _)| ns == r);
            let mut withheld = false;
            if blind && *state == ShareState::Accepted {
                let recorded_state = shares
                    .iter()
                    .flat_map(|s| s.object.status.iter().flat_map(|st| &st.images))
                    .filter(|img| img.name == *i)
                    .flat_map(|img| img.lists())
                    .find(|(_, list)| list.iter().any(|x| **x == **r))
                    .map(|(state, _)| state);
                withheld = recorded_state != Some(ShareState::Accepted);
                *state = recorded_state.unwrap_or(ShareState::Pending);
            }
            d.decided.insert((i.clone(), r.clone()), Decided { winner, withheld });
        }
        d
    }

    /// When the offer of `image` to `recipient` ends: the latest expiresAt of the owner's
    /// ImageShares that offer it (listing the pair, not expired); none when one never ends.
    fn offer_ends(&self, owner: &str, image: &str, recipient: &str) -> Option<Timestamp> {
        let mut latest = None;
        for s in self.shares_of(owner) {
            let s = &s.object;
            if self.expired(s)
                || !s.spec.images.iter().any(|i| i == image)
                || !s.spec.recipients.iter().any(|r| r == recipient)
            {
                continue;
            }
            let ends = s.spec.expires_at.as_ref()?.0;
            if latest.is_none_or(|l| l < ends) {
                latest = Some(ends);
            }
        }
        latest
    }

    fn view(&self) -> View {
        let mut view = View::default();
        let mut owners: BTreeSet<String> = BTreeSet::new();
        owners.extend(self.c.images.iter().map(|o| ns_of(&o.object)));
        owners.extend(self.c.shares.iter().map(|o| ns_of(&o.object)));
        owners.extend(self.c.acceptances.iter().map(|o| o.object.spec.owner.clone()));
        let decisions: BTreeMap<String, OwnerDecision> =
            owners.iter().map(|o| (o.clone(), self.decide_owner(o))).collect();
        for (owner, d) in &decisions {
            for (image, verdict) in &d.images {
                view.images.insert((owner.clone(), image.clone()), *verdict);
            }
            for ((i, r), state) in &d.offered {
                if *state == ShareState::Accepted {
                    view.grants.insert((owner.clone(), i.clone(), r.clone()));
                }
            }
            for s in self.shares_of(owner) {
                let s = &s.object;
                for i in &s.spec.images {
                    for r in &s.spec.recipients {
                        let verdict = if self.leaving(owner) {
                            Verdict::Refused(LEAVING.into())
                        } else if self.expired(s) {
                            Verdict::Refused("Expired".into())
                        } else if let Some(state) = d.offered.get(&(i.clone(), r.clone())) {
                            Verdict::Offered(*state)
                        } else if let Some(why) = self
                            .image_refusal(owner, &d.images, i)
                            .or_else(|| self.recipient_refusal(owner, r))
                        {
                            Verdict::Refused(why.into())
                        } else if d.shared.contains(i) || self.limit(owner, 2) == 0 {
                            Verdict::Refused("RecipientLimitExceeded".into())
                        } else {
                            Verdict::Refused("SharedImageLimitExceeded".into())
                        };
                        view.pairs
                            .insert((owner.clone(), name_of(s), i.clone(), r.clone()), verdict);
                    }
                }
            }
        }
        // The inbox: one ImageOffer per owner that offers the recipient something, listing
        // every offered image with its state and the acceptance whose decision is in effect.
        for (owner, d) in &decisions {
            for ((i, r), state) in &d.offered {
                let decided = &d.decided[&(i.clone(), r.clone())];
                let decided_by = match &decided.winner {
                    Some((name, _, _)) if !decided.withheld => Some(name.clone()),
                    _ => None,
                };
                let entry = (i.clone(), *state, decided_by, self.offer_ends(owner, i, r));
                view.offers.entry((r.clone(), owner.clone())).or_default().push(entry);
            }
        }
        // The ImageOffers held for owners that offer nothing any more go.
        for key in self.c.offers.keys() {
            if !view.offers.contains_key(key) {
                view.withdrawn.insert(key.clone());
            }
        }
        // Every acceptance lists the offered images it covers, with whose decision is in effect.
        for o in &self.c.acceptances {
            let a = &o.object;
            let ns = ns_of(a);
            let name = name_of(a);
            let named = |i: &str| a.spec.images.iter().any(|x| x == i);
            let d = &decisions[&a.spec.owner];
            let mut list = Vec::new();
            for ((i, r), state) in &d.offered {
                if *r != ns || !covers(a, i) {
                    continue;
                }
                let decided = &d.decided[&(i.clone(), r.clone())];
                let (winner, winner_named, decision) = decided.winner.clone().expect("a covered pair has a winner");
                let (reason, by) = if decided.withheld {
                    (DecisionReason::UnreadableAcceptance, None)
                } else if winner != name && winner_named && !named(i) {
                    (DecisionReason::NamedAcceptance, Some(winner))
                } else if winner != name && strength(decision) > strength(a.spec.decision) {
                    (DecisionReason::Conflict, Some(winner))
                } else {
                    (DecisionReason::ThisAcceptance, None)
                };
                list.push((i.clone(), *state, reason, by));
            }
            let ready = if list.iter().any(|(_, _, reason, _)| *reason == DecisionReason::Conflict) {
                "Conflict"
            } else if list.is_empty() {
                "NothingOffered"
            } else {
                "Applied"
            };
            view.received.insert((ns, name), (ready.to_string(), list));
        }
        view
    }
}

fn model(c: &Cluster, rules: Rules) -> View {
    Model { c, rules }.view()
}

/// The engine decides what the documented rules decide — unless `strict` is false and it decides
/// what they decide with known divergences applied.
fn agrees(c: &Cluster, outcomes: &[TenantOutcome], when: &str, strict: bool) -> Result<(), TestCaseError> {
    let actual = engine_view(c, outcomes).map_err(|e| TestCaseError::fail(format!("{when}: {e}\n{}", describe(c))))?;
    let expected = model(c, DOCUMENTED);
    if expected == actual {
        return Ok(());
    }
    if !strict {
        for mask in 1u32..(1 << KNOWN_DIVERGENCES.len()) {
            let mut rules = DOCUMENTED;
            for (k, diverge) in KNOWN_DIVERGENCES.iter().enumerate() {
                if mask & (1 << k) != 0 {
                    rules = diverge(rules);
                }
            }
            if model(c, rules) == actual {
                return Ok(());
            }
        }
    }
    Err(TestCaseError::fail(format!(
        "{when}: the engine disagrees with the reference model\n{}world:\n{}",
        diff(&expected, &actual),
        describe(c)
    )))
}

// ---------------------------------------------------------------------------------------------
// Random worlds.

#[derive(Clone, Debug)]
struct GenImage {
    created: Option<i64>,
    published: bool,
    /// 0-5 file, 6 Bound volume, 7 volume whose claim is missing, 8 volume not Bound.
    source: u8,
}

#[derive(Clone, Debug)]
struct GenShare {
    created: Option<i64>,
    images: Vec<u8>,
    recipients: Vec<u8>,
    /// 0-5 none, 6 a day ago, 7 exactly now, 8 tomorrow.
    expiry: u8,
}

#[derive(Clone, Debug)]
struct GenAcceptance {
    created: Option<i64>,
    owner: u8,
    images: Vec<u8>,
    decision: u8,
}

#[derive(Clone, Debug)]
struct GenNamespace {
    /// None: no label; Some(0): the operator's region by label; Some(1): another region.
    region: Option<u8>,
    /// Limit annotations: a value -1..=3, or an invalid one.
    limits: [Option<String>; 3],
    leaving: bool,
    images: Vec<GenImage>,
    shares: Vec<GenShare>,
    acceptances: Vec<GenAcceptance>,
}

#[derive(Clone, Debug)]
struct GenWorld {
    namespaces: Vec<GenNamespace>,
    /// 0: anything goes. 1: dense — everything valid (existing images and namespaces, one
    /// region, no expiry, nothing published or leaving), so that the limits decide. 2: ordering —
    /// dense, but with expired shares and recipients that do not exist, every image admitted and
    /// a small shared-images limit, so that the order of admission decides.
    mode: u8,
    /// Shuffles the input order (0: as generated).
    shuffle: u64,
}

/// Changes between the two evaluations.
#[derive(Clone, Debug)]
struct GenEdit {
    /// Per namespace: lower each limit by this much (0: unchanged).
    lower: Vec<[u8; 3]>,
    /// Per share (by position among all shares): new recipients, new images.
    recipients: Vec<Option<Vec<u8>>>,
    images: Vec<Option<Vec<u8>>>,
    /// Per acceptance: a new decision.
    decisions: Vec<Option<u8>>,
    /// New images: (namespace, created).
    new_images: Vec<(u8, Option<i64>)>,
    /// An image and a share (namespace, position, whether the status still decodes) that the
    /// operator can no longer decode (and never did), and a namespace that gets a ShareAcceptance
    /// it can not decode.
    unreadable_image: Option<(u8, u8, bool)>,
    unreadable_share: Option<(u8, u8, bool)>,
    unreadable_acceptance: Option<u8>,
}

fn distinct(max: u8, len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..max, len).prop_map(|v| dedup(v.into_iter()))
}

fn dedup(items: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut seen = BTreeSet::new();
    items.filter(|x| seen.insert(*x)).collect()
}

fn created() -> impl Strategy<Value = Option<i64>> {
    // Few distinct times, so that ties (broken by name) are common; a quarter unstamped.
    prop::option::weighted(0.75, 0i64..6)
}

fn world_strategy() -> impl Strategy<Value = GenWorld> {
    let image = (created(), prop::bool::weighted(0.1), 0u8..9).prop_map(|(created, published, source)| GenImage {
        created,
        published,
        source,
    });
    let share = (
        created(),
        distinct(IMAGE_NAMES, 1..=4),
        distinct(NAMESPACE_NAMES, 1..=3),
        0u8..9,
    )
        .prop_map(|(created, images, recipients, expiry)| GenShare {
            created,
            images,
            recipients,
            expiry,
        });
    let images = prop_oneof![Just(Vec::new()), distinct(IMAGE_NAMES, 1..=2)];
    let acceptance =
        (created(), 0..NAMESPACE_NAMES, images, 0u8..3).prop_map(|(created, owner, images, decision)| GenAcceptance {
            created,
            owner,
            images,
            decision,
        });
    let limit = prop::option::weighted(
        0.3,
        prop_oneof![
            4 => (-1i64..4).prop_map(|v| v.to_string()),
            1 => prop::sample::select(vec!["-2", "x", "", "1.5"]).prop_map(str::to_string),
        ],
    );
    let namespace = (
        prop::option::weighted(0.25, 0u8..2),
        [limit.clone(), limit.clone(), limit],
        prop::bool::weighted(0.08),
        prop::collection::vec(image, 0..=5),
        prop::collection::vec(share, 0..=3),
        prop::collection::vec(acceptance, 0..=4),
    )
        .prop_map(|(region, limits, leaving, images, shares, acceptances)| GenNamespace {
            region,
            limits,
            leaving,
            images,
            shares,
            acceptances,
        });
    (prop::collection::vec(namespace, 2..=5), 0u8..3, any::<u64>()).prop_map(|(namespaces, mode, shuffle)| GenWorld {
        namespaces,
        mode,
        shuffle,
    })
}

fn edit_strategy() -> impl Strategy<Value = GenEdit> {
    (
        prop::collection::vec(prop::array::uniform3(prop_oneof![3 => Just(0u8), 1 => 1u8..3]), 5),
        prop::collection::vec(prop::option::weighted(0.3, distinct(NAMESPACE_NAMES, 1..=3)), 15),
        prop::collection::vec(prop::option::weighted(0.15, distinct(IMAGE_NAMES, 1..=3)), 15),
        prop::collection::vec(prop::option::weighted(0.2, 0u8..3), 20),
        prop::collection::vec((0u8..5, created()), 0..=2),
        prop::option::weighted(0.15, (0u8..5, 0u8..5, any::<bool>())),
        prop::option::weighted(0.15, (0u8..5, 0u8..3, prop::bool::weighted(0.8))),
        prop::option::weighted(0.3, 0u8..5),
    )
        .prop_map(
            |(
                lower,
                recipients,
                images,
                decisions,
                new_images,
                unreadable_image,
                unreadable_share,
                unreadable_acceptance,
            )| GenEdit {
                lower,
                recipients,
                images,
                decisions,
                new_images,
                unreadable_image,
                unreadable_share,
                unreadable_acceptance,
            },
        )
}

fn ns_name(i: u8) -> String {
    format!("ns{i}")
}

fn image_name(i: u8) -> String {
    format!("img{i}")
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Applies the world's mode (see `GenWorld::mode`).
fn densify(world: &GenWorld) -> GenWorld {
    let mut w = world.clone();
    if w.mode == 0 {
        return w;
    }
    let count = w.namespaces.len() as u8;
    for (n, spec) in w.namespaces.iter_mut().enumerate() {
        let images = spec.images.len().max(1) as u8;
        spec.region = None;
        spec.leaving = false;
        for l in spec.limits.iter_mut() {
            if l.as_ref().is_some_and(|v| v.parse::<i64>().is_err()) {
                *l = None;
            }
        }
        if w.mode == 2 {
            spec.limits[0] = Some("-1".into());
            if !matches!(spec.limits[1].as_deref(), Some("1" | "2")) {
                spec.limits[1] = Some("1".into());
            }
        }
        for img in &mut spec.images {
            img.published = false;
            img.source %= if w.mode == 2 { 6 } else { 7 };
        }
        for sh in &mut spec.shares {
            if w.mode == 1 {
                sh.expiry = 0;
            }
            sh.images = dedup(sh.images.iter().map(|i| i % images));
            sh.recipients = dense_recipients(&sh.recipients, n as u8, count, w.mode);
        }
        for acc in &mut spec.acceptances {
            acc.owner %= count;
        }
    }
    w
}

/// Recipients that exist and are not the owner — in mode 2 also `ns<count>`, which does not exist.
fn dense_recipients(recipients: &[u8], owner: u8, count: u8, mode: u8) -> Vec<u8> {
    let names = if mode == 2 { count + 1 } else { count };
    let mut r = dedup(recipients.iter().map(|r| r % names).filter(|r| *r != owner));
    if r.is_empty() {
        r.push((owner + 1) % count);
    }
    r
}

fn cluster_of(world: &GenWorld) -> Cluster {
    let world = densify(world);
    let mut c = Cluster::default();
    let mut images = Vec::new();
    let mut shares = Vec::new();
    let mut acceptances = Vec::new();
    for (n, spec) in world.namespaces.iter().enumerate() {
        let ns = ns_name(n as u8);
        let mut info = NamespaceInfo {
            uid: Some(format!("uid-ns-{ns}")),
            leaving: spec.leaving,
            ..Default::default()
        };
        if let Some(r) = spec.region {
            let region = if r == 0 {
                DEFAULT_REGION.to_string()
            } else {
                format!("r{r}")
            };
            info.labels.insert(REGION_LABEL.into(), region);
        }
        for (key, value) in LIMIT_KEYS.iter().zip(&spec.limits) {
            if let Some(v) = value {
                info.annotations.insert(key.to_string(), v.clone());
            }
        }
        c.namespaces.insert(ns.clone(), info);
        for (i, img) in spec.images.iter().enumerate() {
            images.push(make_image(&mut c, &ns, &image_name(i as u8), img));
        }
        for (k, sh) in spec.shares.iter().enumerate() {
            let imgs: Vec<String> = sh.images.iter().map(|i| image_name(*i)).collect();
            let recipients: Vec<String> = sh.recipients.iter().map(|r| ns_name(*r)).collect();
            let mut obj = share(&ns, &format!("share{k}"), &strs(&imgs), &strs(&recipients), 0);
            obj.metadata.creation_timestamp = sh.created.map(|t| Time(at(t)));
            obj.spec.expires_at = match sh.expiry {
                6 => Some(Time(from_now(-86_400))),
                7 => Some(Time(now())),
                8 => Some(Time(from_now(86_400))),
                _ => None,
            };
            shares.push(obj);
        }
        for (k, acc) in spec.acceptances.iter().enumerate() {
            let imgs: Vec<String> = acc.images.iter().map(|i| image_name(*i)).collect();
            let decision = [Decision::Accept, Decision::Reject, Decision::Remove][acc.decision as usize];
            let mut obj = acceptance(&ns, &format!("acc{k}"), &ns_name(acc.owner), &strs(&imgs), decision, 0);
            obj.metadata.creation_timestamp = acc.created.map(|t| Time(at(t)));
            acceptances.push(obj);
        }
    }
    // Input order: shuffled.
    let total = (images.len() + shares.len() + acceptances.len()) as u64;
    let mut order: Vec<u64> = (0..total).collect();
    let mut x = world.shuffle | 1;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut seqs = order.into_iter();
    for object in images {
        c.images.push(Obj {
            seq: seqs.next().unwrap(),
            object,
        });
    }
    for object in shares {
        c.shares.push(Obj {
            seq: seqs.next().unwrap(),
            object,
        });
    }
    for object in acceptances {
        c.acceptances.push(Obj {
            seq: seqs.next().unwrap(),
            object,
        });
    }
    c
}

fn make_image(c: &mut Cluster, ns: &str, name: &str, img: &GenImage) -> PrivateImage {
    let pvc = format!("pvc-{name}");
    let mut obj = match img.source {
        0..=5 => image(ns, name, 0),
        _ => volume_image(ns, name, &pvc, 0),
    };
    obj.metadata.creation_timestamp = img.created.map(|t| Time(at(t)));
    obj.spec.published = img.published;
    match img.source {
        6 => {
            c.volumes.insert((ns.into(), pvc), VolumeState::Bound);
        }
        8 => {
            c.volumes.insert((ns.into(), pvc), VolumeState::NotBound);
        }
        _ => {}
    }
    obj
}

/// Applies the edits between two evaluations: lower limits, re-targeted shares, new decisions,
/// new images (youngest in input order). Statuses stay as written.
fn apply(c: &mut Cluster, world: &GenWorld, edit: &GenEdit) {
    let count = world.namespaces.len() as u8;
    let mode = world.mode;
    let mut next_seq = c.images.len() as u64 + c.shares.len() as u64 + c.acceptances.len() as u64;
    let model = Model {
        c: &*c,
        rules: DOCUMENTED,
    };
    let lowered: Vec<(String, [Option<i64>; 3])> = c
        .namespaces
        .keys()
        .enumerate()
        .map(|(n, ns)| {
            let lower = edit.lower[n % edit.lower.len()];
            let new = [0, 1, 2].map(|k| {
                let l = lower[k] as i64;
                let current = model.limit(ns, k);
                match (l, current) {
                    (0, _) => None,
                    (_, -1) => Some(3 - l),
                    (_, v) => Some((v - l).max(0)),
                }
            });
            (ns.clone(), new)
        })
        .collect();
    for (ns, new) in lowered {
        let info = c.namespaces.get_mut(&ns).unwrap();
        for (k, v) in new.iter().enumerate() {
            if let Some(v) = v {
                info.annotations.insert(LIMIT_KEYS[k].into(), v.to_string());
            }
        }
    }
    for (k, s) in c.shares.iter_mut().enumerate() {
        let owner: u8 = ns_of(&s.object)[2..].parse().unwrap();
        let mut changed = false;
        if let Some(Some(recipients)) = edit.recipients.get(k) {
            let recipients = if mode != 0 {
                dense_recipients(recipients, owner, count, mode)
            } else {
                recipients.clone()
            };
            s.object.spec.recipients = recipients.iter().map(|r| ns_name(*r)).collect();
            changed = true;
        }
        if let Some(Some(images)) = edit.images.get(k) {
            let images = if mode != 0 {
                let n = world.namespaces[owner as usize].images.len().max(1) as u8;
                dedup(images.iter().map(|i| i % n))
            } else {
                images.clone()
            };
            s.object.spec.images = images.iter().map(|i| image_name(*i)).collect();
            changed = true;
        }
        if changed {
            s.object.metadata.generation = s.object.metadata.generation.map(|g| g + 1);
        }
    }
    for (k, a) in c.acceptances.iter_mut().enumerate() {
        if let Some(Some(d)) = edit.decisions.get(k) {
            a.object.spec.decision = [Decision::Accept, Decision::Reject, Decision::Remove][*d as usize];
            a.object.metadata.generation = a.object.metadata.generation.map(|g| g + 1);
        }
    }
    for (n, created) in &edit.new_images {
        let ns = ns_name(n % count);
        let taken: BTreeSet<String> = c
            .images
            .iter()
            .filter(|o| ns_of(&o.object) == ns)
            .map(|o| name_of(&o.object))
            .collect();
        let Some(name) = (0..IMAGE_NAMES).map(image_name).find(|n| !taken.contains(n)) else {
            continue;
        };
        let spec = GenImage {
            created: *created,
            published: false,
            source: 0,
        };
        let object = make_image(c, &ns, &name, &spec);
        c.images.push(Obj { seq: next_seq, object });
        next_seq += 1;
    }
    if let Some((n, k, keep_status)) = edit.unreadable_image {
        let ns = ns_name(n % count);
        let mine: Vec<usize> = (0..c.images.len())
            .filter(|&x| ns_of(&c.images[x].object) == ns)
            .collect();
        if !mine.is_empty() {
            let gone = c.images.remove(mine[k as usize % mine.len()]).object;
            let status = gone.status.clone().filter(|_| keep_status);
            c.unreadable_images.insert((ns, name_of(&gone)), status);
        }
    }
    if let Some((n, k, keep_status)) = edit.unreadable_share {
        let ns = ns_name(n % count);
        let mine: Vec<usize> = (0..c.shares.len())
            .filter(|&x| ns_of(&c.shares[x].object) == ns)
            .collect();
        if !mine.is_empty() {
            let gone = c.shares.remove(mine[k as usize % mine.len()]).object;
            let status = gone.status.clone().filter(|_| keep_status);
            c.unreadable_shares.insert((ns, name_of(&gone)), status);
        }
    }
    if let Some(n) = edit.unreadable_acceptance {
        c.unreadable_acceptances
            .insert((ns_name(n % count), "undecodable".into()));
    }
}

/// Both evaluations of a random world: the first one, and one after the statuses were written
/// back and the world edited.
fn check_world(world: &GenWorld, edit: &GenEdit, strict: bool) -> Result<(), TestCaseError> {
    let mut c = cluster_of(world);
    let first = core::evaluate_all(&snapshot(&c));
    agrees(&c, &first, "first evaluation", strict)?;
    feed_back(&mut c, &first);
    // Unchanged, the written statuses change nothing.
    let again = core::evaluate_all(&snapshot(&c));
    agrees(&c, &again, "statuses written back", strict)?;
    apply(&mut c, world, edit);
    let second = core::evaluate_all(&snapshot(&c));
    agrees(&c, &second, "statuses written back, then the world edited", strict)?;
    feed_back(&mut c, &second);
    let third = core::evaluate_all(&snapshot(&c));
    agrees(&c, &third, "the edited world's statuses written back", strict)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// The engine decides what the documented rules decide.
    #[test]
    fn engine_agrees_with_the_reference_model(world in world_strategy(), edit in edit_strategy()) {
        check_world(&world, &edit, true)?;
    }

}

// ---------------------------------------------------------------------------------------------
// Minimal cases of the points where the engine departed (or departs) from the documented rules.

impl Cluster {
    fn next_seq(&self) -> u64 {
        let seqs = self.images.iter().map(|o| o.seq);
        let seqs = seqs.chain(self.shares.iter().map(|o| o.seq));
        seqs.chain(self.acceptances.iter().map(|o| o.seq))
            .max()
            .map_or(0, |s| s + 1)
    }

    fn ns(&mut self, name: &str, annotations: &[(&str, &str)]) -> &mut Self {
        let info = NamespaceInfo {
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            uid: Some(format!("uid-ns-{name}")),
            ..Default::default()
        };
        self.namespaces.insert(name.into(), info);
        self
    }

    fn with_image(&mut self, object: PrivateImage) -> &mut Self {
        let seq = self.next_seq();
        self.images.push(Obj { seq, object });
        self
    }

    fn with_share(&mut self, object: ImageShare) -> &mut Self {
        let seq = self.next_seq();
        self.shares.push(Obj { seq, object });
        self
    }

    fn share_mut(&mut self, ns: &str, name: &str) -> &mut ImageShare {
        let found = self
            .shares
            .iter_mut()
            .find(|o| ns_of(&o.object) == ns && name_of(&o.object) == name);
        &mut found.expect("share exists").object
    }

    /// Evaluates; returns the engine's view, the model's under the documented rules and the
    /// model's under `other` rules, then writes the statuses back.
    fn settle(&mut self, other: Rules) -> (View, View, View) {
        let outcomes = core::evaluate_all(&snapshot(self));
        let views = (
            engine_view(self, &outcomes).unwrap(),
            model(self, DOCUMENTED),
            model(self, other),
        );
        feed_back(self, &outcomes);
        views
    }
}

fn expired_share(ns: &str, name: &str, images: &[&str], recipients: &[&str], created: i64) -> ImageShare {
    let mut s = share(ns, name, images, recipients, created);
    s.spec.expires_at = Some(Time(from_now(-86_400)));
    s
}

fn pair(view: &View, owner: &str, share: &str, image: &str, recipient: &str) -> Verdict {
    let key = (owner.into(), share.into(), image.into(), recipient.into());
    view.pairs.get(&key).cloned().expect("a listed pair")
}

fn refused(reason: &str) -> Verdict {
    Verdict::Refused(reason.into())
}

const PENDING: Verdict = Verdict::Offered(ShareState::Pending);
const SHARED_IMAGES_1: (&str, &str) = (LIMIT_KEYS[1], "1");
const RECIPIENTS_1: (&str, &str) = (LIMIT_KEYS[2], "1");

/// Sticky admission (fixed in c9d14d9): `web` holds the only shared-image slot; its owner swaps
/// its recipient b for c while `db`, listed by an older share, becomes offerable. `web` keeps
/// the slot (its pair web → b is recorded); the engine used to give it to `db` and refuse
/// web → c with SharedImageLimitExceeded.
#[test]
fn an_image_keeps_its_shared_image_slot_when_its_recipients_are_swapped() {
    let old_rule = Rules {
        slot_kept_by_any_record: false,
        ..DOCUMENTED
    };
    let mut c = Cluster::default();
    c.ns("a", &[SHARED_IMAGES_1]).ns("b", &[]).ns("c", &[]);
    c.with_image(image("a", "web", 0))
        .with_share(share("a", "s0", &["db"], &["b"], 1))
        .with_share(share("a", "s1", &["web"], &["b"], 2));
    let (engine, documented, _) = c.settle(old_rule);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(pair(&engine, "a", "s1", "web", "b"), PENDING);
    assert_eq!(pair(&engine, "a", "s0", "db", "b"), refused("ImageNotFound"));

    c.with_image(image("a", "db", 3));
    c.share_mut("a", "s1").spec.recipients = vec!["c".into()];
    let (engine, documented, old) = c.settle(old_rule);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(pair(&engine, "a", "s1", "web", "c"), PENDING);
    assert_eq!(pair(&engine, "a", "s0", "db", "b"), refused("SharedImageLimitExceeded"));
    assert_eq!(
        pair(&old, "a", "s0", "db", "b"),
        PENDING,
        "the old rule gave db the slot"
    );
    assert_eq!(pair(&old, "a", "s1", "web", "c"), refused("SharedImageLimitExceeded"));
}

/// Order of admission (fixed in c9d14d9): `db` is listed by the oldest share (whose recipient
/// does not exist), so it comes before `web`, although the first share in which it can be offered
/// lists `web` first. The engine used to admit `web`.
#[test]
fn shared_images_are_admitted_in_the_order_of_the_oldest_share_listing_them() {
    let old_rule = Rules {
        order_by_listing: false,
        ..DOCUMENTED
    };
    let mut c = Cluster::default();
    c.ns("a", &[SHARED_IMAGES_1]).ns("b", &[]);
    c.with_image(image("a", "web", 0))
        .with_image(image("a", "db", 0))
        .with_share(share("a", "s0", &["db"], &["c"], 1))
        .with_share(share("a", "s1", &["web", "db"], &["b"], 2));
    let (engine, documented, old) = c.settle(old_rule);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(pair(&engine, "a", "s1", "db", "b"), PENDING);
    assert_eq!(
        pair(&engine, "a", "s1", "web", "b"),
        refused("SharedImageLimitExceeded")
    );
    assert_eq!(pair(&engine, "a", "s0", "db", "c"), refused("RecipientNotFound"));
    assert_eq!(pair(&old, "a", "s1", "web", "b"), PENDING, "the old rule admitted web");
}

/// An expired share still lists its images (fixed in c9d14d9, the README's "oldest first" read
/// literally): `db`, listed by the older expired share, comes before `web`.
#[test]
fn an_expired_share_still_orders_the_images_it_lists() {
    let old_rule = Rules {
        expired_shares_list: false,
        ..DOCUMENTED
    };
    let mut c = Cluster::default();
    c.ns("a", &[SHARED_IMAGES_1]).ns("b", &[]);
    c.with_image(image("a", "web", 0))
        .with_image(image("a", "db", 0))
        .with_share(expired_share("a", "s0", &["db"], &["b"], 1))
        .with_share(share("a", "s1", &["web", "db"], &["b"], 2));
    let (engine, documented, old) = c.settle(old_rule);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(pair(&engine, "a", "s0", "db", "b"), refused("Expired"));
    assert_eq!(pair(&engine, "a", "s1", "db", "b"), PENDING);
    assert_eq!(
        pair(&engine, "a", "s1", "web", "b"),
        refused("SharedImageLimitExceeded")
    );
    assert_eq!(pair(&old, "a", "s1", "web", "b"), PENDING, "the old rule admitted web");
}

/// The same for recipients: c, listed with `web` by the older expired share, comes before b.
#[test]
fn an_expired_share_still_orders_the_recipients_it_lists() {
    let old_rule = Rules {
        expired_shares_list: false,
        ..DOCUMENTED
    };
    let mut c = Cluster::default();
    c.ns("a", &[RECIPIENTS_1]).ns("b", &[]).ns("c", &[]);
    c.with_image(image("a", "web", 0))
        .with_share(expired_share("a", "s0", &["web"], &["c"], 1))
        .with_share(share("a", "s1", &["web"], &["b", "c"], 2));
    let (engine, documented, old) = c.settle(old_rule);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(pair(&engine, "a", "s1", "web", "c"), PENDING);
    assert_eq!(pair(&engine, "a", "s1", "web", "b"), refused("RecipientLimitExceeded"));
    assert_eq!(pair(&old, "a", "s1", "web", "b"), PENDING, "the old rule admitted b");
}

/// docs/security.md: an ImageShare that can not be decoded "keeps holding the pairs its status
/// records". s1's status names `db` with no recipient (its one pair was refused
/// SharedImageLimitExceeded), so it holds nothing; `web` holds the only shared-image slot, and
/// db → b in the new share s2 must be refused. An engine that counted every image an unreadable
/// share's status names as holding a slot would admit `db` too, and so share 2 images under a
/// limit of 1 (it did until this test's case was fixed).
#[test]
fn an_unreadable_share_holds_only_the_pairs_its_status_records() {
    let engine_rule = Rules {
        unreadable_share_holds_recorded_pairs_only: false,
        ..DOCUMENTED
    };
    let mut c = Cluster::default();
    c.ns("a", &[SHARED_IMAGES_1]).ns("b", &[]);
    c.with_image(image("a", "web", 0))
        .with_image(image("a", "db", 0))
        .with_share(share("a", "s0", &["web"], &["b"], 1))
        .with_share(share("a", "s1", &["db"], &["b"], 2));
    let (engine, documented, _) = c.settle(engine_rule);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(pair(&engine, "a", "s0", "web", "b"), PENDING);
    assert_eq!(pair(&engine, "a", "s1", "db", "b"), refused("SharedImageLimitExceeded"));

    // s1 no longer decodes (its status still does: `images: [{name: db}]`, no recipients), and
    // the owner lists db → b again in a new share.
    let s1 = c.shares.remove(1).object;
    assert_eq!(name_of(&s1), "s1");
    c.unreadable_shares.insert(("a".into(), "s1".into()), s1.status.clone());
    c.with_share(share("a", "s2", &["db"], &["b"], 3));
    let (engine, documented, diverging) = c.settle(engine_rule);
    assert_eq!(
        pair(&diverging, "a", "s2", "db", "b"),
        PENDING,
        "the engine's rule admits db"
    );
    assert_eq!(
        pair(&documented, "a", "s2", "db", "b"),
        refused("SharedImageLimitExceeded")
    );
    assert_eq!(pair(&engine, "a", "s0", "web", "b"), PENDING);
    assert_eq!(
        pair(&engine, "a", "s2", "db", "b"),
        refused("SharedImageLimitExceeded"),
        "2 shared images under a limit of 1:\n{}",
        diff(&documented, &engine)
    );
}

/// docs/security.md, "Unreadable objects fail closed", and the README's ImageOffer: `decidedBy`
/// names the acceptance whose decision is in effect, absent while none is. b's acceptance
/// rejected web, then is edited to Accept while b also holds one the operator can not read:
/// the pair keeps its recorded state (Rejected), so the Accept is not in effect. The engine
/// used to name the Accept as deciding the Rejected image (fixed in core/status.rs).
#[test]
fn an_image_withheld_by_an_unreadable_acceptance_is_decided_by_nobody() {
    let mut c = Cluster::default();
    c.ns("a", &[]).ns("b", &[]);
    c.with_image(image("a", "web", 0))
        .with_share(share("a", "s", &["web"], &["b"], 1));
    let seq = c.next_seq();
    c.acceptances.push(Obj {
        seq,
        object: acceptance("b", "acc", "a", &[], Decision::Reject, 2),
    });
    let (engine, documented, _) = c.settle(DOCUMENTED);
    assert_eq!(diff(&documented, &engine), "");
    let inbox = |v: &View| v.offers[&("b".to_string(), "a".to_string())].clone();
    assert_eq!(
        inbox(&engine),
        vec![("web".to_string(), ShareState::Rejected, Some("acc".to_string()), None)]
    );

    c.acceptances[0].object.spec.decision = Decision::Accept;
    c.unreadable_acceptances.insert(("b".into(), "broken".into()));
    let (engine, documented, _) = c.settle(DOCUMENTED);
    assert_eq!(diff(&documented, &engine), "");
    assert_eq!(
        inbox(&engine),
        vec![("web".to_string(), ShareState::Rejected, None, None)]
    );
    let received = &engine.received[&("b".to_string(), "acc".to_string())];
    assert_eq!(
        received.1,
        vec![(
            "web".to_string(),
            ShareState::Rejected,
            DecisionReason::UnreadableAcceptance,
            None
        )]
    );
}
