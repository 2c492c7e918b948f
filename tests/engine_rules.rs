//! One test per rule of the README ("The API", "Limits and regions"), through the engine's
//! public API: objects are built in Rust, put into a `Snapshot`, evaluated with
//! `evaluate_all`, and the desired statuses, grants and events are checked.

mod common;

use common::*;
use ims_operator::{
    api::{Decision, ShareState},
    core::{EventType, Kind, MachineState, VolumeState, World},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const REGION: &str = "ims.imageshare.io/region";
const LIMIT_PRIVATE: &str = "ims.imageshare.io/limit.private-images";
const LIMIT_SHARED: &str = "ims.imageshare.io/limit.shared-images";
const LIMIT_RECIPIENTS: &str = "ims.imageshare.io/limit.recipients-per-image";

/// (status, reason) of a Ready condition.
// ---------------------------------------------------------------------------------------------
// PrivateImage Ready (README: PrivateImage; "Limits and regions")

#[test]
fn image_with_file_source_is_available() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a"]).image(image("a", "web", 0));
    let out = s.eval();
    let (status, reason, message) = ready(&out.image("a", "web").conditions);
    assert_eq!((status, reason), ("True", "Available"));
    assert!(message.contains("s3://a-images/web.qcow2"), "{message}");
}

#[test]
fn image_with_bad_file_url_is_invalid_source() {
    let mut s = Scenario::cluster();
    let mut bad = image("a", "bad", 0);
    bad.spec.source.file.as_mut().unwrap().url = "ftp://host/x.qcow2".into();
    s.namespaces(&["a"]).image(bad);
    assert_eq!(sr(&s.eval().image("a", "bad").conditions), t("False", "InvalidSource"));
}

#[test]
fn images_beyond_the_private_images_limit_wait_oldest_first() {
    let mut s = Scenario::new(limits(2, 30, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a"])
        .image(image("a", "a-young", 30))
        .image(image("a", "d-tie", 10))
        .image(image("a", "c-old", 0))
        .image(image("a", "b-mid", 10));
    let out = s.eval();
    // Oldest first by creationTimestamp; the name breaks the tie between b-mid and d-tie.
    assert_eq!(sr(&out.image("a", "c-old").conditions), t("True", "Available"));
    assert_eq!(sr(&out.image("a", "b-mid").conditions), t("True", "Available"));
    assert_eq!(sr(&out.image("a", "d-tie").conditions), t("False", "QuotaExceeded"));
    assert_eq!(sr(&out.image("a", "a-young").conditions), t("False", "QuotaExceeded"));
    let (_, _, message) = ready(&out.image("a", "a-young").conditions);
    assert!(message.contains("the limit is 2"), "{message}");
}

#[test]
fn volume_source_needs_a_bound_claim_in_a_cluster() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a"])
        .image(volume_image("a", "missing", "no-such-pvc", 0))
        .image(volume_image("a", "pending", "pending-pvc", 1))
        .image(volume_image("a", "bound", "bound-pvc", 2));
    s.snap.set_volume("a", "pending-pvc", Some(VolumeState::NotBound));
    s.snap.set_volume("a", "bound-pvc", Some(VolumeState::Bound));
    // A claim of the same name in another namespace does not count.
    s.snap.set_volume("b", "no-such-pvc", Some(VolumeState::Bound));
    let out = s.eval();
    assert_eq!(sr(&out.image("a", "missing").conditions), t("False", "SourceNotFound"));
    assert_eq!(sr(&out.image("a", "pending").conditions), t("False", "SourceNotReady"));
    assert_eq!(sr(&out.image("a", "bound").conditions), t("True", "Available"));
}

#[test]
fn server_source_needs_a_stopped_machine_in_a_cluster() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a"])
        .image(server_image("a", "missing", "no-such-vm", 0))
        .image(server_image("a", "running", "running-vm", 1))
        .image(server_image("a", "stopped", "stopped-vm", 2));
    s.snap.set_machine("a", "running-vm", Some(MachineState::Running));
    s.snap.set_machine("a", "stopped-vm", Some(MachineState::Stopped));
    let out = s.eval();
    assert_eq!(sr(&out.image("a", "missing").conditions), t("False", "SourceNotFound"));
    assert_eq!(sr(&out.image("a", "running").conditions), t("False", "SourceNotReady"));
    assert_eq!(sr(&out.image("a", "stopped").conditions), t("True", "Available"));
}

#[test]
fn volume_and_server_sources_are_unsupported_without_kubevirt() {
    let mut s = Scenario::new(Default::default(), World::Cluster { kubevirt: false });
    s.namespaces(&["a"])
        .image(volume_image("a", "vol", "disk", 0))
        .image(server_image("a", "srv", "vm", 1))
        .image(image("a", "file", 2));
    s.snap.set_volume("a", "disk", Some(VolumeState::Bound));
    s.snap.set_machine("a", "vm", Some(MachineState::Stopped));
    let out = s.eval();
    assert_eq!(sr(&out.image("a", "vol").conditions), t("False", "SourceUnsupported"));
    assert_eq!(sr(&out.image("a", "srv").conditions), t("False", "SourceUnsupported"));
    assert_eq!(sr(&out.image("a", "file").conditions), t("True", "Available"));
}

#[test]
fn offline_world_takes_unlisted_sources_and_namespaces_as_ready() {
    // simulate with the config file's `kubevirt: true`; without it see
    // simulate_judges_volume_and_server_sources_as_run_does in tests/simulate_cli.rs.
    let config = ims_operator::config::Config {
        kubevirt: true,
        ..Default::default()
    };
    let mut s = Scenario::new(config, World::Offline);
    s.image(volume_image("a", "vol", "disk", 0))
        .image(server_image("a", "srv", "vm", 1))
        .share(share("a", "s", &["vol", "srv"], &["b"], 2));
    let out = s.eval();
    assert_eq!(sr(&out.image("a", "vol").conditions), t("True", "Available"));
    assert_eq!(sr(&out.image("a", "srv").conditions), t("True", "Available"));
    assert_eq!(sr(&out.share("a", "s").conditions), t("True", "AllOffered"));
}

// ---------------------------------------------------------------------------------------------
// Why a listed pair is not offered (README: ImageShare)

#[test]
fn expired_share_offers_nothing_from_expires_at_on() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"]).image(image("a", "x", 0));
    for (name, offset) in [("at-now", 0), ("past", -3600), ("future", 1)] {
        let mut sh = share("a", name, &["x"], &["b"], 1);
        sh.spec.expires_at = Some(Time(from_now(offset)));
        s.share(sh);
    }
    let out = s.eval();
    for name in ["at-now", "past"] {
        let st = out.share("a", name);
        assert_eq!(sr(&st.conditions), t("False", "Expired"), "{name}");
        assert_eq!(st.offered, 0);
        assert!(listed(st, "x").is_empty());
        let (_, _, message) = ready(&st.conditions);
        assert!(message.contains("x → b"), "{message}");
    }
    // The same pair is still offered by the share that has not expired.
    let future = out.share("a", "future");
    assert_eq!(sr(&future.conditions), t("True", "AllOffered"));
    assert_eq!(pair_state(future, "x", "b"), Some(ShareState::Pending));
}

#[test]
fn image_not_found() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "x", 0))
        .share(share("a", "s", &["x", "ghost"], &["b"], 1));
    let out = s.eval();
    let st = out.share("a", "s");
    let (status, reason, message) = ready(&st.conditions);
    assert_eq!((status, reason), ("False", "ImageNotFound"));
    assert_eq!(message, "not offered: ImageNotFound: ghost → b");
    assert_eq!(pair_state(st, "x", "b"), Some(ShareState::Pending));
    // The missing image still has its (empty) entry.
    assert!(st.images.iter().any(|i| i.name == "ghost") && listed(st, "ghost").is_empty());
    assert_eq!((st.offered, st.accepted), (1, 0));
}

#[test]
fn image_not_ready() {
    let mut s = Scenario::new(limits(1, 30, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b"])
        .image(volume_image("a", "no-pvc", "missing", 0))
        .image(image("a", "over-quota", 5))
        .share(share("a", "s", &["no-pvc", "over-quota"], &["b"], 10));
    let out = s.eval();
    assert_eq!(
        sr(&out.image("a", "over-quota").conditions),
        t("False", "QuotaExceeded")
    );
    let (status, reason, message) = ready(&out.share("a", "s").conditions);
    assert_eq!((status, reason), ("False", "ImageNotReady"));
    assert!(
        message.contains("no-pvc → b") && message.contains("over-quota → b"),
        "{message}"
    );
}

#[test]
fn published_image_is_not_offered() {
    let mut s = Scenario::cluster();
    let mut published = image("a", "market", 0);
    published.spec.published = true;
    s.namespaces(&["a", "b"])
        .image(published)
        .share(share("a", "s", &["market"], &["b"], 1))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2));
    let out = s.eval();
    assert_eq!(sr(&out.image("a", "market").conditions), t("True", "Available"));
    let (status, reason, message) = ready(&out.share("a", "s").conditions);
    assert_eq!(
        (status, reason, message),
        ("False", "ImagePublished", "not offered: ImagePublished: market → b")
    );
    assert!(out.acceptance("b", "all").images.is_empty());
    assert!(out.grants("a").is_empty());
}

