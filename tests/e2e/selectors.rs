//! Sharing and accepting by label, end to end: an ImageShare's `recipientSelector` follows the
//! Namespace labels (a namespace that starts matching is offered the images, one that stops
//! matching loses the offer and its access), and a ShareAcceptance's `ownerSelector` makes
//! every image of a matching owner usable without a decision per image, for as long as the owner
//! matches (README.md, "The API").
//!
//! The selectors match a label whose value is the test's own prefix, so that they select only
//! the namespaces of the test, whatever else the cluster holds.

use std::time::Instant;

use ims_operator::{
    api::{DecisionReason, ImageOffer, ImageOfferStatus, ImageShare, ShareAcceptance, ShareState},
    config::Config,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::{Env, acceptance, api, env, image, ready_reason, share};

/// The label the selectors of these tests match (value: the test's prefix).
const LABEL: &str = "e2e.ims.imageshare.io/selector";

/// `{matchLabels: {LABEL: <the test's prefix>}}`.
fn selector(env: &Env) -> Value {
    json!({"matchLabels": {LABEL: env.prefix}})
}

/// An ImageShare that lists no recipient and selects the test's labelled namespaces.
fn selecting_share(env: &Env, ns: &str, name: &str, images: &[&str]) -> Value {
    json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageShare",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"images": images, "recipientSelector": selector(env)}
    })
}

/// A ShareAcceptance that decides every image of the test's labelled owner namespaces.
fn selecting_acceptance(env: &Env, ns: &str, name: &str, decision: &str) -> Value {
    json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ShareAcceptance",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ownerSelector": selector(env), "decision": decision}
    })
}

/// Sets (`true`) or removes (`false`) the selected label on a namespace, as the admin.
async fn label(env: &Env, ns: &str, on: bool) {
    let value = if on { json!(env.prefix) } else { Value::Null };
    Api::<Namespace>::all(env.client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("labelling namespace {ns}: {e}"));
}

/// The state and deciding acceptance of one image in an ImageOffer's status.
fn offered(s: &ImageOfferStatus, image: &str) -> Option<(ShareState, Option<String>)> {
    s.images
        .iter()
        .find(|i| &*i.name == image)
        .map(|i| (i.state, i.decided_by.as_deref().map(String::from)))
}

/// Waits until the ImageOffer of `owner` in `recipient` lists `image` in `state`.
async fn wait_offered(env: &Env, recipient: &str, owner: &str, image: &str, state: ShareState) -> ImageOffer {
    let img = image.to_string();
    env.wait_for::<ImageOffer, _>(recipient, owner, &format!("{image} {state:?}"), move |o| {
        o.status
            .as_ref()
            .and_then(|s| offered(s, &img))
            .is_some_and(|(st, _)| st == state)
    })
    .await
}

/// Waits until the recipient holds no ImageOffer of `owner`.
async fn wait_no_offer(env: &Env, recipient: &str, owner: &str, what: &str) {
    let offers: Api<ImageOffer> = api(env, recipient);
    env.eventually(what, || async {
        offers.get_opt(owner).await.is_ok_and(|o| o.is_none())
    })
    .await;
}

