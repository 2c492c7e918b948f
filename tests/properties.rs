//! Properties of the decision engine over random small worlds (README: "The API", "Limits and regions", "Performance"):
//! limits are never exceeded (also when they are lowered between rounds: what was admitted
//! stays, nothing new is admitted beyond them), the output does not depend on input order, an
//! evaluation fed its own statuses is a fixed point, a grant exists exactly for the Accepted
//! pairs, every recipient's inbox (its ImageOffers) holds exactly the pairs the owners' shares
//! offer it, worlds without creationTimestamps are ordered by input order, and a long-lived
//! evaluator (reused while the snapshot changes) always equals a fresh evaluation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use ims_operator::{
    api::{
        Decision, DecisionReason, ImageOffer, ImageQuota, ImageShare, OfferedImage, PrivateImage, ReceivedImage,
        ShareAcceptance, ShareState,
    },
    config::Config,
    core::{self, Evaluator, NamespaceInfo, QuotaUpdate, Snapshot, TenantOutcome, VolumeState, World},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

const CASES: u32 = 256;
const LIMIT_KEYS: [&str; 3] = [
    "ims.imageshare.io/limit.private-images",
    "ims.imageshare.io/limit.shared-images",
    "ims.imageshare.io/limit.recipients-per-image",
];
/// The config defaults of these worlds: small, so that the limits bite.
const DEFAULTS: [i64; 3] = [4, 3, 3];
/// Names referenced by shares and acceptances range over more than exist.
const IMAGE_NAMES: u8 = 6;
const NAMESPACE_NAMES: u8 = 7;

#[derive(Clone, Debug)]
struct ImageSpec {
    created: i64,
    published: bool,
    /// 0-6 file, 7 Bound volume, 8 volume whose claim is missing, 9 volume not Bound.
    source: u8,
}

#[derive(Clone, Debug)]
struct ShareSpec {
    created: i64,
    images: Vec<u8>,
    recipients: Vec<u8>,
    /// Some(true): expired; Some(false): expires tomorrow.
    expired: Option<bool>,
}

#[derive(Clone, Debug)]
struct AcceptanceSpec {
    created: i64,
    owner: u8,
    images: Vec<u8>,
    decision: u8,
}

#[derive(Clone, Debug)]
struct NamespaceSpec {
    /// None: no label (the operator's region r0); Some(k): label rk.
    region: Option<u8>,
    limits: [Option<i64>; 3],
    images: Vec<ImageSpec>,
    shares: Vec<ShareSpec>,
    acceptances: Vec<AcceptanceSpec>,
}

#[derive(Clone, Debug)]
struct WorldSpec {
    namespaces: Vec<NamespaceSpec>,
    /// Everything valid (existing images and namespaces, one region, no expiry, nothing
    /// published), so that the limits decide: half of the worlds.
    dense: bool,
}

fn distinct(max: u8, len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..max, len).prop_map(|v| dedup(v.into_iter()))
}

fn world_strategy() -> impl Strategy<Value = WorldSpec> {
    let image = (0i64..40, prop::bool::weighted(0.1), 0u8..10).prop_map(|(created, published, source)| ImageSpec {
        created,
        published,
        source,
    });
    let share = (
        0i64..40,
        distinct(IMAGE_NAMES, 1..=4),
        distinct(NAMESPACE_NAMES, 1..=4),
        prop::option::weighted(0.2, any::<bool>()),
    )
        .prop_map(|(created, images, recipients, expired)| ShareSpec {
            created,
            images,
            recipients,
            expired,
        });
    // Half of the acceptances cover "all"; owners are mostly namespaces that exist.
    let images = prop_oneof![Just(Vec::new()), distinct(IMAGE_NAMES, 1..=3)];
    let acceptance =
        (0i64..40, 0..NAMESPACE_NAMES, images, 0u8..3).prop_map(|(created, owner, images, decision)| AcceptanceSpec {
            created,
            owner,
            images,
            decision,
        });
    let namespace = (
        prop::option::weighted(0.25, 0u8..2),
        prop::array::uniform3(prop::option::weighted(0.3, -1i64..4)),
        prop::collection::vec(image, 0..=6),
        prop::collection::vec(share, 0..=4),
        prop::collection::vec(acceptance, 0..=5),
    )
        .prop_map(|(region, limits, images, shares, acceptances)| NamespaceSpec {
            region,
            limits,
            images,
            shares,
            acceptances,
        });
    (prop::collection::vec(namespace, 3..=6), any::<bool>())
        .prop_map(|(namespaces, dense)| WorldSpec { namespaces, dense })
}

fn dedup(items: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut seen = BTreeSet::new();
    items.filter(|x| seen.insert(*x)).collect()
}

fn ns_name(i: u8) -> String {
    format!("ns{i}")
}

fn image_name(i: u8) -> String {
    format!("img{i}")
}

/// One thing to put into a snapshot.
#[derive(Clone)]
enum Item {
    Namespace(String, NamespaceInfo),
    Volume(String, String, VolumeState),
    Image(PrivateImage),
    Share(ImageShare),
    Acceptance(ShareAcceptance),
}

impl Item {
    /// (kind, namespace, name): what identifies the item in a snapshot.
    fn key(&self) -> (u8, String, String) {
        let key = |kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (kind, meta.namespace.clone().unwrap(), meta.name.clone().unwrap())
        };
        match self {
            Item::Namespace(n, _) => (0, String::new(), n.clone()),
            Item::Volume(ns, n, _) => (1, ns.clone(), n.clone()),
            Item::Image(o) => key(2, &o.metadata),
            Item::Share(o) => key(3, &o.metadata),
            Item::Acceptance(o) => key(4, &o.metadata),
        }
    }

    fn meta_mut(&mut self) -> Option<&mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
        match self {
            Item::Namespace(..) | Item::Volume(..) => None,
            Item::Image(o) => Some(&mut o.metadata),
            Item::Share(o) => Some(&mut o.metadata),
            Item::Acceptance(o) => Some(&mut o.metadata),
        }
    }
}