#[test]
fn recipient_is_owner() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a"])
        .image(image("a", "x", 0))
        .share(share("a", "s", &["x"], &["a"], 1));
    let out = s.eval();
    let (status, reason, message) = ready(&out.share("a", "s").conditions);
    assert_eq!(
        (status, reason, message),
        ("False", "RecipientIsOwner", "not offered: RecipientIsOwner: x → a")
    );
}

#[test]
fn recipient_not_found_in_a_cluster() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "x", 0))
        .share(share("a", "s", &["x"], &["b", "nobody"], 1));
    let out = s.eval();
    let st = out.share("a", "s");
    let (status, reason, message) = ready(&st.conditions);
    assert_eq!((status, reason), ("False", "RecipientNotFound"));
    assert_eq!(message, "not offered: RecipientNotFound: x → nobody");
    assert_eq!(listed(st, "x").into_iter().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn region_mismatch_by_label_or_operator_region() {
    let mut s = Scenario::cluster();
    s.namespace("a", &[(REGION, "cn-east")], &[])
        .namespace("same", &[(REGION, "cn-east")], &[])
        .namespace("far", &[(REGION, "cn-north")], &[])
        .namespace("unlabelled", &[], &[])
        .image(image("a", "x", 0))
        .share(share("a", "s", &["x"], &["same", "far", "unlabelled"], 1));
    // An unlabelled owner is in the operator's region ("default").
    s.namespace("o", &[], &[])
        .namespace("explicit-default", &[(REGION, "default")], &[])
        .image(image("o", "y", 0))
        .share(share("o", "s", &["y"], &["explicit-default", "far"], 1));
    let out = s.eval();
    let st = out.share("a", "s");
    let (status, reason, message) = ready(&st.conditions);
    assert_eq!((status, reason), ("False", "RegionMismatch"));
    assert_eq!(message, "not offered: RegionMismatch: x → far, unlabelled");
    assert_eq!(pair_state(st, "x", "same"), Some(ShareState::Pending));
    let other = out.share("o", "s");
    assert_eq!(pair_state(other, "y", "explicit-default"), Some(ShareState::Pending));
    assert_eq!(pair_state(other, "y", "far"), None);
}

#[test]
fn shared_image_limit_admits_the_oldest_share_first_then_spec_order() {
    let mut s = Scenario::new(limits(10, 2, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b"])
        .image(image("a", "w", 0))
        .image(image("a", "x", 0))
        .image(image("a", "y", 0))
        .image(image("a", "z", 0))
        // The younger share lists w first, but the older share's images go first.
        .share(share("a", "young", &["w", "x"], &["b"], 20))
        .share(share("a", "old", &["z", "y", "x"], &["b"], 10));
    let out = s.eval();
    let old = out.share("a", "old");
    assert_eq!(pair_state(old, "z", "b"), Some(ShareState::Pending));
    assert_eq!(pair_state(old, "y", "b"), Some(ShareState::Pending));
    let (status, reason, message) = ready(&old.conditions);
    assert_eq!((status, reason), ("False", "SharedImageLimitExceeded"));
    assert_eq!(
        message,
        "not offered: SharedImageLimitExceeded (limit 2 shared images per tenant): x → b"
    );
    assert_eq!(
        sr(&out.share("a", "young").conditions),
        t("False", "SharedImageLimitExceeded")
    );
}

#[test]
fn recipient_limit_admits_the_oldest_share_first_then_spec_order() {
    let mut s = Scenario::new(limits(10, 30, 2), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b", "c", "d", "e"])
        .image(image("a", "x", 0))
        .share(share("a", "young", &["x"], &["b", "e"], 20))
        .share(share("a", "old", &["x"], &["d", "c", "b"], 10));
    let out = s.eval();
    let old = out.share("a", "old");
    assert_eq!(listed(old, "x").into_iter().collect::<Vec<_>>(), ["c", "d"]);
    let (status, reason, message) = ready(&old.conditions);
    assert_eq!((status, reason), ("False", "RecipientLimitExceeded"));
    assert_eq!(
        message,
        "not offered: RecipientLimitExceeded (limit 2 recipients per image): x → b"
    );
    let young = out.share("a", "young");
    assert!(listed(young, "x").is_empty());
    let (_, _, message) = ready(&young.conditions);
    assert!(message.ends_with("x → b, e"), "{message}");
    assert_eq!(out.image("a", "x").recipients.pending, 2);
}

#[test]
fn refusal_reasons_follow_the_precedence_order() {
    // Every failing rule at once, then the causes are taken away one by one: the reason is
    // always the first that still applies.
    let order = [
        "Expired",
        "ImageNotFound",
        "ImageNotReady",
        "ImagePublished",
        "RecipientIsOwner",
        "RecipientNotFound",
        "RegionMismatch",
        "SharedImageLimitExceeded",
        "RecipientLimitExceeded",
        "AllOffered",
    ];
    let mut images = vec!["ghost", "broken", "pub", "ok1", "ok2"];
    let mut recipients = vec!["b", "c", "a", "nobody", "far"];
    for (step, expected) in order.iter().enumerate() {
        let mut s = Scenario::new(limits(10, 1, 1), World::Cluster { kubevirt: true });
        s.namespaces(&["a", "b", "c"])
            .namespace("far", &[(REGION, "elsewhere")], &[]);
        let mut published = image("a", "pub", 2);
        published.spec.published = true;
        s.image(volume_image("a", "broken", "missing-pvc", 1))
            .image(published)
            .image(image("a", "ok1", 3))
            .image(image("a", "ok2", 4));
        let mut sh = share("a", "s", &images, &recipients, 10);
        if step == 0 {
            sh.spec.expires_at = Some(Time(from_now(-1)));
        }
        s.share(sh);
        let out = s.eval();
        let st = out.share("a", "s");
        let (status, reason, message) = ready(&st.conditions);
        assert_eq!(reason, *expected, "step {step}: {message}");
        assert_eq!(status == "True", *expected == "AllOffered");
        if step == 1 {
            // The message names every pair not offered, grouped by reason in precedence order;
            // a pair that fails several rules is named once, under the first.
            assert_eq!(
                message,
                "not offered: ImageNotFound: ghost → b, c, a, nobody, far; \
                 ImageNotReady: broken → b, c, a, nobody, far; \
                 ImagePublished: pub → b, c, a, nobody, far; \
                 RecipientIsOwner: ok1 → a, ok2 → a; \
                 RecipientNotFound: ok1 → nobody, ok2 → nobody; \
                 RegionMismatch: ok1 → far, ok2 → far; \
                 SharedImageLimitExceeded (limit 1 shared images per tenant): ok2 → b, c; \
                 RecipientLimitExceeded (limit 1 recipients per image): ok1 → c"
            );
            assert_eq!(st.offered, 1);
            assert_eq!(pair_state(st, "ok1", "b"), Some(ShareState::Pending));
        }
        // Take away the cause of this step's reason.
        match *expected {
            "ImageNotFound" => images.retain(|i| *i != "ghost"),
            "ImageNotReady" => images.retain(|i| *i != "broken"),
            "ImagePublished" => images.retain(|i| *i != "pub"),
            "RecipientIsOwner" => recipients.retain(|r| *r != "a"),
            "RecipientNotFound" => recipients.retain(|r| *r != "nobody"),
            "RegionMismatch" => recipients.retain(|r| *r != "far"),
            "SharedImageLimitExceeded" => images.retain(|i| *i != "ok2"),
            "RecipientLimitExceeded" => recipients.retain(|r| *r != "c"),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Share states (README: ShareAcceptance)

fn offered_x_to_b() -> Scenario {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "x", 0))
        .image(image("a", "y", 1))
        .share(share("a", "s", &["x", "y"], &["b"], 2));
    s
}

#[test]
fn the_four_states() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"]);
    for (i, name) in ["p", "acc", "rej", "rem"].iter().enumerate() {
        s.image(image("a", name, i as i64));
    }
    s.share(share("a", "s", &["p", "acc", "rej", "rem"], &["b"], 10))
        .acceptance(acceptance("b", "1", "a", &["acc"], Decision::Accept, 11))
        .acceptance(acceptance("b", "2", "a", &["rej"], Decision::Reject, 12))
        .acceptance(acceptance("b", "3", "a", &["rem"], Decision::Remove, 13));
    let out = s.eval();
    let st = out.share("a", "s");
    assert_eq!(pair_state(st, "p", "b"), Some(ShareState::Pending));
    assert_eq!(pair_state(st, "acc", "b"), Some(ShareState::Accepted));
    assert_eq!(pair_state(st, "rej", "b"), Some(ShareState::Rejected));
    assert_eq!(pair_state(st, "rem", "b"), Some(ShareState::Removed));
    assert_eq!((st.offered, st.accepted), (4, 1));
    let counts = |n: &str| {
        let r = &out.image("a", n).recipients;
        (r.pending, r.accepted, r.rejected, r.removed)
    };
    assert_eq!(counts("p"), (1, 0, 0, 0));
    assert_eq!(counts("acc"), (0, 1, 0, 0));
    assert_eq!(counts("rej"), (0, 0, 1, 0));
    assert_eq!(counts("rem"), (0, 0, 0, 1));
    // The inbox lists every offered image ("shared with me"); only Accepted has a source.
    let seen = out.offer("b", "a").expect("b has an ImageOffer of a");
    let states: Vec<(String, ShareState, bool)> = seen
        .images
        .iter()
        .map(|i| (i.name.to_string(), i.state, i.source.is_some()))
        .collect();
    assert_eq!(
        states,
        [
            ("acc".to_string(), ShareState::Accepted, true),
            ("p".to_string(), ShareState::Pending, false),
            ("rej".to_string(), ShareState::Rejected, false),
            ("rem".to_string(), ShareState::Removed, false),
        ]
    );
    for name in ["1", "2", "3"] {
        assert_eq!(sr(&out.acceptance("b", name).conditions), t("True", "Applied"));
    }
}

#[test]
fn decisions_can_be_changed_in_any_direction() {
    // Level-based: the state follows the current decision, whatever it was before.
    let mut s = offered_x_to_b();
    let path = [
        Decision::Reject,
        Decision::Accept,
        Decision::Remove,
        Decision::Accept,
        Decision::Reject,
        Decision::Remove,
        Decision::Reject,
        Decision::Accept,
    ];
    for decision in path {
        s.acceptance(acceptance("b", "d", "a", &["x"], decision, 5));
        let out = s.settle();
        assert_eq!(pair_state(out.share("a", "s"), "x", "b"), Some(decision.state()));
        assert_eq!(out.grants("a").len(), usize::from(decision == Decision::Accept));
    }
}

#[test]
fn named_acceptance_beats_one_covering_all_and_both_are_applied() {
    let mut s = offered_x_to_b();
    s.acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 5))
        .acceptance(acceptance("b", "reject-x", "a", &["x"], Decision::Reject, 6));
    let out = s.eval();
    let st = out.share("a", "s");
    assert_eq!(pair_state(st, "x", "b"), Some(ShareState::Rejected));
    assert_eq!(pair_state(st, "y", "b"), Some(ShareState::Accepted));
    assert_eq!(sr(&out.acceptance("b", "all").conditions), t("True", "Applied"));
    assert_eq!(sr(&out.acceptance("b", "reject-x").conditions), t("True", "Applied"));
    let r = |n: &str, by: &str| (n.to_string(), by.to_string());
    let reasons = |name: &str| -> Vec<(String, String)> {
        received(out.acceptance("b", name))
            .into_iter()
            .map(|(img, _, reason, by)| (img, format!("{reason}/{}", by.unwrap_or_default())))
            .collect()
    };
    assert_eq!(
        reasons("all"),
        [r("x", "NamedAcceptance/reject-x"), r("y", "ThisAcceptance/")]
    );
    assert_eq!(
        reasons("reject-x"),
        [r("x", "ThisAcceptance/")],
        "an acceptance lists only the images it covers"
    );

    // Named beats all even when "all" has the stronger decision.
    let mut s = offered_x_to_b();
    s.acceptance(acceptance("b", "remove-all", "a", &[], Decision::Remove, 5))
        .acceptance(acceptance("b", "accept-x", "a", &["x"], Decision::Accept, 6));
    let out = s.eval();
    let st = out.share("a", "s");
    assert_eq!(pair_state(st, "x", "b"), Some(ShareState::Accepted));
    assert_eq!(pair_state(st, "y", "b"), Some(ShareState::Removed));
    assert_eq!(sr(&out.acceptance("b", "remove-all").conditions), t("True", "Applied"));
    assert_eq!(sr(&out.acceptance("b", "accept-x").conditions), t("True", "Applied"));
}

#[test]
fn between_equals_remove_beats_reject_beats_accept_and_the_loser_conflicts() {
    let contests = [
        (Decision::Remove, Decision::Reject),
        (Decision::Remove, Decision::Accept),
        (Decision::Reject, Decision::Accept),
    ];
    for (strong, weak) in contests {
        for named in [true, false] {
            // The loser is older in one run and younger in the other: age does not matter.
            for (strong_age, weak_age) in [(5, 6), (6, 5)] {
                let images: &[&str] = if named { &["x"] } else { &[] };
                let mut s = offered_x_to_b();
                s.acceptance(acceptance("b", "strong", "a", images, strong, strong_age))
                    .acceptance(acceptance("b", "weak", "a", images, weak, weak_age));
                let out = s.eval();
                let ctx = format!("{strong:?} vs {weak:?}, named {named}");
                assert_eq!(pair_state(out.share("a", "s"), "x", "b"), Some(strong.state()), "{ctx}");
                assert_eq!(
                    sr(&out.acceptance("b", "strong").conditions),
                    t("True", "Applied"),
                    "{ctx}"
                );
                let (status, reason, message) = ready(&out.acceptance("b", "weak").conditions);
                assert_eq!((status, reason), ("False", "Conflict"), "{ctx}");
                assert!(
                    message.contains("x: ") && message.contains("ShareAcceptance strong"),
                    "{message}"
                );
                let weak_x = &out.acceptance("b", "weak").images[0];
                assert_eq!((&*weak_x.name, weak_x.reason.as_str()), ("x", "Conflict"));
                assert_eq!(weak_x.decided_by.as_deref(), Some("strong"));
                // The losing acceptance gets a Warning, the pair's state no event for it.
                let events = out.events_on("ShareAcceptance", "b", "weak");
                assert!(
                    events
                        .iter()
                        .any(|e| e.reason == "Conflict" && e.type_ == EventType::Warning),
                    "{events:?}"
                );
            }
        }
    }
}

#[test]
fn deleting_an_acceptance_returns_its_pairs_to_pending() {
    let mut s = offered_x_to_b();
    s.acceptance(acceptance("b", "acc", "a", &["x"], Decision::Accept, 5));
    let before = s.settle();
    assert_eq!(pair_state(before.share("a", "s"), "x", "b"), Some(ShareState::Accepted));
    assert_eq!(before.grants("a").len(), 1);
    s.snap.remove_acceptance("b", "acc");
    let out = s.eval();
    assert_eq!(pair_state(out.share("a", "s"), "x", "b"), Some(ShareState::Pending));
    assert!(out.grants("a").is_empty(), "access goes with the acceptance");
    let events = out.events_on("ImageShare", "a", "s");
    assert!(
        events.iter().any(|e| e.reason == "Pending" && e.note.contains("x → b")),
        "{events:?}"
    );
}

#[test]
fn acceptance_covering_nothing_offered() {
    let mut s = offered_x_to_b();
    s.namespaces(&["c"])
        .acceptance(acceptance("c", "all", "a", &[], Decision::Accept, 5))
        .acceptance(acceptance("c", "named", "a", &["x"], Decision::Accept, 5))
        .acceptance(acceptance("b", "not-offered", "a", &["zzz"], Decision::Accept, 5))
        .acceptance(acceptance("b", "self", "b", &[], Decision::Accept, 5))
        .acceptance(acceptance("b", "unknown-owner", "nobody", &[], Decision::Accept, 5));
    let out = s.eval();
    for (ns, name) in [
        ("c", "all"),
        ("c", "named"),
        ("b", "not-offered"),
        ("b", "self"),
        ("b", "unknown-owner"),
    ] {
        let st = out.acceptance(ns, name);
        assert_eq!(sr(&st.conditions), t("False", "NothingOffered"), "{ns}/{name}");
        assert!(
            st.images.is_empty() || ns == "b" && name == "not-offered",
            "{ns}/{name}"
        );
    }
    // An acceptance of b that names something else lists nothing; b's inbox shows what a
    // offers to b.
    assert!(out.acceptance("b", "not-offered").images.is_empty());
    let listed: Vec<String> = out.inbox("b", "a").into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(listed, ["x", "y"]);
}

#[test]
fn not_offered_and_nonexistent_images_look_the_same_to_the_recipient() {
    // In every variant the owner has an image "secret" that b may not see; in the last one it
    // does not exist at all. b's statuses and events must not differ.
    let variants: [&dyn Fn(&mut Scenario); 5] = [
        &|s| {
            s.image(image("a", "secret", 3))
                .share(share("a", "other", &["secret"], &["c"], 4));
        },
        &|s| {
            let mut p = image("a", "secret", 3);
            p.spec.published = true;
            s.image(p).share(share("a", "other", &["secret"], &["b"], 4));
        },
        &|s| {
            s.image(volume_image("a", "secret", "missing", 3))
                .share(share("a", "other", &["secret"], &["b"], 4));
        },
        &|s| {
            let mut e = share("a", "other", &["secret"], &["b"], 4);
            e.spec.expires_at = Some(Time(from_now(-10)));
            s.image(image("a", "secret", 3)).share(e);
        },
        &|_| {},
    ];
    let mut seen = Vec::new();
    for variant in variants {
        let mut s = offered_x_to_b();
        s.namespaces(&["c"])
            .acceptance(acceptance("b", "named", "a", &["secret"], Decision::Accept, 5))
            .acceptance(acceptance("b", "all", "a", &[], Decision::Reject, 6));
        variant(&mut s);
        let out = s.eval();
        let b = out.tenant("b");
        seen.push((b.acceptances.clone(), b.events.clone()));
        assert_eq!(
            sr(&out.acceptance("b", "named").conditions),
            t("False", "NothingOffered")
        );
    }
    for other in &seen[1..] {
        assert_eq!(&seen[0], other);
    }
}

// ---------------------------------------------------------------------------------------------
// Limits (README, "Limits and regions")

fn available_count(out: &Outcome, ns: &str) -> usize {
    out.tenant(ns)
        .images
        .iter()
        .filter(|u| ready(&u.status.conditions).1 != "QuotaExceeded")
        .count()
}

fn five_images(s: &mut Scenario, ns: &str) {
    for i in 0..5 {
        s.image(image(ns, &format!("img-{i}"), i));
    }
}

#[test]
fn limit_annotations_raise_lower_or_lift_the_default() {
    let mut s = Scenario::new(limits(2, 30, 128), World::Cluster { kubevirt: true });
    s.namespace("default-limit", &[], &[])
        .namespace("higher", &[], &[(LIMIT_PRIVATE, "3")])
        .namespace("lower", &[], &[(LIMIT_PRIVATE, "1")])
        .namespace("unlimited", &[], &[(LIMIT_PRIVATE, "-1")])
        .namespace("zero", &[], &[(LIMIT_PRIVATE, "0")]);
    for ns in ["default-limit", "higher", "lower", "unlimited", "zero"] {
        five_images(&mut s, ns);
    }
    let out = s.eval();
    assert_eq!(available_count(&out, "default-limit"), 2);
    assert_eq!(available_count(&out, "higher"), 3);
    assert_eq!(available_count(&out, "lower"), 1);
    assert_eq!(available_count(&out, "unlimited"), 5);
    assert_eq!(available_count(&out, "zero"), 0);
    assert!(out.events().iter().all(|e| e.regarding.kind != Kind::Namespace));
}

#[test]
fn shared_and_recipient_limit_annotations_are_the_owners() {
    let mut s = Scenario::cluster();
    s.namespace("a", &[], &[(LIMIT_SHARED, "1"), (LIMIT_RECIPIENTS, "2")])
        // A recipient's own annotations do not limit what it receives.
        .namespace("b", &[], &[(LIMIT_RECIPIENTS, "0"), (LIMIT_SHARED, "0")])
        .namespaces(&["c", "d"])
        .image(image("a", "x", 0))
        .image(image("a", "y", 1))
        .share(share("a", "s", &["x", "y"], &["b", "c", "d"], 2));
    let out = s.eval();
    let st = out.share("a", "s");
    assert_eq!(listed(st, "x").into_iter().collect::<Vec<_>>(), ["b", "c"]);
    assert!(listed(st, "y").is_empty());
    assert_eq!(sr(&st.conditions), t("False", "SharedImageLimitExceeded"));
}

#[test]
fn invalid_limit_annotation_falls_back_to_the_default_with_a_warning() {
    for bad in ["abc", "-2", "1.5", "", "2x", "99999999999999999999"] {
        let mut s = Scenario::new(limits(2, 30, 128), World::Cluster { kubevirt: true });
        s.namespace("a", &[], &[(LIMIT_PRIVATE, bad), (LIMIT_RECIPIENTS, "-1")]);
        five_images(&mut s, "a");
        let out = s.eval();
        assert_eq!(available_count(&out, "a"), 2, "value {bad:?}");
        let warnings = out.events_on("Namespace", "", "a");
        assert_eq!(warnings.len(), 1, "value {bad:?}: {warnings:?}");
        let w = warnings[0];
        assert_eq!((w.type_, w.reason), (EventType::Warning, "InvalidLimitAnnotation"));
        assert!(
            w.note.contains(LIMIT_PRIVATE) && w.note.contains("default 2"),
            "{}",
            w.note
        );
        assert_eq!(w.regarding.namespace, None);
    }
}

#[test]
fn admission_is_sticky_when_the_private_images_limit_is_lowered() {
    let mut s = Scenario::new(limits(3, 30, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a"])
        .image(image("a", "i1", 10))
        .image(image("a", "i2", 11))
        .image(image("a", "i3", 12));
    assert_eq!(available_count(&s.settle(), "a"), 3);
    s.namespace("a", &[], &[(LIMIT_PRIVATE, "1")]);
    // A new image waits even though it is older than the admitted ones.
    s.image(image("a", "i0-new", 0));
    let out = s.settle();
    assert_eq!(available_count(&out, "a"), 3);
    assert_eq!(sr(&out.image("a", "i0-new").conditions), t("False", "QuotaExceeded"));
    assert_eq!(out.changed(), 1, "only the new image gets a status");
    // It is admitted only once usage falls below the limit.
    s.snap.remove_image("a", "i1");
    s.snap.remove_image("a", "i2");
    let out = s.settle();
    assert_eq!(sr(&out.image("a", "i0-new").conditions), t("False", "QuotaExceeded"));
    s.snap.remove_image("a", "i3");
    assert_eq!(sr(&s.settle().image("a", "i0-new").conditions), t("True", "Available"));
}

#[test]
fn admission_is_sticky_for_shared_images_and_recipients() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b", "c", "d"])
        .image(image("a", "x", 0))
        .image(image("a", "y", 1))
        .image(image("a", "z", 2))
        .share(share("a", "s", &["x", "y"], &["b", "c"], 3));
    s.settle();
    s.namespace("a", &[], &[(LIMIT_SHARED, "1"), (LIMIT_RECIPIENTS, "1")]);
    let out = s.settle();
    assert_eq!(out.changed(), 0, "lowering a limit evicts nothing");
    let st = out.share("a", "s");
    assert_eq!(listed(st, "x").len() + listed(st, "y").len(), 4);
    // New items wait.
    s.share(share("a", "more", &["x", "z"], &["d"], 4));
    let out = s.settle();
    let more = out.share("a", "more");
    assert!(listed(more, "x").is_empty() && listed(more, "z").is_empty());
    let (_, _, message) = ready(&more.conditions);
    assert!(
        message.contains("SharedImageLimitExceeded (limit 1 shared images per tenant): z → d")
            && message.contains("RecipientLimitExceeded (limit 1 recipients per image): x → d"),
        "{message}"
    );
    assert_eq!(out.share("a", "s"), st, "the admitted pairs keep their place");
}

#[test]
fn admission_reads_the_current_status_before_spec_order() {
    // The status says c was admitted (e.g. before the limit was lowered): c keeps its place
    // although b comes first in spec order and the limit is 1.
    let mut s = Scenario::new(limits(10, 30, 1), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b", "c"]).image(image("a", "x", 0));
    let mut sh = share("a", "s", &["x"], &["b", "c"], 1);
    sh.status = Some(ims_operator::api::ImageShareStatus {
        images: vec![ims_operator::api::SharedImageStatus {
            name: "x".into(),
            pending: vec!["c".into()],
            ..Default::default()
        }],
        ..Default::default()
    });
    s.share(sh);
    let out = s.eval();
    let st = out.share("a", "s");
    assert_eq!(listed(st, "x").into_iter().collect::<Vec<_>>(), ["c"]);
    assert_eq!(sr(&st.conditions), t("False", "RecipientLimitExceeded"));
}

#[test]
fn a_pair_offered_by_several_shares_counts_once() {
    let mut s = Scenario::new(limits(10, 1, 1), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b", "c"])
        .image(image("a", "x", 0))
        .share(share("a", "s1", &["x"], &["b"], 1))
        .share(share("a", "s2", &["x"], &["b"], 2))
        .share(share("a", "s3", &["x"], &["b", "c"], 3))
        .acceptance(acceptance("b", "acc", "a", &[], Decision::Accept, 4));
    let out = s.eval();
    for name in ["s1", "s2", "s3"] {
        assert_eq!(
            pair_state(out.share("a", name), "x", "b"),
            Some(ShareState::Accepted),
            "{name}"
        );
    }
    assert_eq!(sr(&out.share("a", "s1").conditions), t("True", "AllOffered"));
    assert_eq!(sr(&out.share("a", "s2").conditions), t("True", "AllOffered"));
    assert_eq!(
        sr(&out.share("a", "s3").conditions),
        t("False", "RecipientLimitExceeded")
    );
    let r = &out.image("a", "x").recipients;
    assert_eq!((r.pending, r.accepted), (0, 1));
    assert_eq!(out.acceptance("b", "acc").images.len(), 1);
    assert_eq!(
        out.grant_subjects("a")["x"],
        ["Group:system:serviceaccounts:b"],
        "one subject per recipient"
    );
}

// ---------------------------------------------------------------------------------------------
// Grants (README: ShareAcceptance; docs/security.md)

#[test]
fn grants_exist_exactly_for_images_with_accepted_pairs() {
    let mut config = limits(10, 30, 128);
    config.grant_subjects = vec![
        "Group:{namespace}:image-users".into(),
        "ServiceAccount:builder".into(),
        "User:admin@{namespace}".into(),
    ];
    let mut s = Scenario::new(config, World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b", "c"])
        .image(image("a", "x", 0))
        .image(image("a", "y", 1))
        .image(image("a", "z", 2))
        .share(share("a", "s", &["x", "y", "z"], &["c", "b"], 3))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 4))
        .acceptance(acceptance("b", "no-y", "a", &["y"], Decision::Reject, 4))
        .acceptance(acceptance("c", "x", "a", &["x"], Decision::Accept, 4))
        .acceptance(acceptance("c", "z", "a", &["z"], Decision::Remove, 4));
    let out = s.eval();
    let subjects = out.grant_subjects("a");
    let per = |ns: &str| {
        vec![
            format!("Group:system:serviceaccounts:{ns}"),
            format!("Group:{ns}:image-users"),
            "ServiceAccount:builder".to_string(),
            format!("User:admin@{ns}"),
        ]
    };
    assert_eq!(
        subjects.keys().collect::<Vec<_>>(),
        ["x", "z"],
        "y has no Accepted pair"
    );
    assert_eq!(subjects["x"], [per("b"), per("c")].concat());
    assert_eq!(subjects["z"], per("b"));
    let grant = out.grants("a").iter().find(|g| g.image == "x").unwrap();
    let (role, binding) = (grant.role(), grant.binding());
    let sa = binding
        .subjects
        .as_ref()
        .unwrap()
        .iter()
        .find(|s| s.kind == "ServiceAccount");
    assert_eq!(sa.unwrap().namespace.as_deref(), Some("b"));
    let rules = role.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(rules[0].resources.as_deref(), Some(&["privateimages".to_string()][..]));
    assert_eq!(rules[0].resource_names.as_deref(), Some(&["x".to_string()][..]));
    assert_eq!(role.metadata.namespace.as_deref(), Some("a"));
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let owner = &role.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("PrivateImage", "uid-a-x"));
    // No grants in the recipients' namespaces.
    assert!(out.grants("b").is_empty() && out.grants("c").is_empty());
}

#[test]
fn volume_source_grant_adds_the_claim_and_the_cdi_clone_permission() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(volume_image("a", "golden", "golden-disk", 0))
        .share(share("a", "s", &["golden"], &["b"], 1))
        .acceptance(acceptance("b", "acc", "a", &[], Decision::Accept, 2));
    s.snap.set_volume("a", "golden-disk", Some(VolumeState::Bound));
    let out = s.eval();
    let rules = out.grants("a")[0].role().rules.clone().unwrap();
    let summary: Vec<(String, String, String, String)> = rules
        .iter()
        .map(|r| {
            (
                r.api_groups.clone().unwrap_or_default().join(","),
                r.resources.clone().unwrap_or_default().join(","),
                r.resource_names.clone().unwrap_or_default().join(","),
                r.verbs.join(","),
            )
        })
        .collect();
    let row = |g: &str, r: &str, n: &str, v: &str| (g.to_string(), r.to_string(), n.to_string(), v.to_string());
    assert_eq!(
        summary,
        [
            row("ims.imageshare.io", "privateimages", "golden", "get"),
            row("", "persistentvolumeclaims", "golden-disk", "get"),
            row("cdi.kubevirt.io", "datavolumes/source", "golden-disk", "create"),
        ]
    );
    let source = out.offer("b", "a").unwrap().images[0].source.clone().unwrap();
    assert_eq!(source.namespace, "a");
    assert_eq!(source.persistent_volume_claim.as_deref(), Some("golden-disk"));
}

// ---------------------------------------------------------------------------------------------
// Status mechanics (README, "The API")

#[test]
fn observed_generation_is_the_objects_generation() {
    let mut s = offered_x_to_b();
    let mut img = s.get_image("a", "x");
    img.metadata.generation = Some(7);
    let mut sh = s.get_share("a", "s");
    sh.metadata.generation = Some(3);
    let mut acc = acceptance("b", "acc", "a", &[], Decision::Accept, 5);
    acc.metadata.generation = Some(12);
    s.image(img).share(sh).acceptance(acc);
    let out = s.eval();
    let image = out.image("a", "x");
    assert_eq!(image.observed_generation, Some(7));
    assert_eq!(image.conditions[0].observed_generation, Some(7));
    assert_eq!(out.share("a", "s").observed_generation, Some(3));
    assert_eq!(out.share("a", "s").conditions[0].observed_generation, Some(3));
    assert_eq!(out.acceptance("b", "acc").observed_generation, Some(12));
    assert_eq!(out.acceptance("b", "acc").conditions[0].observed_generation, Some(12));
}

#[test]
fn last_transition_time_is_kept_while_the_status_holds() {
    let t0 = now();
    let mut s = offered_x_to_b();
    s.acceptance(acceptance("b", "acc", "a", &["x"], Decision::Accept, 5));
    s.settle();
    s.snap.set_now(from_now(3600));
    let out = s.settle();
    assert_eq!(out.changed(), 0);
    assert!(out.events().is_empty());
    let acc = out.acceptance("b", "acc");
    assert_eq!(acc.conditions[0].last_transition_time.0, t0);
    assert_eq!(out.image("a", "x").conditions[0].last_transition_time.0, t0);

    // The pair's state changes: its time moves, the condition (still True) keeps its own.
    s.set_decision("b", "acc", Decision::Reject);
    let out = s.settle();
    let acc = out.acceptance("b", "acc");
    assert_eq!(acc.images[0].state, ShareState::Rejected);
    assert_eq!(acc.conditions[0].last_transition_time.0, t0);
    assert_eq!(out.share("a", "s").conditions[0].last_transition_time.0, t0);

    // The condition flips: now its time moves too.
    s.snap.set_now(from_now(7200));
    s.snap.remove_share("a", "s");
    let out = s.settle();
    let acc = out.acceptance("b", "acc");
    assert_eq!(sr(&acc.conditions), t("False", "NothingOffered"));
    assert_eq!(acc.conditions[0].last_transition_time.0, from_now(7200));
}

#[test]
fn received_images_are_capped_at_1000_with_a_count_of_the_rest() {
    let mut s = Scenario::new(limits(-1, -1, -1), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b"]);
    let names: Vec<String> = (0..1005).map(|i| format!("img-{i:04}")).collect();
    for (i, n) in names.iter().enumerate() {
        s.image(image("a", n, i as i64));
    }
    for (k, chunk) in names.chunks(30).enumerate() {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        s.share(share("a", &format!("s-{k:02}"), &chunk, &["b"], 2000));
    }
    s.acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 3000));
    let out = s.settle();
    let acc = out.acceptance("b", "all");
    assert_eq!(acc.images.len(), 1000);
    assert_eq!(acc.more_images, 5);
    let listed: Vec<&str> = acc.images.iter().map(|i| &*i.name).collect();
    let first: Vec<&str> = names[..1000].iter().map(String::as_str).collect();
    assert_eq!(listed, first, "the first 1000 by name");
    let (_, _, message) = ready(&acc.conditions);
    assert!(message.contains("1005 image(s)"), "{message}");
    assert_eq!(out.grants("a").len(), 1005, "the cap is on the status list only");
    // The window is stable: no writes, no events for the images beyond it.
    let again = s.eval();
    assert_eq!(again.changed(), 0);
    assert!(again.events().is_empty(), "{:?}", again.events());
}

// ---------------------------------------------------------------------------------------------
// Events (README: Events)

fn notes(events: &[&ims_operator::core::EventSpec]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}/{}: {}", e.type_.as_str(), e.reason, e.note))
        .collect()
}

