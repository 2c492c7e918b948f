//! The seed scenarios, end to end.

use ims_operator::{
    api::{ImageShare, PrivateImage, ShareAcceptance, ShareState},
    config::Config,
};
use serde_json::json;

use crate::support::{Env, acceptance, env, image, ready_reason, share};

fn state_of(s: &ImageShare, image: &str, recipient: &str) -> Option<ShareState> {
    s.status
        .as_ref()?
        .images
        .iter()
        .find(|i| &*i.name == image)?
        .state_of(recipient)
}

async fn expect_state(env: &Env, owner: &str, share: &str, image: &str, recipient: &str, state: Option<ShareState>) {
    let (img, rcp) = (image.to_string(), recipient.to_string());
    env.wait_for::<ImageShare, _>(
        owner,
        share,
        &format!("{image} → {recipient} is {state:?}"),
        move |s| state_of(s, &img, &rcp) == state,
    )
    .await;
}

#[tokio::test]
async fn recipient_accepts_rejects_removes_and_reaccepts() {
    let Some(mut env) = env("decisions").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;

    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;
    env.wait_for::<ImageShare, _>(&a, "s", "Ready/AllOffered", |s| {
        ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "AllOffered".into()))
    })
    .await;
    expect_state(&env, &a, "s", "web", &b, Some(ShareState::Pending)).await;
    assert!(!env.can_get_image(&a, "web", &b).await, "a pending image is not usable");

    for (decision, state, usable) in [
        ("Accept", ShareState::Accepted, true),
        ("Reject", ShareState::Rejected, false),
        ("Remove", ShareState::Removed, false),
        ("Accept", ShareState::Accepted, true),
    ] {
        env.apply(acceptance(&b, "from-a", &a, &["web"], decision)).await;
        expect_state(&env, &a, "s", "web", &b, Some(state)).await;
        env.wait_for::<ShareAcceptance, _>(&b, "from-a", &format!("web is {state}"), move |acc| {
            acc.status
                .as_ref()
                .is_some_and(|st| st.images.iter().any(|i| &*i.name == "web" && i.state == state))
        })
        .await;
        env.expect_access(&a, "web", &b, usable).await;
    }

    // Deleting the acceptance takes the decision back.
    env.delete::<ShareAcceptance>(&b, "from-a").await;
    expect_state(&env, &a, "s", "web", &b, Some(ShareState::Pending)).await;
    env.expect_access(&a, "web", &b, false).await;
    let (roles, bindings) = env.grants(&a).await;
    assert!(
        roles.is_empty() && bindings.is_empty(),
        "no grant without an accepted pair"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn owner_removes_recipient_cancels_share_and_deletes_image() {
    let Some(mut env) = env("owner").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    let c = env.create_namespace("c", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;

    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b, &c])).await;
    env.apply(acceptance(&b, "all", &a, &[], "Accept")).await;
    env.apply(acceptance(&c, "all", &a, &[], "Accept")).await;
    env.expect_access(&a, "web", &b, true).await;
    env.expect_access(&a, "web", &c, true).await;

    // Remove a recipient: c loses access at once, b keeps it.
    env.apply(share(&a, "s", &["web"], &[&b])).await;
    expect_state(&env, &a, "s", "web", &c, None).await;
    env.expect_access(&a, "web", &c, false).await;
    assert!(env.can_get_image(&a, "web", &b).await);
    env.wait_for::<ShareAcceptance, _>(&c, "all", "NothingOffered", |acc| {
        ready_reason(acc.status.as_ref(), |st| &st.conditions) == Some(("False".into(), "NothingOffered".into()))
    })
    .await;

    // Cancel the share.
    env.delete::<ImageShare>(&a, "s").await;
    env.expect_access(&a, "web", &b, false).await;

    // Share again, then delete the image.
    env.apply(share(&a, "s2", &["web"], &[&b])).await;
    env.expect_access(&a, "web", &b, true).await;
    env.delete::<PrivateImage>(&a, "web").await;
    env.wait_for::<ImageShare, _>(&a, "s2", "ImageNotFound", |s| {
        ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("False".into(), "ImageNotFound".into()))
    })
    .await;
    env.expect_access(&a, "web", &b, false).await;
    env.eventually("the grants of the deleted image are pruned", || async {
        let (roles, bindings) = env.grants(&a).await;
        roles.is_empty() && bindings.is_empty()
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn limits_refuse_new_items_with_a_condition() {
    let Some(mut env) = env("quota").await else { return };
    let annotations = json!({
        "ims.imageshare.io/limit.private-images": "2",
        "ims.imageshare.io/limit.shared-images": "1",
    });
    let a = env.create_namespace("a", json!({}), annotations).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;

    for name in ["one", "two"] {
        env.apply(image(&a, name)).await;
        env.wait_for::<PrivateImage, _>(&a, name, "Available", |i| {
            ready_reason(i.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "Available".into()))
        })
        .await;
    }
    env.apply(image(&a, "three")).await;
    env.wait_for::<PrivateImage, _>(&a, "three", "QuotaExceeded", |i| {
        ready_reason(i.status.as_ref(), |st| &st.conditions) == Some(("False".into(), "QuotaExceeded".into()))
    })
    .await;

    env.apply(share(&a, "first", &["one"], &[&b])).await;
    expect_state(&env, &a, "first", "one", &b, Some(ShareState::Pending)).await;
    env.apply(share(&a, "second", &["two"], &[&b])).await;
    let refused = env
        .wait_for::<ImageShare, _>(&a, "second", "SharedImageLimitExceeded", |s| {
            ready_reason(s.status.as_ref(), |st| &st.conditions)
                == Some(("False".into(), "SharedImageLimitExceeded".into()))
        })
        .await;
    let message = &refused.status.unwrap().conditions[0].message;
    assert!(
        message.contains("two") && message.contains(&b),
        "the message names the pair: {message}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn restart_mid_way_converges_without_stale_or_duplicate_grants() {
    let Some(mut env) = env("restart").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    let c = env.create_namespace("c", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;
    env.apply(acceptance(&b, "from-a", &a, &["web"], "Accept")).await;
    env.expect_access(&a, "web", &b, true).await;

    // While the operator is down: b rejects, and the owner adds c, which accepts.
    env.stop_operator().await;
    env.apply(acceptance(&b, "from-a", &a, &["web"], "Reject")).await;
    env.apply(share(&a, "s", &["web"], &[&b, &c])).await;
    env.apply(acceptance(&c, "from-a", &a, &[], "Accept")).await;
    assert!(
        env.can_get_image(&a, "web", &b).await,
        "nothing changes while the operator is down"
    );

    env.start_operator(Config::default()).await;
    expect_state(&env, &a, "s", "web", &b, Some(ShareState::Rejected)).await;
    expect_state(&env, &a, "s", "web", &c, Some(ShareState::Accepted)).await;
    env.expect_access(&a, "web", &b, false).await;
    env.expect_access(&a, "web", &c, true).await;
    let (roles, bindings) = env.grants(&a).await;
    assert_eq!(roles.keys().collect::<Vec<_>>(), ["ims-image-web"]);
    assert_eq!(bindings.keys().collect::<Vec<_>>(), ["ims-image-web"]);
    let subjects: Vec<String> = bindings["ims-image-web"]
        .subjects
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(subjects, [format!("system:serviceaccounts:{c}")]);
    env.cleanup().await;
}

#[tokio::test]
async fn an_expired_share_revokes_access_on_time_and_says_why() {
    let Some(mut env) = env("expiry").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    let expires = k8s_openapi::jiff::Timestamp::now() + std::time::Duration::from_secs(8);
    let mut s = share(&a, "s", &["web"], &[&b]);
    s["spec"]["expiresAt"] = json!(expires.to_string());
    env.apply(s).await;
    env.apply(acceptance(&b, "from-a", &a, &[], "Accept")).await;
    env.expect_access(&a, "web", &b, true).await;

    // Nothing changes at expiry except the clock: the operator must have scheduled itself.
    env.wait_for::<ImageShare, _>(&a, "s", "Ready=False/Expired", |s| {
        ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("False".into(), "Expired".into()))
    })
    .await;
    env.expect_access(&a, "web", &b, false).await;
    env.eventually("an AccessRevoked event on the recipient's ShareAcceptance", || async {
        env.events(&b).await.iter().any(|e| {
            e.reason.as_deref() == Some("AccessRevoked")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("from-a")
                && e.note.as_deref().is_some_and(|n| n.contains("expired"))
        })
    })
    .await;
    env.cleanup().await;
}