fn items(world: &WorldSpec) -> Vec<Item> {
    let mut out = Vec::new();
    let namespaces = world.namespaces.len() as u8;
    for (n, spec) in world.namespaces.iter().enumerate() {
        let ns = ns_name(n as u8);
        let mut info = NamespaceInfo::default();
        let mut spec = spec.clone();
        if world.dense {
            let images = spec.images.len().max(1) as u8;
            spec.region = None;
            for img in &mut spec.images {
                img.published = false;
                img.source %= 7;
            }
            for sh in &mut spec.shares {
                sh.expired = None;
                sh.images = dedup(sh.images.iter().map(|i| i % images));
                sh.recipients = dedup(
                    sh.recipients
                        .iter()
                        .map(|r| r % namespaces)
                        .filter(|r| *r as usize != n),
                );
                if sh.recipients.is_empty() {
                    sh.recipients.push((n as u8 + 1) % namespaces);
                }
            }
            for acc in &mut spec.acceptances {
                acc.owner %= namespaces;
            }
        }
        if let Some(r) = spec.region {
            info.labels.insert("ims.imageshare.io/region".into(), format!("r{r}"));
        }
        for (key, value) in LIMIT_KEYS.iter().zip(spec.limits) {
            if let Some(v) = value {
                info.annotations.insert(key.to_string(), v.to_string());
            }
        }
        out.push(Item::Namespace(ns.clone(), info));
        for (i, img) in spec.images.iter().enumerate() {
            let name = image_name(i as u8);
            let pvc = format!("pvc-{name}");
            let mut obj = match img.source {
                0..=6 => image(&ns, &name, img.created),
                _ => volume_image(&ns, &name, &pvc, img.created),
            };
            obj.spec.published = img.published;
            match img.source {
                7 => out.push(Item::Volume(ns.clone(), pvc, VolumeState::Bound)),
                9 => out.push(Item::Volume(ns.clone(), pvc, VolumeState::NotBound)),
                _ => {}
            }
            out.push(Item::Image(obj));
        }
        for (k, sh) in spec.shares.iter().enumerate() {
            let images: Vec<String> = sh.images.iter().map(|i| image_name(*i)).collect();
            let recipients: Vec<String> = sh.recipients.iter().map(|r| ns_name(*r)).collect();
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
            let mut obj = share(&ns, &format!("share{k}"), &images, &recipients, sh.created);
            obj.spec.expires_at = sh.expired.map(|e| Time(from_now(if e { -86_400 } else { 86_400 })));
            out.push(Item::Share(obj));
        }
        for (k, acc) in spec.acceptances.iter().enumerate() {
            let images: Vec<String> = acc.images.iter().map(|i| image_name(*i)).collect();
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            let decision = [Decision::Accept, Decision::Reject, Decision::Remove][acc.decision as usize];
            out.push(Item::Acceptance(acceptance(
                &ns,
                &format!("acc{k}"),
                &ns_name(acc.owner),
                &images,
                decision,
                acc.created,
            )));
        }
    }
    out
}

/// The same items without creationTimestamps, in the order their timestamps gave them (oldest
/// first, then by name): their input order says what the timestamps said.
fn without_timestamps(items: Vec<Item>) -> Vec<Item> {
    // (an object rather than a namespace or volume, its creation time, its name).
    type Age = (bool, Option<Timestamp>, String);
    let mut keyed: Vec<(Age, Item)> = items
        .into_iter()
        .map(|mut item| {
            let key = match item.meta_mut() {
                None => (false, None, String::new()),
                Some(meta) => {
                    let created = meta.creation_timestamp.take().map(|t| t.0);
                    (true, created, meta.name.clone().unwrap())
                }
            };
            (key, item)
        })
        .collect();
    // Stable: namespaces and volumes first, as listed.
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, item)| item).collect()
}

fn config() -> Config {
    limits(DEFAULTS[0], DEFAULTS[1], DEFAULTS[2])
}