#[test]
fn state_transitions_leave_events_on_owner_and_recipient_objects() {
    let mut s = offered_x_to_b();
    s.acceptance(acceptance("b", "d", "a", &["x"], Decision::Accept, 5));
    let first = s.settle();
    let share_events = notes(&first.events_on("ImageShare", "a", "s"));
    assert!(
        share_events
            .iter()
            .any(|n| n.starts_with("Normal/Offered: ") && n.contains("x → b")),
        "{share_events:?}"
    );
    let offer_events = notes(&first.events_on("ImageOffer", "b", "a"));
    assert!(
        offer_events
            .iter()
            .any(|n| n.starts_with("Normal/ImageOffered: a offers: x, y")),
        "{offer_events:?}"
    );
    // One event per fact: the acceptance tells only about its own condition.
    let acc_events = notes(&first.events_on("ShareAcceptance", "b", "d"));
    assert!(
        acc_events.iter().all(|n| n.starts_with("Normal/Applied:")),
        "{acc_events:?}"
    );

    for (decision, owner_reason) in [
        (Decision::Reject, "RecipientRejected"),
        (Decision::Remove, "RecipientRemoved"),
        (Decision::Accept, "RecipientAccepted"),
    ] {
        s.set_decision("b", "d", decision);
        let out = s.settle();
        let share_events = notes(&out.events_on("ImageShare", "a", "s"));
        assert_eq!(share_events, [format!("Normal/{owner_reason}: {owner_reason}: x → b")]);
        let state = decision.state();
        let offer_events = notes(&out.events_on("ImageOffer", "b", "a"));
        assert_eq!(offer_events, [format!("Normal/{state}: now {state}: x")]);
        assert!(out.events_on("ShareAcceptance", "b", "d").is_empty(), "told once");
    }
}

