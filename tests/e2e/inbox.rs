//! The ImageOffer (a recipient's inbox) end to end: the operator keeps one per owner that
//! offers the namespace at least one image, named after the owner, listing every offered image
//! with its state (and, while Accepted, how to use it); a ShareAcceptance's status lists only
//! the images it covers; the ImageOffer goes when the owner offers nothing. Tenants read it,
//! nobody but the operator writes it.

use std::time::Instant;

use ims_operator::{
    api::{
        AcceptedFile, AcceptedSource, DecisionReason, FileFormat, ImageOffer, ImageOfferStatus, ImageShare,
        OWNER_LABEL, ReceivedImage, ShareAcceptance, ShareState,
    },
    config::Config,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    support::{Env, TIMEOUT, acceptance, api, env, forbidden_message, image, operator_user, share},
    trust::{grant_user, poll_until, skip_without_aggregation},
};

/// A tenant holding the stock `edit` role in the recipient's namespace.
const TENANT: &str = "alice";
/// A tenant holding the stock `view` role in the recipient's namespace.
const VIEWER: &str = "bob";
/// The field manager of the operator's ImageOffer writes.
const OFFER_MANAGER: &str = "ims-operator-offers";

/// Waits until the ImageOffer of `owner` in `recipient` has a status for which `check` holds.
async fn wait_offer<F>(env: &Env, recipient: &str, owner: &str, what: &str, check: F) -> ImageOffer
where
    F: Fn(&ImageOfferStatus) -> bool + Send + 'static,
{
    env.wait_for::<ImageOffer, _>(recipient, owner, what, move |o| o.status.as_ref().is_some_and(&check))
        .await
}

/// The state of one image in an ImageOffer's status.
fn offered_state(s: &ImageOfferStatus, image: &str) -> Option<ShareState> {
    s.images.iter().find(|i| &*i.name == image).map(|i| i.state)
}