/// Shuffles items by `seed` (0: as listed).
fn shuffled(mut items: Vec<Item>, seed: u64) -> Vec<Item> {
    if seed != 0 {
        let mut x = seed;
        for i in (1..items.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            items.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    items
}

/// A snapshot of the items, inserted in their order.
fn snapshot_of(items: Vec<Item>) -> Snapshot {
    let mut snap = Snapshot::new(config(), World::Cluster { kubevirt: true }, now()).unwrap();
    for item in items {
        put(&mut snap, item);
    }
    snap
}

/// A snapshot of the world, its items inserted in an order shuffled by `seed` (0: as listed).
fn build(world: &WorldSpec, seed: u64) -> Snapshot {
    snapshot_of(shuffled(items(world), seed))
}

/// Puts one item into a snapshot (insert or replace).
fn put(snap: &mut Snapshot, item: Item) {
    match item {
        Item::Namespace(name, info) => snap.upsert_namespace(&name, info),
        Item::Volume(ns, name, state) => snap.set_volume(&ns, &name, Some(state)),
        Item::Image(o) => snap.upsert_image(Arc::new(o)),
        Item::Share(o) => snap.upsert_share(Arc::new(o)),
        Item::Acceptance(o) => snap.upsert_acceptance(Arc::new(o)),
    }
}

/// Removes from a snapshot what `item` put there.
fn remove(snap: &mut Snapshot, item: &Item) {
    let (kind, ns, name) = item.key();
    match kind {
        0 => snap.remove_namespace(&name),
        1 => snap.set_volume(&ns, &name, None),
        2 => snap.remove_image(&ns, &name),
        3 => snap.remove_share(&ns, &name),
        _ => snap.remove_acceptance(&ns, &name),
    }
}

/// Every tenant of the snapshot evaluated by `ev`, in name order.
fn evaluate_with(ev: &mut Evaluator, snap: &Snapshot) -> Vec<TenantOutcome> {
    snap.tenants().iter().map(|ns| ev.tenant(snap, ns)).collect()
}

/// The operator's own objects, written back from outcomes: ImageOffers by (recipient, owner)
/// and ImageQuotas by namespace.
#[derive(Default)]
struct Kept {
    offers: BTreeMap<(String, String), ImageOffer>,
    quotas: BTreeMap<String, ImageQuota>,
}

/// The items with the statuses of the outcomes written into them, and the objects of the
/// operator the outcomes want: what `feed_back` does to a snapshot, done to the items so that
/// their input order stays as it was.
fn feed_back_items(items: &mut [Item], kept: &mut Kept, outcomes: &[TenantOutcome]) {
    let mut position: BTreeMap<(u8, String, String), usize> = BTreeMap::new();
    for (k, item) in items.iter().enumerate() {
        position.insert(item.key(), k);
    }
    for o in outcomes {
        let ns = &o.namespace;
        for u in &o.images {
            if let Item::Image(obj) = &mut items[position[&(2, ns.clone(), u.name.to_string())]] {
                obj.status = Some(u.status.clone());
            }
        }
        for u in &o.shares {
            if let Item::Share(obj) = &mut items[position[&(3, ns.clone(), u.name.to_string())]] {
                obj.status = Some(u.status.clone());
            }
        }
        for u in &o.acceptances {
            if let Item::Acceptance(obj) = &mut items[position[&(4, ns.clone(), u.name.to_string())]] {
                obj.status = Some(u.status.clone());
            }
        }
        for u in &o.offers {
            let offer = ImageOffer::of(ns, &u.name, u.status.clone());
            kept.offers.insert((ns.clone(), u.name.to_string()), offer);
        }
        for owner in &o.withdrawn_offers {
            kept.offers.remove(&(ns.clone(), owner.clone()));
        }
        match &o.quota {
            QuotaUpdate::Unchanged => {}
            QuotaUpdate::Apply { status, .. } => {
                kept.quotas.insert(ns.clone(), ImageQuota::of(ns, status.clone()));
            }
            QuotaUpdate::Delete => {
                kept.quotas.remove(ns);
            }
        }
    }
}

/// A snapshot of items and the operator's objects, items inserted in their order.
fn snapshot_with(items: &[Item], kept: &Kept) -> Snapshot {
    let mut snap = snapshot_of(items.to_vec());
    for ((recipient, owner), offer) in &kept.offers {
        snap.set_offer(recipient, owner, Some(Arc::new(offer.clone())));
    }
    for (ns, quota) in &kept.quotas {
        snap.set_quota(ns, Some(Arc::new(quota.clone())));
    }
    snap
}

/// The limits in force for namespace `n`: its annotation, else the default.
fn limits_of(world: &WorldSpec, n: usize) -> [i64; 3] {
    let spec = &world.namespaces[n];
    [0, 1, 2].map(|k| spec.limits[k].unwrap_or(DEFAULTS[k]))
}

fn within(limit: i64, used: usize) -> bool {
    limit == -1 || used as i64 <= limit
}

/// What one tenant uses of its limits.
#[derive(Clone, Debug, Default, PartialEq)]
struct Usage {
    /// Images admitted under the private-images limit.
    private: BTreeSet<String>,
    /// Shared images (with at least one offered pair) and their recipients.
    shared: BTreeMap<String, BTreeSet<String>>,
}

fn usage(outcomes: &[TenantOutcome]) -> BTreeMap<String, Usage> {
    let mut out = BTreeMap::new();
    for o in outcomes {
        let mut u = Usage::default();
        u.private.extend(
            o.images
                .iter()
                .filter(|u| ready(&u.status.conditions).1 != "QuotaExceeded")
                .map(|u| u.name.to_string()),
        );
        for s in &o.shares {
            for img in &s.status.images {
                let recipients: BTreeSet<String> = img.recipients().map(|r| r.to_string()).collect();
                if !recipients.is_empty() {
                    u.shared.entry(img.name.clone()).or_default().extend(recipients);
                }
            }
        }
        // A namespace that uses nothing has no entry: whether it is evaluated at all depends
        // on more than its objects (a limit annotation makes it a tenant).
        if !u.private.is_empty() || !u.shared.is_empty() {
            out.insert(o.namespace.clone(), u);
        }
    }
    out
}

fn namespace_index(ns: &str) -> usize {
    ns[2..].parse().unwrap()
}

fn check_limits(world: &WorldSpec, outcomes: &[TenantOutcome]) -> Result<(), TestCaseError> {
    for (ns, u) in usage(outcomes) {
        let n = namespace_index(&ns);
        if n >= world.namespaces.len() {
            prop_assert!(u == Usage::default(), "{ns} does not exist and uses {u:?}");
            continue;
        }
        let [private, shared, recipients] = limits_of(world, n);
        prop_assert!(
            within(private, u.private.len()),
            "{ns}: {} images admitted, limit {private}",
            u.private.len()
        );
        prop_assert!(
            within(shared, u.shared.len()),
            "{ns}: {} shared images, limit {shared}",
            u.shared.len()
        );
        for (image, r) in &u.shared {
            prop_assert!(
                within(recipients, r.len()),
                "{ns}/{image}: {} recipients, limit {recipients}",
                r.len()
            );
        }
    }
    Ok(())
}

/// A usage within `limit`, or one that admits nothing that was not admitted `before` (sticky
/// admission keeps what a lowered limit no longer has room for).
fn within_or_kept<T: Ord + std::fmt::Debug>(
    what: &str,
    limit: i64,
    now: &BTreeSet<T>,
    before: &BTreeSet<T>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        within(limit, now.len()) || now.is_subset(before),
        "{what}: {now:?} under a limit of {limit} admits more than {before:?}"
    );
    Ok(())
}

fn check_lowered(
    world: &WorldSpec,
    now: &[TenantOutcome],
    before: &BTreeMap<String, Usage>,
) -> Result<(), TestCaseError> {
    let empty = Usage::default();
    for (ns, u) in usage(now) {
        let n = namespace_index(&ns);
        if n >= world.namespaces.len() {
            continue;
        }
        let [private, shared, recipients] = limits_of(world, n);
        let b = before.get(&ns).unwrap_or(&empty);
        within_or_kept(&format!("{ns} private images"), private, &u.private, &b.private)?;
        let images: BTreeSet<&String> = u.shared.keys().collect();
        let images_before: BTreeSet<&String> = b.shared.keys().collect();
        within_or_kept(&format!("{ns} shared images"), shared, &images, &images_before)?;
        for (image, r) in &u.shared {
            let none = BTreeSet::new();
            let r_before = b.shared.get(image).unwrap_or(&none);
            within_or_kept(&format!("{ns}/{image} recipients"), recipients, r, r_before)?;
        }
    }
    Ok(())
}

/// Everything an evaluation decides, in a comparable form.
type Decided = Vec<(String, String)>;

fn decided(outcomes: &[TenantOutcome]) -> Decided {
    outcomes
        .iter()
        .map(|o| {
            let text = format!(
                "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
                o.images, o.shares, o.acceptances, o.offers, o.withdrawn_offers, o.grants, o.quota, o.events
            );
            (o.namespace.clone(), text)
        })
        .collect()
}

/// Equal outcomes; otherwise names the first tenant and part that differ.
fn same_outcomes(what: &str, actual: &[TenantOutcome], expected: &[TenantOutcome]) -> Result<(), TestCaseError> {
    let names = |o: &[TenantOutcome]| o.iter().map(|t| t.namespace.clone()).collect::<Vec<_>>();
    prop_assert_eq!(names(actual), names(expected), "{}: tenants", what);
    for (a, e) in actual.iter().zip(expected) {
        let ns = &a.namespace;
        prop_assert_eq!(&a.images, &e.images, "{}: PrivateImages of {}", what, ns);
        prop_assert_eq!(&a.shares, &e.shares, "{}: ImageShares of {}", what, ns);
        prop_assert_eq!(&a.acceptances, &e.acceptances, "{}: ShareAcceptances of {}", what, ns);
        prop_assert_eq!(&a.offers, &e.offers, "{}: ImageOffers in {}", what, ns);
        prop_assert_eq!(
            &a.withdrawn_offers,
            &e.withdrawn_offers,
            "{}: withdrawn ImageOffers in {}",
            what,
            ns
        );
        prop_assert_eq!(&a.grants, &e.grants, "{}: grants of {}", what, ns);
        prop_assert_eq!(&a.quota, &e.quota, "{}: ImageQuota of {}", what, ns);
        prop_assert_eq!(&a.events, &e.events, "{}: events of {}", what, ns);
        prop_assert_eq!(a, e, "{}: {}", what, ns);
    }
    Ok(())
}

/// (owner, image, recipient) triples.
type Pairs = BTreeSet<(String, String, String)>;

fn accepted_by_shares(outcomes: &[TenantOutcome]) -> Pairs {
    let mut out = BTreeSet::new();
    for o in outcomes {
        for u in &o.shares {
            for img in &u.status.images {
                for r in &img.accepted {
                    out.insert((o.namespace.clone(), img.name.clone(), r.to_string()));
                }
            }
        }
    }
    out
}

fn granted(outcomes: &[TenantOutcome]) -> Result<Pairs, TestCaseError> {
    let mut out = BTreeSet::new();
    for o in outcomes {
        for g in o.grants.iter() {
            let (role, binding) = (g.role(), g.binding());
            prop_assert_eq!(role.metadata.namespace.as_deref(), Some(o.namespace.as_str()));
            let names = role
                .rules
                .iter()
                .flatten()
                .flat_map(|r| r.resource_names.iter().flatten());
            prop_assert!(names.clone().any(|n| *n == g.image));
            for s in binding.subjects.iter().flatten() {
                let recipient = s.name.strip_prefix("system:serviceaccounts:");
                let recipient = recipient.ok_or_else(|| TestCaseError::fail(format!("subject {s:?}")))?;
                prop_assert!(
                    out.insert((o.namespace.clone(), g.image.clone(), recipient.to_string())),
                    "duplicate subject {} for {}/{}",
                    s.name,
                    o.namespace,
                    g.image
                );
            }
            prop_assert!(binding.subjects.as_ref().is_some_and(|s| !s.is_empty()));
        }
    }
    Ok(out)
}

/// The pairs the recipients' ImageOffers say are Accepted, and (as ShareAcceptance entries
/// with state Accepted) the ones their acceptances say are.
fn accepted_by_recipients(outcomes: &[TenantOutcome], snap: &Snapshot) -> Result<(Pairs, Pairs), TestCaseError> {
    let (mut offered, mut decided) = (BTreeSet::new(), BTreeSet::new());
    for o in outcomes {
        for u in &o.offers {
            for i in &u.status.images {
                prop_assert_eq!(
                    i.source.is_some(),
                    i.state == ShareState::Accepted,
                    "source only while Accepted"
                );
                if i.state == ShareState::Accepted {
                    offered.insert((u.name.to_string(), i.name.to_string(), o.namespace.clone()));
                }
            }
        }
        for u in &o.acceptances {
            let owner = &snap.acceptance(&o.namespace, &u.name).unwrap().object.spec.owner;
            for i in u.status.images.iter().filter(|i| i.state == ShareState::Accepted) {
                decided.insert((owner.clone(), i.name.to_string(), o.namespace.clone()));
            }
        }
    }
    Ok((offered, decided))
}

/// The inbox: for every recipient, the entries of its ImageOffers are exactly the pairs the
/// owners' ImageShare statuses offer it, in the same states, and its ShareAcceptances list
/// exactly the offered images they cover; nothing about an image that is not offered to it
/// appears; an ImageOffer is withdrawn only when the snapshot holds it, and every one it holds
/// is either kept or withdrawn.
fn check_inbox(snap: &Snapshot, outcomes: &[TenantOutcome]) -> Result<(), TestCaseError> {
    // (recipient, owner, image) -> state, as the owners' shares offer them.
    let mut offered: BTreeMap<(String, String, String), ShareState> = BTreeMap::new();
    for o in outcomes {
        for u in &o.shares {
            for img in &u.status.images {
                for (state, list) in img.lists() {
                    for r in list {
                        let key = (r.to_string(), o.namespace.clone(), img.name.clone());
                        if let Some(other) = offered.insert(key.clone(), state) {
                            prop_assert_eq!(other, state, "{:?} in two states", key);
                        }
                    }
                }
            }
        }
    }
    let mut inbox: BTreeMap<(String, String, String), ShareState> = BTreeMap::new();
    for o in outcomes {
        let recipient = &o.namespace;
        let held: BTreeSet<&str> = snap.offers_in(recipient).map(|(owner, _)| owner.as_str()).collect();
        let kept: BTreeSet<&str> = o.offers.iter().map(|u| &*u.name).collect();
        prop_assert_eq!(kept.len(), o.offers.len(), "one ImageOffer per owner in {}", recipient);
        let withdrawn: BTreeSet<&str> = o.withdrawn_offers.iter().map(String::as_str).collect();
        prop_assert_eq!(withdrawn.len(), o.withdrawn_offers.len());
        prop_assert!(
            withdrawn.is_subset(&held),
            "{recipient} withdraws {withdrawn:?} but holds {held:?}"
        );
        prop_assert!(withdrawn.is_disjoint(&kept), "{recipient} keeps and withdraws");
        let accounted: BTreeSet<&str> = kept.union(&withdrawn).copied().collect();
        prop_assert!(
            held.is_subset(&accounted),
            "{recipient} holds {held:?}, accounts for {accounted:?}"
        );
        // Statuses of the acceptances, by name.
        let acceptance_entries: BTreeMap<&str, &[ReceivedImage]> = o
            .acceptances
            .iter()
            .map(|u| (&*u.name, u.status.images.as_slice()))
            .collect();
        for u in &o.offers {
            let owner = &u.name;
            let s = &u.status;
            let current = snap.offer(recipient, owner).and_then(|x| x.status.as_ref());
            prop_assert_eq!(
                u.changed,
                current != Some(s),
                "changed of ImageOffer {}/{}",
                recipient,
                owner
            );
            prop_assert!(!s.images.is_empty(), "ImageOffer {recipient}/{owner} offers nothing");
            prop_assert_eq!(s.more_images, 0);
            let count = |state| s.images.iter().filter(|i| i.state == state).count() as i32;
            prop_assert_eq!(
                (s.pending, s.accepted, s.rejected, s.removed),
                (
                    count(ShareState::Pending),
                    count(ShareState::Accepted),
                    count(ShareState::Rejected),
                    count(ShareState::Removed)
                )
            );
            let names: Vec<&str> = s.images.iter().map(|i| &*i.name).collect();
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&names, &sorted, "entries by name, once each");
            for i in &s.images {
                prop_assert_eq!(i.source.is_some(), i.state == ShareState::Accepted);
                if let Some(source) = &i.source {
                    prop_assert_eq!(&*source.namespace, &**owner);
                }
                match &i.decided_by {
                    None => prop_assert_eq!(i.state, ShareState::Pending, "undecided {}/{}", owner, i.name),
                    Some(by) => {
                        // The deciding acceptance is the recipient's, about this owner, covers
                        // the image, says what the state is, and calls the decision its own.
                        let entry = snap.acceptance(recipient, by);
                        let entry = entry.ok_or_else(|| TestCaseError::fail(format!("decidedBy {by} unknown")))?;
                        let spec = &entry.object.spec;
                        prop_assert_eq!(&*spec.owner, &**owner);
                        prop_assert!(spec.images.is_empty() || spec.images.iter().any(|n| **n == *i.name));
                        prop_assert_eq!(spec.decision.state(), i.state);
                        let own = acceptance_entries[&**by].iter().find(|e| *e.name == *i.name);
                        prop_assert_eq!(
                            own.map(|e| (e.state, e.reason, e.decided_by.clone())),
                            Some((i.state, DecisionReason::ThisAcceptance, None)),
                            "{} decides {}/{} in {}",
                            by,
                            owner,
                            i.name,
                            recipient
                        );
                    }
                }
                inbox.insert((recipient.clone(), owner.to_string(), i.name.to_string()), i.state);
            }
        }
        for u in &o.acceptances {
            let spec = &snap.acceptance(recipient, &u.name).unwrap().object.spec;
            let covers = |image: &str| spec.images.is_empty() || spec.images.iter().any(|i| i == image);
            let expected: Vec<(String, ShareState)> = offered
                .iter()
                .filter(|((r, owner, image), _)| r == recipient && *owner == spec.owner && covers(image))
                .map(|((_, _, image), state)| (image.clone(), *state))
                .collect();
            let listed: Vec<(String, ShareState)> =
                u.status.images.iter().map(|i| (i.name.to_string(), i.state)).collect();
            prop_assert_eq!(listed, expected, "ShareAcceptance {}/{}", recipient, u.name);
            prop_assert_eq!(u.status.more_images, 0);
            for i in &u.status.images {
                match i.reason {
                    DecisionReason::ThisAcceptance => {
                        prop_assert_eq!(&i.decided_by, &None);
                        // Its own decision, or an older equal one's: the same state.
                        prop_assert_eq!(i.state, spec.decision.state());
                    }
                    DecisionReason::NamedAcceptance | DecisionReason::OwnerAcceptance | DecisionReason::Conflict => {
                        let by = i.decided_by.as_deref().unwrap_or_default();
                        prop_assert!(
                            *by != *u.name && acceptance_entries.contains_key(by),
                            "decidedBy {by:?}"
                        );
                    }
                    DecisionReason::UnreadableAcceptance => {
                        prop_assert!(false, "no unreadable acceptance in these worlds");
                    }
                }
            }
        }
    }
    prop_assert_eq!(inbox, offered);
    Ok(())
}