/// Accepted x (and pending y) offered to b; settled.
fn accepted_and_settled() -> Scenario {
    let mut s = offered_x_to_b();
    s.namespaces(&["c"])
        .share(share("a", "to-c", &["y"], &["c"], 3))
        .acceptance(acceptance("b", "acc", "a", &["x"], Decision::Accept, 5));
    let out = s.settle();
    assert_eq!(pair_state(out.share("a", "s"), "x", "b"), Some(ShareState::Accepted));
    s
}

fn revocation(out: &Outcome) -> Vec<String> {
    out.events_on("ShareAcceptance", "b", "acc")
        .into_iter()
        .filter(|e| e.reason == "AccessRevoked")
        .map(|e| {
            assert_eq!(e.type_, EventType::Warning);
            e.note.clone()
        })
        .collect()
}

#[test]
fn owner_actions_revoke_access_with_a_warning_saying_why() {
    // Owner removes the recipient from the share.
    let mut s = accepted_and_settled();
    let mut sh = s.get_share("a", "s");
    sh.spec.recipients = vec!["c".into()];
    s.share(sh);
    let out = s.eval();
    assert_eq!(
        revocation(&out),
        ["image x of a: the owner stopped sharing it with this namespace"]
    );
    assert!(!out.grant_subjects("a").contains_key("x"));
    let withdrawn = notes(&out.events_on("ImageShare", "a", "s"));
    assert!(
        withdrawn
            .iter()
            .any(|n| n.starts_with("Normal/OfferWithdrawn") && n.contains("x → b")),
        "{withdrawn:?}"
    );

    // Owner cancels the share.
    let mut s = accepted_and_settled();
    s.snap.remove_share("a", "s");
    let out = s.eval();
    assert_eq!(
        revocation(&out),
        ["image x of a: the owner stopped sharing it with this namespace"]
    );
    assert!(out.grants("a").is_empty());
    // y was only pending for b: its withdrawal is not a revocation of access, and it is told
    // on b's inbox.
    let acc_events = notes(&out.events_on("ImageOffer", "b", "a"));
    assert!(
        acc_events.contains(
            &"Normal/OfferWithdrawn: image y of a: the owner stopped sharing it with this namespace".to_string()
        ),
        "{acc_events:?}"
    );

    // Owner deletes the image.
    let mut s = accepted_and_settled();
    s.snap.remove_image("a", "x");
    let out = s.eval();
    assert_eq!(revocation(&out), ["image x of a: the owner deleted the image"]);
    assert!(out.grants("a").is_empty());

    // The share expires.
    let mut s = offered_x_to_b();
    let mut sh = s.get_share("a", "s");
    sh.spec.expires_at = Some(Time(from_now(3600)));
    s.share(sh)
        .acceptance(acceptance("b", "acc", "a", &["x"], Decision::Accept, 5));
    assert_eq!(s.settle().grants("a").len(), 1);
    s.snap.set_now(from_now(3600));
    let out = s.eval();
    assert_eq!(revocation(&out), ["image x of a: the share expired"]);
    assert!(out.grants("a").is_empty());
    assert_eq!(sr(&out.share("a", "s").conditions), t("False", "Expired"));
}

