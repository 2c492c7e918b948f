//! Sharing by label (`ImageShare.spec.recipientSelector`) and auto-accept by label
//! (`ShareAcceptance.spec.ownerSelector`): a test per rule of the README, and properties that
//! tie each selector to the explicit objects it stands for.

mod common;

use std::collections::BTreeMap;

use common::*;
use ims_operator::{
    api::{Decision, ShareState},
    core::World,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proptest::prelude::*;

const REGION: &str = "ims.imageshare.io/region";

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(key.to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

fn selecting_share(
    ns: &str,
    name: &str,
    images: &[&str],
    recipients: &[&str],
    sel: LabelSelector,
) -> ims_operator::api::ImageShare {
    let mut s = share(ns, name, images, recipients, 10);
    s.spec.recipient_selector = Some(sel);
    s
}

fn auto(
    ns: &str,
    name: &str,
    sel: LabelSelector,
    decision: Decision,
    created: i64,
) -> ims_operator::api::ShareAcceptance {
    let mut a = acceptance(ns, name, "", &[], decision, created);
    a.spec.owner_selector = Some(sel);
    a
}

/// Recipients of `image` in a share status, by state.
fn states(out: &Outcome, ns: &str, share: &str, image: &str) -> BTreeMap<String, ShareState> {
    let st = out.share(ns, share);
    let entry = st.images.iter().find(|i| i.name == image).expect("the image is listed");
    entry
        .lists()
        .into_iter()
        .flat_map(|(state, list)| list.iter().map(move |r| (r.to_string(), state)))
        .collect()
}

#[test]
fn a_selector_offers_matching_namespaces_after_the_listed_ones() {
    let mut s = Scenario::new(limits(10, 30, 3), World::Cluster { kubevirt: true });
    s.namespace("owner", &[("team", "blue")], &[])
        .namespace("b-blue", &[("team", "blue")], &[])
        .namespace("c-blue-far", &[("team", "blue"), (REGION, "far")], &[])
        .namespace("d-red", &[("team", "red")], &[])
        .namespace("e-listed", &[], &[])
        .namespace("f-blue", &[("team", "blue")], &[])
        .namespace("g-blue", &[("team", "blue")], &[])
        .image(image("owner", "web", 0))
        .share(selecting_share(
            "owner",
            "s",
            &["web"],
            &["e-listed"],
            selector("team", "blue"),
        ));
    let out = s.settle();
    let offered = states(&out, "owner", "s", "web");
    // The owner and the namespace of another region are skipped silently; the listed recipient
    // comes first, then the selected ones by name, under the limit of 3 recipients per image.
    assert_eq!(offered.keys().collect::<Vec<_>>(), ["b-blue", "e-listed", "f-blue"]);
    let refused = &out.share("owner", "s").images[0].refused;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason, "RecipientLimitExceeded");
    assert_eq!(refused[0].recipients, ["g-blue"]);
    assert!(out.offer("b-blue", "owner").is_some());
    assert!(out.offer("c-blue-far", "owner").is_none());
    assert!(out.offer("d-red", "owner").is_none());
}

#[test]
fn a_namespace_that_stops_matching_loses_the_offer_and_its_access() {
    let mut s = Scenario::cluster();
    s.namespace("owner", &[], &[])
        .namespace("b", &[("team", "blue")], &[])
        .image(image("owner", "web", 0))
        .share(selecting_share("owner", "s", &["web"], &[], selector("team", "blue")))
        .acceptance(acceptance("b", "take", "owner", &[], Decision::Accept, 20));
    let out = s.settle();
    assert_eq!(states(&out, "owner", "s", "web")["b"], ShareState::Accepted);
    assert_eq!(out.grant_subjects("owner").len(), 1);

    s.namespace("b", &[("team", "red")], &[]);
    let out = s.eval();
    assert!(states(&out, "owner", "s", "web").is_empty());
    assert!(out.grants("owner").is_empty(), "access goes at once");
    assert_eq!(out.tenant("b").withdrawn_offers, ["owner"]);
    s.feed_back(&out);

    s.namespace("b", &[("team", "blue")], &[]);
    let out = s.settle();
    assert_eq!(
        states(&out, "owner", "s", "web")["b"],
        ShareState::Accepted,
        "offered again, and b's standing acceptance decides it"
    );
    assert_eq!(out.grant_subjects("owner").len(), 1);
}

#[test]
fn auto_accept_decides_for_every_matching_owner() {
    let mut s = Scenario::cluster();
    s.namespace("o1", &[("trusted", "true")], &[])
        .namespace("o2", &[("trusted", "true")], &[])
        .namespace("o3", &[], &[])
        .namespace("r", &[], &[]);
    for o in ["o1", "o2", "o3"] {
        s.image(image(o, "web", 0)).share(share(o, "s", &["web"], &["r"], 1));
    }
    s.acceptance(auto("r", "auto", selector("trusted", "true"), Decision::Accept, 5));
    let out = s.settle();
    assert_eq!(states(&out, "o1", "s", "web")["r"], ShareState::Accepted);
    assert_eq!(states(&out, "o2", "s", "web")["r"], ShareState::Accepted);
    assert_eq!(states(&out, "o3", "s", "web")["r"], ShareState::Pending);
    assert_eq!(out.grant_subjects("o1").len(), 1);
    assert!(out.grants("o3").is_empty());
    let entries: Vec<(Option<String>, String, ShareState)> = out
        .acceptance("r", "auto")
        .images
        .iter()
        .map(|i| (i.owner.as_deref().map(String::from), i.name.to_string(), i.state))
        .collect();
    assert_eq!(
        entries,
        [
            (Some("o1".to_string()), "web".to_string(), ShareState::Accepted),
            (Some("o2".to_string()), "web".to_string(), ShareState::Accepted),
        ]
    );
    assert_eq!(sr(&out.acceptance("r", "auto").conditions), t("True", "Applied"));
    assert_eq!(
        out.inbox("r", "o1"),
        [("web".to_string(), ShareState::Accepted, Some("auto".to_string()))]
    );

    // A new share of a matching owner is accepted with no per-image action.
    s.image(image("o1", "db", 0))
        .share(share("o1", "s2", &["db"], &["r"], 2));
    let out = s.settle();
    assert_eq!(states(&out, "o1", "s2", "db")["r"], ShareState::Accepted);
}

#[test]
fn naming_the_image_beats_naming_the_owner_beats_the_selector() {
    let mut s = Scenario::cluster();
    s.namespace("o1", &[("trusted", "true")], &[]).namespace("r", &[], &[]);
    s.image(image("o1", "x", 0))
        .image(image("o1", "y", 0))
        .share(share("o1", "s", &["x", "y"], &["r"], 1))
        // The selector removes; naming the owner (weaker decision, more specific) rejects;
        // naming x accepts.
        .acceptance(auto("r", "auto", selector("trusted", "true"), Decision::Remove, 5))
        .acceptance(acceptance("r", "owner-wide", "o1", &[], Decision::Reject, 6))
        .acceptance(acceptance("r", "take-x", "o1", &["x"], Decision::Accept, 7));
    let out = s.settle();
    assert_eq!(states(&out, "o1", "s", "x")["r"], ShareState::Accepted);
    assert_eq!(states(&out, "o1", "s", "y")["r"], ShareState::Rejected);
    let reasons: Vec<(String, String, Option<String>)> = received(out.acceptance("r", "auto"))
        .into_iter()
        .map(|(image, _, reason, by)| (image, reason, by))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "x".to_string(),
                "NamedAcceptance".to_string(),
                Some("take-x".to_string())
            ),
            (
                "y".to_string(),
                "OwnerAcceptance".to_string(),
                Some("owner-wide".to_string())
            ),
        ]
    );
    // Losing to a more specific acceptance is not a conflict.
    assert_eq!(sr(&out.acceptance("r", "auto").conditions), t("True", "Applied"));
}