/// Changes `snap` from holding `first` (whose items it holds) to holding `second`: removes what
/// `second` does not hold, then puts `second`'s items one by one, calling `step` after each.
fn transition(
    snap: &mut Snapshot,
    first: Vec<Item>,
    second: Vec<Item>,
    mut step: impl FnMut(&mut Snapshot, usize) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let keep: BTreeSet<(u8, String, String)> = second.iter().map(Item::key).collect();
    for item in first.iter().filter(|item| !keep.contains(&item.key())) {
        remove(snap, item);
    }
    for (i, item) in second.into_iter().enumerate() {
        put(snap, item);
        step(snap, i)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn limits_are_never_exceeded(world in world_strategy()) {
        let mut snap = build(&world, 0);
        for _round in 0..4 {
            let outcomes = core::evaluate_all(&snap);
            check_limits(&world, &outcomes)?;
            feed_back(&mut snap, &outcomes);
        }
    }

    /// Limits lowered between rounds (and objects deleted, which frees slots): what was
    /// admitted stays admitted, and nothing new is admitted beyond the lowered limits.
    #[test]
    fn limits_lowered_between_rounds_are_never_exceeded_by_new_admissions(
        world in world_strategy(),
        lower in prop::collection::vec(prop::array::uniform3(prop_oneof![2 => Just(0u8), 1 => 1u8..4]), 6),
        deletions in prop::collection::vec((0u8..3, 0u8..6, 0u8..6), 0..=3),
    ) {
        let mut snap = build(&world, 0);
        let mut outcomes = core::evaluate_all(&snap);
        for _round in 0..2 {
            check_limits(&world, &outcomes)?;
            feed_back(&mut snap, &outcomes);
            outcomes = core::evaluate_all(&snap);
        }
        let mut before = usage(&outcomes);
        let mut lowered = world.clone();
        for (n, spec) in lowered.namespaces.iter_mut().enumerate() {
            let current = limits_of(&world, n);
            for k in 0..3 {
                let by = lower[n][k] as i64;
                if by > 0 {
                    spec.limits[k] = Some(if current[k] == -1 { 3 - by } else { (current[k] - by).max(0) });
                }
            }
        }
        for item in items(&lowered) {
            if let Item::Namespace(..) = item {
                put(&mut snap, item);
            }
        }
        // Lowered: nothing changes.
        let outcomes = core::evaluate_all(&snap);
        prop_assert_eq!(&usage(&outcomes), &before, "lowering a limit revokes nothing");
        check_lowered(&lowered, &outcomes, &before)?;
        feed_back(&mut snap, &outcomes);
        // Then slots are freed, one deletion a round.
        for (kind, n, k) in deletions {
            let ns = ns_name(n % world.namespaces.len() as u8);
            let victim = match kind {
                0 => snap.images_in(&ns).nth(k as usize).map(|e| Item::Image((*e.object).clone())),
                1 => snap.shares_in(&ns).nth(k as usize).map(|e| Item::Share((*e.object).clone())),
                _ => snap.acceptances_in(&ns).nth(k as usize).map(|e| Item::Acceptance((*e.object).clone())),
            };
            if let Some(victim) = victim {
                remove(&mut snap, &victim);
            }
            for _ in 0..2 {
                let outcomes = core::evaluate_all(&snap);
                check_lowered(&lowered, &outcomes, &before)?;
                feed_back(&mut snap, &outcomes);
                before = usage(&outcomes);
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_input_order(world in world_strategy(), seed in 1u64..u64::MAX) {
        let first = core::evaluate_all(&build(&world, 0));
        let shuffled = core::evaluate_all(&build(&world, seed));
        prop_assert_eq!(decided(&first), decided(&shuffled));
        // Also once the statuses (and ImageOffers) are written back.
        let mut a = build(&world, 0);
        let mut b = build(&world, seed);
        feed_back(&mut a, &first);
        feed_back(&mut b, &shuffled);
        prop_assert_eq!(decided(&core::evaluate_all(&a)), decided(&core::evaluate_all(&b)));
    }

    #[test]
    fn statuses_fed_back_are_a_fixed_point(world in world_strategy(), minutes in 0i64..600) {
        let mut snap = build(&world, 0);
        let first = core::evaluate_all(&snap);
        feed_back(&mut snap, &first);
        // Later, but before any expiry: nothing changes, nothing is said.
        snap.set_now(from_now(minutes * 60));
        let second = core::evaluate_all(&snap);
        for o in &second {
            for u in &o.images {
                prop_assert!(!u.changed, "PrivateImage {}/{} changed", o.namespace, u.name);
            }
            for u in &o.shares {
                prop_assert!(!u.changed, "ImageShare {}/{} changed", o.namespace, u.name);
            }
            for u in &o.acceptances {
                prop_assert!(!u.changed, "ShareAcceptance {}/{} changed", o.namespace, u.name);
            }
            for u in &o.offers {
                prop_assert!(!u.changed, "ImageOffer {}/{} changed", o.namespace, u.name);
            }
            prop_assert!(o.withdrawn_offers.is_empty(), "withdrawn in {}: {:?}", o.namespace, o.withdrawn_offers);
            prop_assert!(o.events.is_empty(), "events in {}: {:?}", o.namespace, o.events);
            prop_assert_eq!(o.writes(), 0);
        }
        prop_assert_eq!(first.len(), second.len());
        for (a, b) in first.iter().zip(&second) {
            prop_assert_eq!(&a.grants, &b.grants);
            let inbox = |o: &TenantOutcome| {
                o.offers.iter().map(|u| (u.name.clone(), u.status.clone())).collect::<Vec<_>>()
            };
            prop_assert_eq!(inbox(a), inbox(b));
        }
    }

    #[test]
    fn a_grant_exists_exactly_for_accepted_pairs(world in world_strategy()) {
        let mut snap = build(&world, 0);
        for _round in 0..2 {
            let outcomes = core::evaluate_all(&snap);
            let by_shares = accepted_by_shares(&outcomes);
            prop_assert_eq!(&granted(&outcomes)?, &by_shares);
            let (by_offers, by_acceptances) = accepted_by_recipients(&outcomes, &snap)?;
            prop_assert_eq!(&by_offers, &by_shares);
            prop_assert_eq!(&by_acceptances, &by_shares);
            // The image counts agree with the share lists.
            for o in &outcomes {
                for u in &o.images {
                    let n = by_shares.iter().filter(|(ow, i, _)| *ow == o.namespace && **i == *u.name).count();
                    prop_assert_eq!(u.status.recipients.accepted as usize, n);
                }
            }
            feed_back(&mut snap, &outcomes);
        }
    }

    /// The inbox holds exactly what is offered, as the world changes into another one and the
    /// ImageOffers are written back (and withdrawn ones deleted) along the way.
    #[test]
    fn the_inbox_holds_exactly_the_offered_pairs(
        first in world_strategy(),
        second in world_strategy(),
        every in 1usize..6,
    ) {
        let mut snap = build(&first, 0);
        for _ in 0..2 {
            let outcomes = core::evaluate_all(&snap);
            check_inbox(&snap, &outcomes)?;
            feed_back(&mut snap, &outcomes);
        }
        transition(&mut snap, items(&first), items(&second), |snap, i| {
            if i % every == 0 {
                let outcomes = core::evaluate_all(snap);
                check_inbox(snap, &outcomes)?;
                feed_back(snap, &outcomes);
            }
            Ok(())
        })?;
        for _ in 0..2 {
            let outcomes = core::evaluate_all(&snap);
            check_inbox(&snap, &outcomes)?;
            feed_back(&mut snap, &outcomes);
        }
        // Whatever was withdrawn is gone from the snapshot and not withdrawn again.
        let outcomes = core::evaluate_all(&snap);
        prop_assert!(outcomes.iter().all(|o| o.withdrawn_offers.is_empty()));
    }

    /// Without creationTimestamps, objects are ordered by input order: a world whose objects
    /// lost their timestamps and were put in in the order the timestamps gave decides what the
    /// stamped world decides, round after round, and keeps every other property.
    #[test]
    fn worlds_without_creation_timestamps(world in world_strategy(), minutes in 0i64..600) {
        let stamped_items = items(&world);
        let mut unstamped_items = without_timestamps(items(&world));
        let mut stamped = snapshot_of(stamped_items);
        let mut kept = Kept::default();
        for round in 0..3 {
            let unstamped = snapshot_with(&unstamped_items, &kept);
            let expected = core::evaluate_all(&stamped);
            let outcomes = core::evaluate_all(&unstamped);
            prop_assert_eq!(decided(&outcomes), decided(&expected), "round {}", round);
            check_limits(&world, &outcomes)?;
            check_inbox(&unstamped, &outcomes)?;
            let by_shares = accepted_by_shares(&outcomes);
            prop_assert_eq!(&granted(&outcomes)?, &by_shares);
            feed_back(&mut stamped, &expected);
            feed_back_items(&mut unstamped_items, &mut kept, &outcomes);
        }
        // The statuses written back are a fixed point, also later (before any expiry). They are
        // written into the items, not upserted into the snapshot: an update gives an unstamped
        // object a new input order (see
        // `an_update_keeps_the_age_of_an_object_without_creation_timestamp`).
        let mut snap = snapshot_with(&unstamped_items, &kept);
        snap.set_now(from_now(minutes * 60));
        for o in core::evaluate_all(&snap) {
            prop_assert_eq!(o.writes(), 0, "writes in {}: {:?}", o.namespace, o);
            prop_assert!(o.events.is_empty(), "events in {}: {:?}", o.namespace, o.events);
        }
    }

    /// A long-lived evaluator, reused while the snapshot changes (as the controller reuses one
    /// between watch events, evaluating some tenants at a time), always decides what a fresh
    /// evaluation of the same snapshot decides — ImageOffers and withdrawals included.
    #[test]
    fn a_long_lived_evaluator_equals_a_fresh_evaluation(
        first in world_strategy(),
        second in world_strategy(),
        every in 1usize..6,
        days_later in 0i64..3,
        picks in any::<u64>(),
        unstamped in any::<bool>(),
        write_changed_only in any::<bool>(),
    ) {
        let stamps = |items: Vec<Item>| if unstamped { without_timestamps(items) } else { items };
        let mut ev = Evaluator::new();
        let mut snap = snapshot_of(stamps(items(&first)));
        let outcomes = evaluate_with(&mut ev, &snap);
        same_outcomes("first evaluation", &outcomes, &core::evaluate_all(&snap))?;
        feed_back(&mut snap, &outcomes);
        let write_back = |snap: &mut Snapshot, outcomes: &[TenantOutcome]| {
            if write_changed_only {
                feed_back_changed(snap, outcomes)
            } else {
                feed_back(snap, outcomes)
            }
        };
        transition(&mut snap, stamps(items(&first)), stamps(items(&second)), |snap, i| {
            if i % every != 0 {
                return Ok(());
            }
            // Some tenants are reconciled, the others keep what the evaluator remembers.
            let tenants: Vec<String> = snap
                .tenants()
                .into_iter()
                .enumerate()
                .filter(|(k, _)| picks.rotate_left((i + k) as u32) & 1 == 1)
                .map(|(_, ns)| ns)
                .collect();
            let cached: Vec<TenantOutcome> = tenants.iter().map(|ns| ev.tenant(snap, ns)).collect();
            let fresh: Vec<TenantOutcome> = tenants.iter().map(|ns| Evaluator::new().tenant(snap, ns)).collect();
            same_outcomes(&format!("after item {i}"), &cached, &fresh)?;
            // Writing back (only sometimes, so that memoised evaluations survive) changes
            // objects the evaluator remembers.
            if i % (3 * every) == 0 {
                write_back(snap, &cached);
            }
            Ok(())
        })?;
        let cached = evaluate_with(&mut ev, &snap);
        same_outcomes("the second world", &cached, &core::evaluate_all(&snap))?;
        write_back(&mut snap, &cached);
        // Time passes too: shares of these worlds expire a day from now.
        snap.set_now(from_now(days_later * 86_400));
        let cached = evaluate_with(&mut ev, &snap);
        same_outcomes("later", &cached, &core::evaluate_all(&snap))?;
        check_inbox(&snap, &cached)?;
        // The snapshot is plain data: a copy decides the same.
        same_outcomes("a copy", &evaluate_with(&mut ev, &snap.clone()), &cached)?;
    }
}

/// The world with unlimited limits and no limit annotations: removing an image then changes
/// nothing about any other image's admission.
fn build_unlimited(world: &WorldSpec) -> Snapshot {
    let mut snap = Snapshot::new(limits(-1, -1, -1), World::Cluster { kubevirt: true }, now()).unwrap();
    for item in items(world) {
        match item {
            Item::Namespace(name, mut info) => {
                info.annotations.clear();
                snap.upsert_namespace(&name, info);
            }
            other => put(&mut snap, other),
        }
    }
    snap
}

const STATES: [ShareState; 4] = [
    ShareState::Pending,
    ShareState::Accepted,
    ShareState::Rejected,
    ShareState::Removed,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// No oracle: whatever a recipient writes into its own objects' statuses, and whatever a
    /// stale ImageOffer of its still lists, what it sees about an image that is not offered to
    /// it is the same whether that image exists or not.
    #[test]
    fn a_recipient_learns_nothing_about_unoffered_images(
        world in world_strategy(),
        owner_pick in 0u8..8,
        recipient_pick in 0u8..8,
        image_pick in 0u8..IMAGE_NAMES,
        forged_states in prop::collection::vec(0u8..4, 1..=4),
        forged_reasons in prop::collection::vec(0u8..4, 1..=4),
        stale_offer in prop::option::of(0u8..4),
    ) {
        let n = world.namespaces.len() as u8;
        let (owner, recipient) = (ns_name(owner_pick % n), ns_name(recipient_pick % n));
        prop_assume!(owner != recipient);
        let secret = image_name(image_pick);
        let mut snap = build_unlimited(&world);
        prop_assume!(snap.image(&owner, &secret).is_some());
        for _ in 0..2 {
            let outcomes = core::evaluate_all(&snap);
            feed_back(&mut snap, &outcomes);
        }
        let offered = snap.shares_in(&owner).any(|s| {
            s.object.status.iter().flat_map(|st| &st.images)
                .any(|i| *i.name == *secret && i.recipients().any(|r| **r == *recipient))
        });
        prop_assume!(!offered);
        // The recipient forges its statuses: every acceptance claims the image, in some state.
        let acceptances: Vec<ShareAcceptance> =
            snap.acceptances_in(&recipient).map(|e| (*e.object).clone()).collect();
        for (k, mut acc) in acceptances.into_iter().enumerate() {
            let mut status = acc.status.clone().unwrap_or_default();
            let state = STATES[forged_states[k % forged_states.len()] as usize];
            let reason = [
                DecisionReason::ThisAcceptance,
                DecisionReason::NamedAcceptance,
                DecisionReason::Conflict,
                DecisionReason::UnreadableAcceptance,
            ][forged_reasons[k % forged_reasons.len()] as usize];
            status.images.retain(|i| *i.name != *secret);
            status.images.push(ReceivedImage {
                name: secret.as_str().into(),
                owner: None,
                state,
                reason,
                decided_by: acc.metadata.name.as_deref().map(Into::into),
            });
            status.images.sort_by(|a, b| a.name.cmp(&b.name));
            acc.status = Some(status);
            snap.upsert_acceptance(Arc::new(acc));
        }
        // The recipient's ImageOffer of the owner still lists the image, as if it had been
        // offered once (the recipient can not write it; the operator left it stale).
        if let Some(state) = stale_offer {
            let mut status = snap
                .offer(&recipient, &owner)
                .and_then(|o| o.status.clone())
                .unwrap_or_default();
            let decided_by = snap.acceptances_in(&recipient).next().map(|e| e.name.clone());
            status.images.retain(|i| *i.name != *secret);
            status.images.push(OfferedImage {
                name: secret.as_str().into(),
                state: STATES[state as usize],
                decided_by,
                display_name: Some("stale".into()),
                image_type: Default::default(),
                os_type: None,
                os_version: None,
                architecture: Default::default(),
                disk_size_gib: 40,
                expires_at: None,
                source: None,
            });
            status.images.sort_by(|a, b| a.name.cmp(&b.name));
            snap.set_offer(&recipient, &owner, Some(Arc::new(ImageOffer::of(&recipient, &owner, status))));
        }
        let with_image = Evaluator::new().tenant(&snap, &recipient);
        let mut without = snap.clone();
        without.remove_image(&owner, &secret);
        let without_image = Evaluator::new().tenant(&without, &recipient);
        prop_assert_eq!(with_image, without_image);
    }
}

/// Without creationTimestamps objects are ordered by input order, and an update keeps the
/// order an object was first given: here acc1 was put in first (the older) and decides (two
/// equally specific Removes: the oldest wins); once the statuses are written back (acc0, then
/// acc1) acc1 is still the older, so the statuses written back are a fixed point.
#[test]
fn an_update_keeps_the_age_of_an_object_without_creation_timestamp() {
    let unstamped = |mut acc: ShareAcceptance| {
        acc.metadata.creation_timestamp = None;
        acc
    };
    let mut snap = Snapshot::new(config(), World::Cluster { kubevirt: true }, now()).unwrap();
    for ns in ["a", "b"] {
        snap.upsert_namespace(ns, NamespaceInfo::default());
    }
    snap.upsert_image(Arc::new(image("a", "img0", 0)));
    snap.upsert_share(Arc::new(share("a", "s", &["img0"], &["b"], 0)));
    for name in ["acc1", "acc0"] {
        let acc = acceptance("b", name, "a", &[], Decision::Remove, 0);
        snap.upsert_acceptance(Arc::new(unstamped(acc)));
    }
    let first = core::evaluate_all(&snap);
    let inbox = |outcomes: &[TenantOutcome]| {
        let b = outcomes.iter().find(|o| o.namespace == "b").unwrap();
        b.offers[0].status.images[0].decided_by.clone()
    };
    assert_eq!(inbox(&first), Some("acc1".into()), "the first put in is the oldest");
    feed_back(&mut snap, &first);
    let second = core::evaluate_all(&snap);
    assert_eq!(
        inbox(&second),
        Some("acc1".into()),
        "a status write does not make acc1 younger"
    );
    assert!(second.iter().all(|o| o.writes() == 0));
}