#[test]
fn an_unchanged_evaluation_writes_nothing_and_says_nothing() {
    let mut config = limits(3, 2, 2);
    config.grant_subjects = vec!["Group:{namespace}:users".into()];
    let mut s = Scenario::new(config, World::Cluster { kubevirt: true });
    s.namespace("a", &[(REGION, "r1")], &[(LIMIT_RECIPIENTS, "3")])
        .namespace("b", &[(REGION, "r1")], &[])
        .namespace("c", &[(REGION, "r1")], &[])
        .namespace("d", &[(REGION, "r2")], &[])
        .namespace("e", &[(REGION, "r1")], &[]);
    for i in 0..5 {
        s.image(image("a", &format!("i{i}"), i));
    }
    s.image(volume_image("a", "vol", "missing", 9))
        .share(share(
            "a",
            "s1",
            &["i0", "i1", "i4", "ghost", "vol"],
            &["b", "c", "d", "e", "a"],
            10,
        ))
        .share(share("a", "s2", &["i2", "i0"], &["nobody", "b"], 11))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 12))
        .acceptance(acceptance("b", "rm", "a", &["i1"], Decision::Remove, 12))
        .acceptance(acceptance("c", "rej", "a", &["i0"], Decision::Reject, 12))
        .acceptance(acceptance("c", "acc", "a", &["i0"], Decision::Accept, 12))
        .acceptance(acceptance("d", "all", "a", &[], Decision::Accept, 12));
    let first = s.settle();
    assert!(first.changed() > 0 && !first.events().is_empty());
    s.snap.set_now(from_now(60));
    let again = s.eval();
    assert_eq!(again.changed(), 0);
    assert!(again.events().is_empty(), "{:?}", again.events());
    for o in &again.0 {
        assert!(o.images.iter().all(|u| !u.changed));
        assert!(o.shares.iter().all(|u| !u.changed));
        assert!(o.acceptances.iter().all(|u| !u.changed));
    }
    assert_eq!(again.grant_subjects("a"), first.grant_subjects("a"));
}