#[test]
fn equal_selectors_with_different_decisions_conflict_and_fail_closed() {
    let mut s = Scenario::cluster();
    s.namespace("o1", &[("trusted", "true"), ("tier", "gold")], &[])
        .namespace("r", &[], &[])
        .image(image("o1", "x", 0))
        .share(share("o1", "s", &["x"], &["r"], 1))
        .acceptance(auto("r", "trusted", selector("trusted", "true"), Decision::Accept, 5))
        .acceptance(auto("r", "gold", selector("tier", "gold"), Decision::Reject, 6));
    let out = s.settle();
    assert_eq!(states(&out, "o1", "s", "x")["r"], ShareState::Rejected);
    assert_eq!(sr(&out.acceptance("r", "trusted").conditions), t("False", "Conflict"));
    assert_eq!(sr(&out.acceptance("r", "gold").conditions), t("True", "Applied"));
}

#[test]
fn a_selector_matching_no_offering_owner_is_nothing_offered() {
    let mut s = Scenario::cluster();
    s.namespace("o1", &[], &[])
        .namespace("r", &[], &[])
        .image(image("o1", "x", 0))
        .share(share("o1", "s", &["x"], &["r"], 1))
        .acceptance(auto("r", "auto", selector("trusted", "true"), Decision::Accept, 5));
    let out = s.settle();
    assert_eq!(
        sr(&out.acceptance("r", "auto").conditions),
        t("False", "NothingOffered")
    );
    assert_eq!(states(&out, "o1", "s", "x")["r"], ShareState::Pending);
}

// ---------------------------------------------------------------------------------------------
// Properties

/// A namespace of the random worlds: team label (or none) and region (or the default).
#[derive(Clone, Debug)]
struct Ns {
    team: Option<&'static str>,
    far: bool,
}

fn ns_strategy() -> impl Strategy<Value = Ns> {
    (
        prop_oneof![Just(None), Just(Some("blue")), Just(Some("red"))],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(team, far)| Ns { team, far })
}

fn name(i: usize) -> String {
    format!("ns-{i}")
}