/// Waits until the recipient holds no ImageOffer of `owner`; returns how long that took.
async fn wait_no_offer(env: &Env, recipient: &str, owner: &str, what: &str) -> std::time::Duration {
    let started = Instant::now();
    let offers: Api<ImageOffer> = api(env, recipient);
    poll_until(what, TIMEOUT, || async {
        offers.get_opt(owner).await.ok().and_then(|o| o.is_none().then_some(()))
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_the_recipient_sees_what_an_owner_offers_in_its_image_offer() {
    let Some(mut env) = env("inbox").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;
    let started = Instant::now();
    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;

    // The offer appears in the recipient's namespace, named after the owner, the image Pending.
    let offer = wait_offer(&env, &b, &a, "web Pending", |s| {
        offered_state(s, "web") == Some(ShareState::Pending)
    })
    .await;
    eprintln!(
        "e2e: ImageOffer {b}/{a} with web Pending after {:.1?}",
        started.elapsed()
    );
    assert_eq!(offer.spec.owner, a);
    assert_eq!(offer.labels().get(OWNER_LABEL), Some(&a), "the owner label");
    let status = offer.status.as_ref().unwrap();
    assert_eq!(
        (status.pending, status.accepted, status.rejected, status.removed),
        (1, 0, 0, 0),
        "{status:?}"
    );
    assert_eq!(status.images.len(), 1, "{status:?}");
    let web = &status.images[0];
    assert_eq!(web.display_name.as_deref(), Some("web"), "the description: {web:?}");
    assert_eq!(web.disk_size_gib, 40, "{web:?}");
    assert_eq!(web.decided_by, None, "nobody decided yet: {web:?}");
    assert_eq!(web.source, None, "no source while Pending: {web:?}");
    let managers: Vec<&str> = offer
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(managers, [OFFER_MANAGER], "only the operator wrote it");

    let rows = env.table("imageoffers", &b).await;
    eprintln!("e2e: kubectl get imageoffers -n {b}: {rows:?}");
    assert_eq!(rows.len(), 1, "one ImageOffer per owner: {rows:?}");
    assert_eq!(rows[0]["Name"], json!(a));
    assert_eq!(rows[0]["Owner"], json!(a));
    assert_eq!((&rows[0]["Pending"], &rows[0]["Accepted"]), (&json!(1), &json!(0)));
    assert!(rows[0].contains_key("Age"), "an Age column: {rows:?}");

    // A second image offered; the recipient accepts only web.
    env.apply(image(&a, "db")).await;
    env.apply(share(&a, "s", &["web", "db"], &[&b])).await;
    wait_offer(&env, &b, &a, "web and db Pending", |s| {
        s.pending == 2 && offered_state(s, "db") == Some(ShareState::Pending)
    })
    .await;
    env.apply(acceptance(&b, "from-a", &a, &["web"], "Accept")).await;
    let offer = wait_offer(&env, &b, &a, "web Accepted, db Pending", |s| {
        offered_state(s, "web") == Some(ShareState::Accepted) && offered_state(s, "db") == Some(ShareState::Pending)
    })
    .await;
    let status = offer.status.unwrap();
    assert_eq!((status.pending, status.accepted), (1, 1), "{status:?}");
    let web = status.images.iter().find(|i| &*i.name == "web").unwrap();
    assert_eq!(web.decided_by.as_deref(), Some("from-a"), "{web:?}");
    assert_eq!(
        web.source,
        Some(std::sync::Arc::new(AcceptedSource {
            namespace: a.clone(),
            file: Some(AcceptedFile {
                url: "s3://images/web.qcow2".into(),
                format: FileFormat::Qcow2,
            }),
            persistent_volume_claim: None,
            virtual_machine: None,
            claims: Vec::new(),
        })),
        "how to use the accepted image: {web:?}"
    );
    let db = status.images.iter().find(|i| &*i.name == "db").unwrap();
    assert_eq!((db.decided_by.as_deref(), db.source.as_ref()), (None, None), "{db:?}");
    let rows = env.table("imageoffers", &b).await;
    assert_eq!(
        (&rows[0]["Pending"], &rows[0]["Accepted"]),
        (&json!(1), &json!(1)),
        "{rows:?}"
    );

    // The ShareAcceptance lists only the image it covers, with no description or source.
    let expected = vec![ReceivedImage {
        name: "web".into(),
        owner: None,
        state: ShareState::Accepted,
        reason: DecisionReason::ThisAcceptance,
        decided_by: None,
    }];
    let want = expected.clone();
    let acc = env
        .wait_for::<ShareAcceptance, _>(&b, "from-a", "only web, Accepted", move |acc| {
            acc.status.as_ref().is_some_and(|st| st.images == want)
        })
        .await;
    assert_eq!(acc.status.unwrap().images, expected);
    let raw = api::<ShareAcceptance>(&env, &b)
        .get("from-a")
        .await
        .expect("the ShareAcceptance");
    let raw = serde_json::to_value(&raw).unwrap();
    let entry = raw["status"]["images"][0].as_object().unwrap();
    assert!(
        !entry.contains_key("source") && !entry.contains_key("displayName"),
        "no description or source in the ShareAcceptance: {entry:?}"
    );

    // The owner offers nothing any more: the ImageOffer goes.
    env.delete::<ImageShare>(&a, "s").await;
    let took = wait_no_offer(&env, &b, &a, "the ImageOffer of an owner offering nothing is deleted").await;
    eprintln!("e2e: ImageOffer {b}/{a} deleted {took:.1?} after its ImageShare");
    env.cleanup().await;
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..Default::default()
    }
}

fn dry_delete() -> DeleteParams {
    DeleteParams {
        dry_run: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn b_tenants_read_their_image_offers_but_only_the_operator_writes_them() {
    let Some(env) = env("inboxpolicy").await else { return };
    let Some(mut env) = skip_without_aggregation(env, "inbox policy").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.bind_cluster_role(&b, "edit", TENANT).await;
    env.bind_cluster_role(&b, "view", VIEWER).await;
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;
    let before = wait_offer(&env, &b, &a, "web Pending", |s| {
        offered_state(s, "web") == Some(ShareState::Pending)
    })
    .await;

    // Both stock roles read the inbox (the view role is aggregated into edit as well).
    for user in [TENANT, VIEWER] {
        let offers: Api<ImageOffer> = Api::namespaced(env.user_client(user), &b);
        env.eventually(&format!("{user} gets and lists ImageOffers in {b}"), || async {
            let got = offers.get(&a).await;
            let listed = offers.list(&Default::default()).await;
            matches!((got, listed), (Ok(o), Ok(l)) if o.status == before.status && l.items.len() == 1)
        })
        .await;
    }

    // What a tenant would forge: an accepted image.
    let offers: Api<ImageOffer> = Api::namespaced(env.user_client(TENANT), &b);
    let forged_status = Patch::Merge(json!({"status": {"accepted": 1, "pending": 0}}));
    let forged: ImageOffer = serde_json::from_value(json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageOffer",
        "metadata": {"name": "forged", "namespace": b},
        "spec": {"owner": "forged"},
    }))
    .unwrap();
    let rbac = [
        (
            "create",
            forbidden_message(offers.create(&dry_post(), &forged).await, "edit creates an ImageOffer"),
        ),
        (
            "patch",
            forbidden_message(
                offers.patch(&a, &dry_patch(), &forged_status).await,
                "edit patches the ImageOffer",
            ),
        ),
        (
            "delete",
            forbidden_message(offers.delete(&a, &dry_delete()).await, "edit deletes the ImageOffer"),
        ),
    ];
    for (verb, message) in &rbac {
        assert!(
            message.contains(&format!("cannot {verb} resource \"imageoffers\"")),
            "RBAC refuses: {message}"
        );
    }
    eprintln!("e2e: RBAC denied: {}", rbac[0].1);

    // Even a tenant whom RBAC allows writes (an admin's mistake) is stopped by the policy.
    grant_user(
        &env,
        &b,
        "offer-writer",
        TENANT,
        json!([{"apiGroups": ["ims.imageshare.io"], "resources": ["imageoffers"],
                "verbs": ["create", "update", "patch", "delete"]}]),
    )
    .await;
    let by_policy = |r: &Result<ImageOffer, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("written only by the ims-operator"));
    env.eventually("RBAC allows the tenant and the policy denies its dry run", || async {
        by_policy(&offers.patch(&a, &dry_patch(), &forged_status).await)
    })
    .await;
    let (user, operator) = (TENANT.to_string(), operator_user());
    let policy = [
        (
            "create",
            "forged".to_string(),
            forbidden_message(
                offers.create(&dry_post(), &forged).await,
                "a tenant allowed writes by RBAC creates an ImageOffer",
            ),
        ),
        (
            "update",
            a.clone(),
            forbidden_message(
                offers.patch(&a, &dry_patch(), &forged_status).await,
                "a tenant allowed writes by RBAC patches the ImageOffer",
            ),
        ),
        (
            "delete",
            a.clone(),
            forbidden_message(
                offers.delete(&a, &dry_delete()).await,
                "a tenant allowed writes by RBAC deletes the ImageOffer",
            ),
        ),
    ];
    for (verb, name, message) in &policy {
        assert!(
            message.contains(&format!("user {user} may not {verb} ImageOffer {b}/{name}"))
                && message.contains(&operator),
            "the policy's message names the user, the operation and the operator: {message}"
        );
    }
    eprintln!("e2e: policy denied: {}", policy[0].2);

    // Not even the cluster admin writes it.
    let admin: Api<ImageOffer> = api(&env, &b);
    let message = forbidden_message(
        admin.delete(&a, &dry_delete()).await,
        "the cluster admin deletes the ImageOffer",
    );
    assert!(message.contains("written only by the ims-operator"), "{message}");

    // Nothing changed, and the operator still writes it.
    let after = admin.get(&a).await.expect("the ImageOffer");
    assert_eq!(after.status, before.status, "the status is the operator's");
    assert!(admin.get_opt("forged").await.unwrap().is_none(), "no forged ImageOffer");
    env.apply(acceptance(&b, "from-a", &a, &[], "Accept")).await;
    wait_offer(&env, &b, &a, "the operator records the acceptance", |s| {
        offered_state(s, "web") == Some(ShareState::Accepted) && s.accepted == 1
    })
    .await;
    env.cleanup().await;
}