#[test]
fn a_recipient_limit_of_zero_is_reported_as_the_recipient_limit() {
    // With recipients-per-image 0 no pair can be admitted: the reason is the recipient limit,
    // not the shared-images limit (which still has room).
    let mut s = Scenario::cluster();
    s.namespace("a", &[], &[(LIMIT_RECIPIENTS, "0")])
        .namespaces(&["b"])
        .image(image("a", "x", 0))
        .share(share("a", "s", &["x"], &["b"], 1));
    let out = s.eval();
    let (status, reason, message) = ready(&out.share("a", "s").conditions);
    assert_eq!((status, reason), ("False", "RecipientLimitExceeded"), "{message}");
    assert_eq!(
        message,
        "not offered: RecipientLimitExceeded (limit 0 recipients per image): x → b"
    );
}

// ---------------------------------------------------------------------------------------------
// Trust boundaries and faults (docs/security.md)

#[test]
fn a_leaving_recipient_is_offered_nothing_and_loses_its_grant() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b", "c"])
        .image(image("a", "web", 0))
        .share(share("a", "s", &["web"], &["b", "c"], 1))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2))
        .acceptance(acceptance("c", "all", "a", &[], Decision::Accept, 2));
    let out = s.settle();
    assert_eq!(
        s.eval().grant_subjects("a")["web"].len(),
        2,
        "{:?}",
        out.grant_subjects("a")
    );
    s.leaving("b");
    let out = s.settle();
    let status = out.share("a", "s");
    assert_eq!(pair_state(status, "web", "b"), None);
    assert_eq!(pair_state(status, "web", "c"), Some(ShareState::Accepted));
    assert_eq!(sr(&status.conditions), t("False", "RecipientNotFound"));
    assert_eq!(
        out.grant_subjects("a")["web"],
        vec!["Group:system:serviceaccounts:c".to_string()]
    );
}