fn labels(n: &Ns) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if let Some(team) = n.team {
        out.push(("team", team));
    }
    if n.far {
        out.push((REGION, "far"));
    }
    out
}

fn world(namespaces: &[Ns], recipient_limit: i64) -> Scenario {
    let mut s = Scenario::new(limits(10, 30, recipient_limit), World::Cluster { kubevirt: true });
    for (i, n) in namespaces.iter().enumerate() {
        s.namespace(&name(i), &labels(n), &[]);
    }
    s
}

/// Every offered pair of every share, with its state.
fn pairs(out: &Outcome) -> Vec<(String, String, String, ShareState)> {
    let mut all = Vec::new();
    for o in &out.0 {
        for u in &o.shares {
            for img in &u.status.images {
                for (state, list) in img.lists() {
                    for r in list {
                        all.push((o.namespace.clone(), img.name.clone(), r.to_string(), state));
                    }
                }
            }
        }
    }
    all.sort();
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A selector share offers what the same share would with the matching same-region
    /// namespaces (owner excluded) listed after the explicit ones.
    #[test]
    fn a_selector_share_is_the_share_listing_what_it_selects(
        namespaces in prop::collection::vec(ns_strategy(), 2..12),
        explicit in prop::collection::btree_set(0usize..12, 0..4),
        recipient_limit in prop_oneof![Just(-1i64), 1i64..5],
        accepting in prop::collection::btree_set(0usize..12, 0..6),
    ) {
        let owner = name(0);
        let listed: Vec<String> = explicit.iter().filter(|i| **i < namespaces.len()).map(|i| name(*i)).collect();
        let owner_far = namespaces[0].far;
        let build = |recipients: Vec<String>, by_selector: bool| {
            let mut s = world(&namespaces, recipient_limit);
            s.image(image(&owner, "web", 0));
            let refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
            let mut sh = share(&owner, "s", &["web"], &refs, 1);
            if by_selector {
                sh.spec.recipient_selector = Some(selector("team", "blue"));
            }
            if !sh.spec.recipients.is_empty() || by_selector {
                s.share(sh);
            }
            for i in accepting.iter().filter(|i| **i < namespaces.len()) {
                s.acceptance(acceptance(&name(*i), "take", &owner, &[], Decision::Accept, 5));
            }
            s
        };
        let mut expanded = listed.clone();
        let mut selected: Vec<String> = namespaces
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != 0 && n.team == Some("blue") && n.far == owner_far)
            .map(|(i, _)| name(i))
            .filter(|n| !listed.contains(n))
            .collect();
        selected.sort();
        expanded.extend(selected);
        let by_selector = build(listed.clone(), true).settle();
        let by_list = build(expanded, false).settle();
        prop_assert_eq!(pairs(&by_selector), pairs(&by_list));
        for (i, _) in namespaces.iter().enumerate() {
            prop_assert_eq!(by_selector.inbox(&name(i), &owner), by_list.inbox(&name(i), &owner));
        }
        prop_assert_eq!(by_selector.grant_subjects(&owner), by_list.grant_subjects(&owner));
    }

    /// Auto-accept decides what the owner-wide acceptances it implies would, where no
    /// acceptance naming the owner takes precedence.
    #[test]
    fn auto_accept_is_the_owner_wide_acceptances_it_implies(
        namespaces in prop::collection::vec(ns_strategy(), 3..10),
        decision in prop_oneof![Just(Decision::Accept), Just(Decision::Reject), Just(Decision::Remove)],
        named in prop::collection::btree_map(1usize..10, prop_oneof![Just(Decision::Accept), Just(Decision::Reject), Just(Decision::Remove)], 0..3),
    ) {
        let recipient = name(0);
        let build = |by_selector: bool| {
            let mut s = world(&namespaces, -1);
            for i in 1..namespaces.len() {
                let owner = name(i);
                s.image(image(&owner, "x", 0)).image(image(&owner, "y", 0));
                s.share(share(&owner, "s", &["x", "y"], &[&recipient], 1));
            }
            if by_selector {
                s.acceptance(auto(&recipient, "auto", selector("team", "blue"), decision, 5));
            } else {
                for (i, n) in namespaces.iter().enumerate().skip(1) {
                    if n.team == Some("blue") {
                        s.acceptance(acceptance(&recipient, &format!("implied-{i}"), &name(i), &[], decision, 5));
                    }
                }
            }
            // Acceptances naming an image beat both forms alike.
            for (i, d) in named.iter().filter(|(i, _)| **i < namespaces.len()) {
                s.acceptance(acceptance(&recipient, &format!("named-{i}"), &name(*i), &["x"], *d, 6));
            }
            s
        };
        let by_selector = build(true).settle();
        let implied = build(false).settle();
        prop_assert_eq!(pairs(&by_selector), pairs(&implied));
        for i in 1..namespaces.len() {
            prop_assert_eq!(by_selector.grant_subjects(&name(i)), implied.grant_subjects(&name(i)));
        }
    }
}
