//! Properties of the decision engine over random small worlds (SPEC §3, §3.1, §5):
//! limits are never exceeded, the output does not depend on input order, an evaluation fed its
//! own statuses is a fixed point, a grant exists exactly for the Accepted pairs, and the
//! snapshot's cached owner evaluations always equal a fresh evaluation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use ims_operator::{
    api::{Decision, ImageShare, PrivateImage, ShareAcceptance, ShareState},
    config::Config,
    core::{self, NamespaceInfo, Snapshot, TenantOutcome, VolumeState, World},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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

fn config() -> Config {
    limits(DEFAULTS[0], DEFAULTS[1], DEFAULTS[2])
}

/// A snapshot of the world, its items inserted in an order shuffled by `seed` (0: as listed).
fn build(world: &WorldSpec, seed: u64) -> Snapshot {
    let mut items = items(world);
    if seed != 0 {
        let mut x = seed;
        for i in (1..items.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            items.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    let mut snap = Snapshot::new(config(), World::Cluster { kubevirt: true }, now()).unwrap();
    for item in items {
        put(&mut snap, item);
    }
    snap
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

/// The limits in force for namespace `n`: its annotation, else the default.
fn limits_of(world: &WorldSpec, n: usize) -> [i64; 3] {
    let spec = &world.namespaces[n];
    [0, 1, 2].map(|k| spec.limits[k].unwrap_or(DEFAULTS[k]))
}

fn within(limit: i64, used: usize) -> bool {
    limit == -1 || used as i64 <= limit
}

fn check_limits(world: &WorldSpec, outcomes: &[TenantOutcome]) -> Result<(), TestCaseError> {
    for o in outcomes {
        let n: usize = o.namespace[2..].parse().unwrap();
        let [private, shared, recipients] = limits_of(world, n);
        let admitted = o
            .images
            .iter()
            .filter(|u| ready(&u.status.conditions).1 != "QuotaExceeded")
            .count();
        prop_assert!(
            within(private, admitted),
            "{}: {admitted} images admitted, limit {private}",
            o.namespace
        );
        let mut per_image: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for u in &o.shares {
            for img in &u.status.images {
                let all = img
                    .pending
                    .iter()
                    .chain(&img.accepted)
                    .chain(&img.rejected)
                    .chain(&img.removed);
                let set = per_image.entry(img.name.as_str()).or_default();
                set.extend(all.map(String::as_str));
            }
        }
        per_image.retain(|_, r| !r.is_empty());
        prop_assert!(
            within(shared, per_image.len()),
            "{}: {} shared images, limit {shared}",
            o.namespace,
            per_image.len()
        );
        for (image, r) in &per_image {
            prop_assert!(
                within(recipients, r.len()),
                "{}/{image}: {} recipients, limit {recipients}",
                o.namespace,
                r.len()
            );
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
                "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
                o.images, o.shares, o.acceptances, o.grants, o.events
            );
            (o.namespace.clone(), text)
        })
        .collect()
}

/// (owner, image, recipient) triples.
type Pairs = BTreeSet<(String, String, String)>;

fn accepted_by_shares(outcomes: &[TenantOutcome]) -> Pairs {
    let mut out = BTreeSet::new();
    for o in outcomes {
        for u in &o.shares {
            for img in &u.status.images {
                for r in &img.accepted {
                    out.insert((o.namespace.clone(), img.name.clone(), r.clone()));
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
            prop_assert_eq!(g.role.metadata.namespace.as_deref(), Some(o.namespace.as_str()));
            let names = g
                .role
                .rules
                .iter()
                .flatten()
                .flat_map(|r| r.resource_names.iter().flatten());
            prop_assert!(names.clone().any(|n| *n == g.image));
            for s in g.binding.subjects.iter().flatten() {
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
            prop_assert!(g.binding.subjects.as_ref().is_some_and(|s| !s.is_empty()));
        }
    }
    Ok(out)
}

fn accepted_by_recipients(outcomes: &[TenantOutcome], snap: &Snapshot) -> Pairs {
    let mut out = BTreeSet::new();
    for o in outcomes {
        for u in &o.acceptances {
            let owner = snap
                .acceptances_in(&o.namespace)
                .find(|e| e.object.metadata.name.as_deref() == Some(u.name.as_str()))
                .map(|e| e.object.spec.owner.clone())
                .unwrap();
            for i in &u.status.images {
                assert_eq!(
                    i.source.is_some(),
                    i.state == ShareState::Accepted,
                    "source only while Accepted"
                );
                if i.state == ShareState::Accepted {
                    out.insert((owner.clone(), i.name.clone(), o.namespace.clone()));
                }
            }
        }
    }
    out
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

    #[test]
    fn output_does_not_depend_on_input_order(world in world_strategy(), seed in 1u64..u64::MAX) {
        let first = core::evaluate_all(&build(&world, 0));
        let shuffled = core::evaluate_all(&build(&world, seed));
        prop_assert_eq!(decided(&first), decided(&shuffled));
        // Also once the statuses are written back.
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
            prop_assert!(o.events.is_empty(), "events in {}: {:?}", o.namespace, o.events);
            prop_assert_eq!(o.writes(), 0);
        }
        prop_assert_eq!(first.len(), second.len());
        for (a, b) in first.iter().zip(&second) {
            prop_assert_eq!(&a.grants, &b.grants);
        }
    }

    #[test]
    fn a_grant_exists_exactly_for_accepted_pairs(world in world_strategy()) {
        let mut snap = build(&world, 0);
        for _round in 0..2 {
            let outcomes = core::evaluate_all(&snap);
            let by_shares = accepted_by_shares(&outcomes);
            prop_assert_eq!(&granted(&outcomes)?, &by_shares);
            prop_assert_eq!(&accepted_by_recipients(&outcomes, &snap), &by_shares);
            // The image counts agree with the share lists.
            for o in &outcomes {
                for u in &o.images {
                    let n = by_shares.iter().filter(|(ow, i, _)| *ow == o.namespace && *i == u.name).count();
                    prop_assert_eq!(u.status.recipients.accepted as usize, n);
                }
            }
            feed_back(&mut snap, &outcomes);
        }
    }

    #[test]
    fn cached_owner_evaluations_equal_a_fresh_evaluation(
        first in world_strategy(),
        second in world_strategy(),
        every in 1usize..6,
        days_later in 0i64..3,
    ) {
        // Evaluate (filling the cache) between the changes that turn one world into another,
        // as the controller does between watch events; the result must not depend on what
        // was cached.
        let mut snap = build(&first, 0);
        let outcomes = core::evaluate_all(&snap);
        feed_back(&mut snap, &outcomes);
        let next = items(&second);
        let keep: BTreeSet<(u8, String, String)> = next.iter().map(|item| match item {
            Item::Namespace(n, _) => (0, String::new(), n.clone()),
            Item::Volume(ns, n, _) => (1, ns.clone(), n.clone()),
            Item::Image(o) => (2, o.metadata.namespace.clone().unwrap(), o.metadata.name.clone().unwrap()),
            Item::Share(o) => (3, o.metadata.namespace.clone().unwrap(), o.metadata.name.clone().unwrap()),
            Item::Acceptance(o) => (4, o.metadata.namespace.clone().unwrap(), o.metadata.name.clone().unwrap()),
        }).collect();
        for item in items(&first) {
            match item {
                Item::Namespace(n, _) if !keep.contains(&(0, String::new(), n.clone())) => snap.remove_namespace(&n),
                Item::Volume(ns, n, _) if !keep.contains(&(1, ns.clone(), n.clone())) => snap.set_volume(&ns, &n, None),
                Item::Image(o) => {
                    let (ns, n) = (o.metadata.namespace.unwrap(), o.metadata.name.unwrap());
                    if !keep.contains(&(2, ns.clone(), n.clone())) { snap.remove_image(&ns, &n) }
                }
                Item::Share(o) => {
                    let (ns, n) = (o.metadata.namespace.unwrap(), o.metadata.name.unwrap());
                    if !keep.contains(&(3, ns.clone(), n.clone())) { snap.remove_share(&ns, &n) }
                }
                Item::Acceptance(o) => {
                    let (ns, n) = (o.metadata.namespace.unwrap(), o.metadata.name.unwrap());
                    if !keep.contains(&(4, ns.clone(), n.clone())) { snap.remove_acceptance(&ns, &n) }
                }
                _ => {}
            }
        }
        for (i, item) in next.into_iter().enumerate() {
            put(&mut snap, item);
            // Evaluating fills the cache; writing the statuses back (only sometimes, so that
            // cached evaluations survive) invalidates the owners whose objects changed.
            if i % every == 0 {
                let outcomes = core::evaluate_all(&snap);
                if i % (3 * every) == 0 {
                    feed_back(&mut snap, &outcomes);
                }
            }
        }
        core::evaluate_all(&snap);
        // Time passes too: shares of these worlds expire a day from now.
        snap.set_now(from_now(days_later * 86_400));
        let cached = core::evaluate_all(&snap);
        let fresh = core::evaluate_all(&snap.clone());
        prop_assert_eq!(cached, fresh);
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

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// No oracle: whatever a recipient writes into its own objects' statuses, what it sees
    /// about an image that is not offered to it is the same whether that image exists or not.
    #[test]
    fn a_recipient_learns_nothing_about_unoffered_images(
        world in world_strategy(),
        owner_pick in 0u8..8,
        recipient_pick in 0u8..8,
        image_pick in 0u8..IMAGE_NAMES,
        forged_states in prop::collection::vec(0u8..4, 1..=4),
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
                .any(|i| i.name == secret && i.recipients().any(|r| *r == recipient))
        });
        prop_assume!(!offered);
        // The recipient forges its statuses: every acceptance claims the image, in some state.
        let acceptances: Vec<ShareAcceptance> =
            snap.acceptances_in(&recipient).map(|e| (*e.object).clone()).collect();
        for (k, mut acc) in acceptances.into_iter().enumerate() {
            let mut status = acc.status.clone().unwrap_or_default();
            let state = [ShareState::Pending, ShareState::Accepted, ShareState::Rejected, ShareState::Removed]
                [forged_states[k % forged_states.len()] as usize];
            status.images.retain(|i| i.name != secret);
            status.images.push(ims_operator::api::ReceivedImage {
                name: secret.clone(),
                state,
                reason: "ThisAcceptance".into(),
                decided_by: Some(acc.metadata.name.clone().unwrap()),
                last_transition_time: Some(Time(now())),
                display_name: Some("forged".into()),
                image_type: Default::default(),
                os_type: None,
                os_version: None,
                architecture: Default::default(),
                disk_size_gib: 40,
                source: None,
            });
            status.images.sort_by(|a, b| a.name.cmp(&b.name));
            acc.status = Some(status);
            snap.upsert_acceptance(Arc::new(acc));
        }
        let with_image = core::Evaluator::new(&snap).tenant(&recipient);
        let mut without = snap.clone();
        without.remove_image(&owner, &secret);
        let without_image = core::Evaluator::new(&without).tenant(&recipient);
        prop_assert_eq!(with_image, without_image);
    }
}