#[tokio::test]
async fn a_relabelling_a_namespace_moves_the_offer_and_its_access() {
    let Some(mut env) = env("selectrelabel").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    env.apply(selecting_share(&env, &a, "s", &["web"])).await;

    // Nothing matches yet: the share offers nothing and refuses nothing.
    let s = env
        .wait_for::<ImageShare, _>(&a, "s", "Ready/AllOffered with nothing offered", |s| {
            ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "AllOffered".into()))
        })
        .await;
    let status = s.status.unwrap();
    assert_eq!((status.offered, status.accepted), (0, 0), "{status:?}");
    assert!(
        status.images.iter().all(|i| i.refused.is_empty()),
        "no refusal: {status:?}"
    );
    let offers: Api<ImageOffer> = api(&env, &b);
    assert!(
        offers.get_opt(&a).await.unwrap().is_none(),
        "no ImageOffer before the label"
    );

    // The label matches: the image is offered.
    let started = Instant::now();
    label(&env, &b, true).await;
    wait_offered(&env, &b, &a, "web", ShareState::Pending).await;
    eprintln!(
        "e2e: labelled {b}: ImageOffer {b}/{a} with web Pending after {:.1?}",
        started.elapsed()
    );
    assert!(!env.can_get_image(&a, "web", &b).await, "a pending image is not usable");

    // Accepted: usable.
    env.apply(acceptance(&b, "from-a", &a, &["web"], "Accept")).await;
    wait_offered(&env, &b, &a, "web", ShareState::Accepted).await;
    env.expect_access(&a, "web", &b, true).await;

    // The label goes: so do the offer and the access, and the acceptance says so.
    let started = Instant::now();
    label(&env, &b, false).await;
    wait_no_offer(
        &env,
        &b,
        &a,
        "the ImageOffer of a namespace that stopped matching is deleted",
    )
    .await;
    env.expect_access(&a, "web", &b, false).await;
    eprintln!(
        "e2e: unlabelled {b}: offer and access gone after {:.1?}",
        started.elapsed()
    );
    env.wait_for::<ShareAcceptance, _>(&b, "from-a", "Ready/NothingOffered", |acc| {
        ready_reason(acc.status.as_ref(), |st| &st.conditions) == Some(("False".into(), "NothingOffered".into()))
    })
    .await;
    env.eventually("an AccessRevoked Event on the ShareAcceptance", || async {
        env.events(&b).await.iter().any(|e| {
            e.reason.as_deref() == Some("AccessRevoked")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("from-a")
        })
    })
    .await;
    let s = env
        .wait_for::<ImageShare, _>(&a, "s", "nothing offered again", |s| {
            s.status.as_ref().is_some_and(|st| st.offered == 0)
        })
        .await;
    let status = s.status.unwrap();
    assert!(
        status.images.iter().all(|i| i.refused.is_empty()),
        "a namespace that stopped matching is not refused: {status:?}"
    );

    // Labelled again: offered again, and the standing acceptance applies at once.
    let started = Instant::now();
    label(&env, &b, true).await;
    wait_offered(&env, &b, &a, "web", ShareState::Accepted).await;
    env.expect_access(&a, "web", &b, true).await;
    eprintln!(
        "e2e: relabelled {b}: web Accepted and usable after {:.1?}",
        started.elapsed()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn b_images_of_an_owner_selected_by_label_are_usable_without_a_decision_each() {
    let Some(mut env) = env("selectowner").await else {
        return;
    };
    let trusted = json!({LABEL: env.prefix});
    let a = env.create_namespace("a", trusted, json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    let c = env.create_namespace("c", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;

    // The recipient accepts everything its labelled owners offer, before anything is offered.
    env.apply(selecting_acceptance(&env, &b, "trusted", "Accept")).await;
    env.wait_for::<ShareAcceptance, _>(&b, "trusted", "Ready/NothingOffered", |acc| {
        ready_reason(acc.status.as_ref(), |st| &st.conditions) == Some(("False".into(), "NothingOffered".into()))
    })
    .await;

    // a (labelled) offers web: Accepted and usable with no further step.
    let started = Instant::now();
    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s1", &["web"], &[&b])).await;
    let offer = wait_offered(&env, &b, &a, "web", ShareState::Accepted).await;
    assert_eq!(
        offered(offer.status.as_ref().unwrap(), "web"),
        Some((ShareState::Accepted, Some("trusted".into()))),
        "decided by the acceptance by label"
    );
    env.expect_access(&a, "web", &b, true).await;
    eprintln!(
        "e2e: {a}/web accepted by label and usable after {:.1?}",
        started.elapsed()
    );

    // A second ImageShare with a second image: usable too.
    let started = Instant::now();
    env.apply(image(&a, "db")).await;
    env.apply(share(&a, "s2", &["db"], &[&b])).await;
    wait_offered(&env, &b, &a, "db", ShareState::Accepted).await;
    env.expect_access(&a, "db", &b, true).await;
    eprintln!("e2e: {a}/db of a second share usable after {:.1?}", started.elapsed());

    // c is not labelled: its image waits for a decision.
    env.apply(image(&c, "tools")).await;
    env.apply(share(&c, "s", &["tools"], &[&b])).await;
    wait_offered(&env, &b, &c, "tools", ShareState::Pending).await;
    assert!(
        !env.can_get_image(&c, "tools", &b).await,
        "an unlabelled owner's image is not usable"
    );

    // The acceptance lists what it decides, per owner.
    let (owner_a, owner_c) = (a.clone(), c.clone());
    let acc = env
        .wait_for::<ShareAcceptance, _>(&b, "trusted", "Applied, covering db and web of a", move |acc| {
            let images: Vec<(String, Option<String>)> = acc
                .status
                .iter()
                .flat_map(|s| &s.images)
                .map(|i| (i.name.to_string(), i.owner.as_deref().map(String::from)))
                .collect();
            ready_reason(acc.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "Applied".into()))
                && images
                    == [
                        ("db".to_string(), Some(owner_a.clone())),
                        ("web".to_string(), Some(owner_a.clone())),
                    ]
        })
        .await;
    let status = acc.status.unwrap();
    assert!(
        status
            .images
            .iter()
            .all(|i| i.state == ShareState::Accepted && i.reason == DecisionReason::ThisAcceptance),
        "{status:?}"
    );
    assert!(
        status
            .images
            .iter()
            .all(|i| i.owner.as_deref() != Some(owner_c.as_str())),
        "the unlabelled owner is not covered: {status:?}"
    );

    // c gets the label: its image is accepted at once.
    let started = Instant::now();
    label(&env, &c, true).await;
    wait_offered(&env, &b, &c, "tools", ShareState::Accepted).await;
    env.expect_access(&c, "tools", &b, true).await;
    eprintln!("e2e: labelled owner {c}: tools usable after {:.1?}", started.elapsed());

    // a loses the label: its images wait for a decision again, and their access goes.
    let started = Instant::now();
    label(&env, &a, false).await;
    for image in ["web", "db"] {
        wait_offered(&env, &b, &a, image, ShareState::Pending).await;
        env.expect_access(&a, image, &b, false).await;
    }
    eprintln!(
        "e2e: unlabelled owner {a}: web and db Pending, access gone after {:.1?}",
        started.elapsed()
    );
    env.cleanup().await;
}