#[test]
fn a_leaving_owner_offers_nothing() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "web", 0))
        .share(share("a", "s", &["web"], &["b"], 1))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2));
    s.settle();
    s.leaving("a");
    let out = s.settle();
    assert!(out.grants("a").is_empty());
    assert!(out.acceptance("b", "all").images.is_empty());
    assert_eq!(sr(&out.acceptance("b", "all").conditions), t("False", "NothingOffered"));
    let revoked = out.events_on("ShareAcceptance", "b", "all");
    assert!(
        revoked
            .iter()
            .any(|e| e.reason == "AccessRevoked" && e.note.contains("being deleted")),
        "{revoked:?}"
    );
}

#[test]
fn a_forged_recipient_status_reveals_nothing_about_unoffered_images() {
    // b forges its status to claim images it was never offered: "secret" exists in a, "ghost"
    // does not. What b sees about them must be the same.
    // The ImageOffer is written only by the operator (an admission policy denies everyone
    // else), but the engine does not rely on that: a forged one leaks nothing either.
    let forged = |s: &mut Scenario| {
        let mut offer = (**s.snap.offer("b", "a").expect("b holds a's offer")).clone();
        let status = offer.status.as_mut().unwrap();
        for name in ["secret", "ghost"] {
            let mut entry = status.images[0].clone();
            entry.name = name.into();
            entry.state = ShareState::Accepted;
            status.images.push(entry);
        }
        status.images.sort_by(|x, y| x.name.cmp(&y.name));
        s.snap.set_offer("b", "a", Some(std::sync::Arc::new(offer)));
    };
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "web", 0))
        .image(image("a", "secret", 0))
        .share(share("a", "s", &["web"], &["b"], 1))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2));
    s.settle();
    forged(&mut s);
    let out = s.eval();
    let mut on_recipient = out.events_on("ShareAcceptance", "b", "all");
    on_recipient.extend(out.events_on("ImageOffer", "b", "a"));
    let notes: Vec<String> = on_recipient.iter().map(|e| e.note.clone()).collect();
    let about = |name: &str| -> Vec<String> {
        notes
            .iter()
            .filter(|n| n.contains(&format!("image {name} ")))
            .map(|n| n.replace(name, "X"))
            .collect()
    };
    assert_eq!(about("secret").len(), 1, "{notes:?}");
    assert_eq!(about("secret"), about("ghost"), "{notes:?}");
    assert!(out.acceptance("b", "all").images.iter().all(|i| &*i.name == "web"));
    assert!(out.inbox("b", "a").iter().all(|(name, _, _)| name == "web"));
}

#[test]
fn an_unreadable_acceptance_keeps_pairs_from_becoming_accepted() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "old", 0))
        .image(image("a", "new", 0))
        .share(share("a", "s", &["old"], &["b"], 1))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2));
    s.settle();
    // b also holds an acceptance the operator can not read (it may be a named Reject).
    s.snap.set_unreadable_acceptance("b", "broken", true);
    let mut sh = s.get_share("a", "s");
    sh.spec.images.push("new".into());
    s.share(sh);
    let out = s.settle();
    let status = out.share("a", "s");
    // What was Accepted stays (no access is widened), the new pair stays Pending.
    assert_eq!(pair_state(status, "old", "b"), Some(ShareState::Accepted));
    assert_eq!(pair_state(status, "new", "b"), Some(ShareState::Pending));
    assert!(!out.grant_subjects("a").contains_key("new"));
    let entry = out
        .acceptance("b", "all")
        .images
        .iter()
        .find(|i| &*i.name == "new")
        .unwrap()
        .clone();
    assert_eq!(entry.reason.as_str(), "UnreadableAcceptance");
    // Fixed (readable again, or deleted): the accept applies.
    s.snap.set_unreadable_acceptance("b", "broken", false);
    let out = s.settle();
    assert_eq!(pair_state(out.share("a", "s"), "new", "b"), Some(ShareState::Accepted));
}

#[test]
fn an_unreadable_share_keeps_its_admitted_pairs_counting() {
    let mut s = Scenario::new(limits(10, 1, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b"])
        .image(image("a", "one", 0))
        .image(image("a", "two", 0))
        .share(share("a", "first", &["one"], &["b"], 1));
    let out = s.settle();
    let recorded = out.share("a", "first").clone();
    // "first" becomes unreadable (never decoded by this operator, say after a restart): its
    // slot stays taken, so "two" is still refused.
    s.snap.remove_share("a", "first");
    s.snap.set_unreadable_share("a", "first", Some(Some(recorded)));
    s.share(share("a", "second", &["two"], &["b"], 2));
    let out = s.settle();
    assert_eq!(
        sr(&out.share("a", "second").conditions),
        t("False", "SharedImageLimitExceeded")
    );
    // Without a readable record, what it holds is unknown: nothing new is admitted.
    s.snap.set_unreadable_share("a", "first", Some(None));
    let mut s2 = share("a", "third", &["two"], &["b"], 3);
    s2.spec.images = vec!["two".into()];
    s.share(s2);
    assert_eq!(
        sr(&s.eval().share("a", "third").conditions),
        t("False", "SharedImageLimitExceeded")
    );
    // Gone for good: the slot is free.
    s.snap.set_unreadable_share("a", "first", None);
    let out = s.settle();
    assert_eq!(sr(&out.share("a", "second").conditions), t("True", "AllOffered"));
}

#[test]
fn an_unreadable_image_keeps_its_private_image_slot() {
    let mut s = Scenario::new(limits(1, 30, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a"]);
    s.snap.set_unreadable_image("a", "broken", Some(None));
    s.image(image("a", "web", 5));
    assert_eq!(sr(&s.eval().image("a", "web").conditions), t("False", "QuotaExceeded"));
    s.snap.set_unreadable_image("a", "broken", None);
    assert_eq!(sr(&s.eval().image("a", "web").conditions), t("True", "Available"));
}

#[test]
fn a_blocked_grant_is_reported_on_the_image() {
    use ims_operator::core::{AccessReason, GrantFault};
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "web", 0))
        .share(share("a", "s", &["web"], &["b"], 1))
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2));
    let out = s.settle();
    let granted = |st: &ims_operator::api::PrivateImageStatus| {
        st.conditions
            .iter()
            .find(|c| c.type_ == "AccessGranted")
            .map(|c| (c.status.to_string(), c.reason.to_string()))
    };
    assert_eq!(granted(out.image("a", "web")), Some(t("True", "Granted")));
    s.snap.set_grant_fault(
        "a",
        "web",
        Some(GrantFault {
            reason: AccessReason::GrantNameTaken,
            message: "Role ims-image-web exists and was not made by the operator".into(),
        }),
    );
    let out = s.settle();
    assert_eq!(granted(out.image("a", "web")), Some(t("False", "GrantNameTaken")));
    // The image itself is still fine to share.
    assert_eq!(sr(&out.image("a", "web").conditions), t("True", "Available"));
    // Without accepted recipients there is nothing to grant, and no condition.
    s.set_decision("b", "all", Decision::Reject);
    s.snap.set_grant_fault("a", "web", None);
    assert_eq!(granted(s.settle().image("a", "web")), None);
}

#[test]
fn expiry_is_named_even_when_the_owner_record_was_rewritten_first() {
    // The owner's reconcile may write its share status (dropping the pair) before the
    // recipient's reconcile runs: the recipient is still told the share expired.
    let mut s = Scenario::cluster();
    let mut sh = share("a", "s", &["web"], &["b"], 1);
    sh.spec.expires_at = Some(Time(from_now(60)));
    s.namespaces(&["a", "b"])
        .image(image("a", "web", 0))
        .share(sh)
        .acceptance(acceptance("b", "all", "a", &[], Decision::Accept, 2));
    s.settle();
    s.snap.set_now(from_now(120));
    let owner_only: Vec<_> = s.eval().0.into_iter().filter(|o| o.namespace == "a").collect();
    feed_back(&mut s.snap, &owner_only);
    let out = s.eval();
    let notes: Vec<&str> = out
        .events_on("ShareAcceptance", "b", "all")
        .iter()
        .filter(|e| e.reason == "AccessRevoked")
        .map(|e| e.note.as_str())
        .collect();
    assert_eq!(notes, ["image web of a: the share expired"]);
}

#[test]
fn an_image_keeps_its_shared_slot_when_the_owner_swaps_its_recipients() {
    // One shared image allowed. "db" is listed by the older share but its claim is not Bound
    // yet, so "web" takes the slot. Then db's claim binds and the owner swaps web's recipient b
    // for c in the same moment: web keeps its slot (it still has an admitted pair), c is
    // offered, and db waits.
    let mut s = Scenario::new(limits(10, 1, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b", "c"])
        .image(volume_image("a", "db", "db-disk", 0))
        .image(image("a", "web", 0))
        .share(share("a", "s-db", &["db"], &["b"], 1))
        .share(share("a", "s-web", &["web"], &["b"], 2));
    s.snap.set_volume("a", "db-disk", Some(VolumeState::NotBound));
    let out = s.settle();
    assert_eq!(
        pair_state(out.share("a", "s-web"), "web", "b"),
        Some(ShareState::Pending)
    );
    s.snap.set_volume("a", "db-disk", Some(VolumeState::Bound));
    let mut sh = s.get_share("a", "s-web");
    sh.spec.recipients = vec!["c".into()];
    s.share(sh);
    let out = s.settle();
    assert_eq!(
        pair_state(out.share("a", "s-web"), "web", "c"),
        Some(ShareState::Pending)
    );
    assert_eq!(sr(&out.share("a", "s-web").conditions), t("True", "AllOffered"));
    assert_eq!(
        sr(&out.share("a", "s-db").conditions),
        t("False", "SharedImageLimitExceeded")
    );
}

#[test]
fn shared_images_are_admitted_by_the_oldest_share_that_lists_them() {
    // "old" is listed first by the oldest share, whose only recipient is in another region;
    // "new" is listed by a younger share only. Both are then shared with c: with room for one
    // shared image, "old" wins, although the first share that offered a valid pair of it is
    // younger than the one listing "new".
    let mut s = Scenario::new(limits(10, 1, 128), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "c"])
        .namespace("far", &[(REGION, "elsewhere")], &[])
        .image(image("a", "old", 0))
        .image(image("a", "new", 0))
        .share(share("a", "first", &["old"], &["far"], 1))
        .share(share("a", "second", &["new"], &["c"], 2))
        .share(share("a", "third", &["old"], &["c"], 3));
    let out = s.eval();
    assert_eq!(
        pair_state(out.share("a", "third"), "old", "c"),
        Some(ShareState::Pending)
    );
    assert_eq!(
        sr(&out.share("a", "second").conditions),
        t("False", "SharedImageLimitExceeded")
    );
}

// ---------------------------------------------------------------------------------------------
// The inbox: ImageOffer (docs/rules.md, "Inbox")

#[test]
fn an_offer_appears_with_the_first_offered_image_and_goes_with_the_last() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b", "c"]).image(image("a", "web", 0));
    let out = s.settle();
    assert!(out.0.iter().all(|o| o.offers.is_empty()), "nothing offered, no inbox");

    s.share(share("a", "s", &["web"], &["b"], 1));
    let out = s.settle();
    assert_eq!(out.inbox("b", "a"), [("web".to_string(), ShareState::Pending, None)]);
    let offer = out.offer("b", "a").unwrap();
    assert_eq!((offer.pending, offer.accepted), (1, 0));
    let events = notes(&out.events_on("ImageOffer", "b", "a"));
    assert_eq!(events, ["Normal/ImageOffered: a offers: web"]);
    assert!(out.offer("c", "a").is_none(), "c is offered nothing");

    // Accepting updates the entry: the decision and how to use the image.
    s.acceptance(acceptance("b", "take", "a", &["web"], Decision::Accept, 2));
    let out = s.settle();
    assert_eq!(
        out.inbox("b", "a"),
        [("web".to_string(), ShareState::Accepted, Some("take".to_string()))]
    );
    let entry = &out.offer("b", "a").unwrap().images[0];
    assert_eq!(entry.display_name.as_deref(), Some("Display name"));
    let source = entry.source.as_ref().expect("an accepted entry says how to use it");
    assert_eq!(source.namespace, "a");
    assert!(source.file.is_some());

    // The owner stops offering: the ImageOffer is to be deleted, with why.
    s.snap.remove_share("a", "s");
    let out = s.eval();
    assert!(out.offer("b", "a").is_none());
    assert_eq!(out.tenant("b").withdrawn_offers, ["a"]);
    let revoked = notes(&out.events_on("ShareAcceptance", "b", "take"));
    assert!(
        revoked.contains(
            &"Warning/AccessRevoked: image web of a: the owner stopped sharing it with this namespace".to_string()
        ),
        "the acceptance that had accepted it is told: {revoked:?}"
    );
    s.feed_back(&out);
    let out = s.eval();
    assert!(out.tenant("b").withdrawn_offers.is_empty(), "deleted once");
}

#[test]
fn an_offer_lists_only_what_is_offered_to_its_namespace() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b", "c"])
        .image(image("a", "web", 0))
        .image(image("a", "db", 0))
        .image(image("a", "secret", 0))
        .share(share("a", "s1", &["web"], &["b"], 1))
        .share(share("a", "s2", &["db"], &["c"], 2));
    let mut published = image("a", "shop", 0);
    published.spec.published = true;
    s.image(published)
        .share(share("a", "s3", &["shop", "missing"], &["b"], 3));
    let out = s.settle();
    let names = |ns: &str| -> Vec<String> { out.inbox(ns, "a").into_iter().map(|(n, _, _)| n).collect() };
    assert_eq!(names("b"), ["web"]);
    assert_eq!(names("c"), ["db"]);
}

#[test]
fn an_offer_says_when_it_ends() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"])
        .image(image("a", "web", 0))
        .image(image("a", "db", 0));
    let mut short = share("a", "short", &["web", "db"], &["b"], 1);
    short.spec.expires_at = Some(Time(from_now(3600)));
    let mut long = share("a", "long", &["web"], &["b"], 2);
    long.spec.expires_at = Some(Time(from_now(7200)));
    s.share(short).share(long);
    let out = s.settle();
    let ends = |out: &Outcome, image: &str| {
        out.offer("b", "a")
            .unwrap()
            .images
            .iter()
            .find(|i| &*i.name == image)
            .and_then(|i| i.expires_at.clone())
            .map(|t| t.0)
    };
    assert_eq!(
        ends(&out, "web"),
        Some(from_now(7200)),
        "the latest end of the shares offering it"
    );
    assert_eq!(ends(&out, "db"), Some(from_now(3600)));
    s.share(share("a", "forever", &["db"], &["b"], 3));
    let out = s.settle();
    assert_eq!(ends(&out, "db"), None, "a share without expiresAt offers it for good");
}

#[test]
fn an_offer_is_capped_at_1000_with_a_count_of_the_rest() {
    let mut s = Scenario::new(limits(-1, -1, -1), World::Cluster { kubevirt: true });
    s.namespaces(&["a", "b"]);
    let names: Vec<String> = (0..1003).map(|i| format!("img-{i:04}")).collect();
    for (i, n) in names.iter().enumerate() {
        s.image(image("a", n, i as i64));
    }
    for (k, chunk) in names.chunks(30).enumerate() {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        s.share(share("a", &format!("s-{k:02}"), &chunk, &["b"], 2000));
    }
    let out = s.settle();
    let offer = out.offer("b", "a").unwrap();
    assert_eq!(offer.images.len(), 1000);
    assert_eq!(offer.more_images, 3);
    assert_eq!(offer.pending, 1003, "the counts cover every offered image");
    assert_eq!(
        &*offer.images.last().unwrap().name,
        "img-0999",
        "the first 1000 by name"
    );
}

#[test]
fn a_newly_refused_pair_is_told_even_when_the_ready_reason_stays() {
    let mut s = Scenario::cluster();
    s.namespaces(&["a", "b"]).image(image("a", "web", 0));
    s.share(share("a", "s", &["web"], &["b", "ghost-1"], 1));
    let out = s.settle();
    assert_eq!(sr(&out.share("a", "s").conditions), t("False", "RecipientNotFound"));
    let refused = |out: &Outcome| -> Vec<String> {
        notes(&out.events_on("ImageShare", "a", "s"))
            .into_iter()
            .filter(|n| n.starts_with("Warning/Refused"))
            .collect()
    };
    assert_eq!(
        refused(&out),
        ["Warning/Refused: not offered: RecipientNotFound: web → ghost-1"]
    );
    let st = out.share("a", "s");
    assert_eq!(st.images[0].refused.len(), 1);
    assert_eq!(st.images[0].refused[0].recipients, ["ghost-1"]);

    // A second missing recipient: the Ready reason stays RecipientNotFound, the new pair is
    // still told, and only it.
    let mut more = s.get_share("a", "s");
    more.spec.recipients.push("ghost-2".into());
    s.share(more);
    let out = s.settle();
    assert_eq!(sr(&out.share("a", "s").conditions), t("False", "RecipientNotFound"));
    assert_eq!(
        refused(&out),
        ["Warning/Refused: not offered: RecipientNotFound: web → ghost-2"]
    );
    // Nothing new: nothing told.
    assert!(refused(&s.settle()).is_empty());
}
