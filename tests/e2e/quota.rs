//! The ImageQuota end to end: the operator keeps one (named `ims`) in every namespace that
//! holds a PrivateImage or ImageShare or carries a limit annotation, with the limits in force
//! and their usage; tenants read it, nobody but the operator writes it; and a namespace that
//! holds one (and a published PrivateImage) still finishes deleting.

use std::time::Instant;

use ims_operator::{
    api::{IMAGE_QUOTA_NAME, ImageQuota, ImageQuotaStatus, ImageShare, PrivateImage, QuotaHard, QuotaUsed},
    config::Config,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    support::{Env, TIMEOUT, api, env, forbidden_message, image, is_not_found, operator_user, sample, scrape, share},
    trust::{forbidden_writes, grant_user, namespaces_get_deleted, poll_until, skip_without_aggregation},
};

const TENANT: &str = "alice";
const LIMIT_PRIVATE: &str = "ims.imageshare.io/limit.private-images";
const LIMIT_SHARED: &str = "ims.imageshare.io/limit.shared-images";

/// The hard limits of a namespace without annotations: the operator's defaults.
fn default_hard() -> QuotaHard {
    let limits = Config::default().limits;
    QuotaHard {
        private_images: limits.private_images_per_tenant,
        shared_images: limits.shared_images_per_tenant,
        recipients_per_image: limits.recipients_per_image,
    }
}

/// Waits until the namespace's ImageQuota has a status for which `check` holds.
async fn wait_quota<F>(env: &Env, ns: &str, what: &str, check: F) -> ImageQuotaStatus
where
    F: Fn(&ImageQuotaStatus) -> bool + Send + 'static,
{
    env.wait_for::<ImageQuota, _>(ns, IMAGE_QUOTA_NAME, what, move |q| {
        q.status.as_ref().is_some_and(&check)
    })
    .await
    .status
    .expect("a status")
}

/// Waits until the namespace holds no ImageQuota; returns how long that took.
async fn wait_no_quota(env: &Env, ns: &str, what: &str) -> std::time::Duration {
    let started = Instant::now();
    let quotas: Api<ImageQuota> = api(env, ns);
    poll_until(what, TIMEOUT, || async {
        quotas
            .get_opt(IMAGE_QUOTA_NAME)
            .await
            .ok()
            .and_then(|q| q.is_none().then_some(()))
    })
    .await;
    started.elapsed()
}

async fn annotate(env: &Env, ns: &str, key: &str, value: Option<&str>) {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .expect("annotate the namespace");
}

#[tokio::test]
async fn a_every_tenant_has_an_image_quota_of_its_limits_and_usage() {
    let Some(mut env) = env("quota").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    // A namespace holding nothing, with only a limit annotation.
    let c = env.create_namespace("c", json!({}), json!({LIMIT_SHARED: "3"})).await;
    env.start_operator(Config::default()).await;
    let started = Instant::now();
    env.apply(image(&a, "web")).await;
    env.apply(image(&a, "db")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;

    let hard = default_hard();
    let used = QuotaUsed {
        private_images: 2,
        shared_images: 1,
    };
    let status = wait_quota(&env, &a, "2 private images and 1 shared", move |s| s.used == used).await;
    eprintln!(
        "e2e: ImageQuota of the owner: {status:?} after {:.1?}",
        started.elapsed()
    );
    assert_eq!(status.hard, hard, "the limits are the operator's defaults");
    assert_eq!(
        (
            status.summary.private_images.as_str(),
            status.summary.shared_images.as_str()
        ),
        (
            format!("2/{}", hard.private_images).as_str(),
            format!("1/{}", hard.shared_images).as_str()
        )
    );
    let rows = env.table("imagequotas", &a).await;
    eprintln!("e2e: kubectl get imagequotas -n {a}: {rows:?}");
    assert_eq!(rows.len(), 1, "one ImageQuota per namespace: {rows:?}");
    assert_eq!(rows[0]["Name"], json!(IMAGE_QUOTA_NAME));
    assert_eq!(rows[0]["Private"], json!(status.summary.private_images));
    assert_eq!(rows[0]["Shared"], json!(status.summary.shared_images));

    let annotated = wait_quota(&env, &c, "the annotated namespace's ImageQuota", |s| {
        s.hard.shared_images == 3
    })
    .await;
    assert_eq!(
        annotated.hard,
        QuotaHard {
            shared_images: 3,
            ..hard
        },
        "the annotation replaces one default"
    );
    assert_eq!(annotated.used, QuotaUsed::default());
    assert_eq!(
        (
            annotated.summary.private_images.as_str(),
            annotated.summary.shared_images.as_str()
        ),
        (format!("0/{}", hard.private_images).as_str(), "0/3")
    );
    assert!(
        api::<ImageQuota>(&env, &b)
            .get_opt(IMAGE_QUOTA_NAME)
            .await
            .unwrap()
            .is_none(),
        "a recipient holding no image, share or annotation has no ImageQuota"
    );

    // A limit annotation on the owner: the quota follows.
    let changed = Instant::now();
    annotate(&env, &a, LIMIT_PRIVATE, Some("5")).await;
    let status = wait_quota(&env, &a, "hard.privateImages 5 from the annotation", |s| {
        s.hard.private_images == 5
    })
    .await;
    eprintln!(
        "e2e: annotation limit.private-images=5 in the ImageQuota after {:.1?}",
        changed.elapsed()
    );
    assert_eq!(status.used, used);
    assert_eq!(status.summary.private_images, "2/5");
    annotate(&env, &a, LIMIT_PRIVATE, None).await;
    wait_quota(&env, &a, "the default limit again without the annotation", move |s| {
        s.hard == hard
    })
    .await;

    // Nothing left to count and no annotation: no ImageQuota.
    env.delete::<ImageShare>(&a, "s").await;
    env.delete::<PrivateImage>(&a, "web").await;
    env.delete::<PrivateImage>(&a, "db").await;
    let took = wait_no_quota(&env, &a, "the emptied namespace's ImageQuota is deleted").await;
    eprintln!("e2e: the emptied namespace's ImageQuota deleted after {took:.1?}");
    annotate(&env, &c, LIMIT_SHARED, None).await;
    let took = wait_no_quota(
        &env,
        &c,
        "the ImageQuota of the namespace without its annotation is deleted",
    )
    .await;
    eprintln!("e2e: the ImageQuota of the namespace without its annotation deleted after {took:.1?}");
    env.cleanup().await;
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn b_tenants_read_their_image_quota_but_only_the_operator_writes_it() {
    let Some(env) = env("quotapolicy").await else { return };
    let Some(mut env) = skip_without_aggregation(env, "quota policy").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    env.bind_cluster_role(&a, "edit", TENANT).await;
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    let before = wait_quota(&env, &a, "1 private image", |s| s.used.private_images == 1).await;

    let quotas: Api<ImageQuota> = Api::namespaced(env.user_client(TENANT), &a);
    let read = quotas.get(IMAGE_QUOTA_NAME).await.expect("edit reads the ImageQuota");
    assert_eq!(read.status.as_ref(), Some(&before));
    let listed = quotas.list(&Default::default()).await.expect("edit lists ImageQuotas");
    assert_eq!(listed.items.len(), 1);

    // What a tenant would forge: more room.
    let forged_status = Patch::Merge(json!({"status": {"hard": {"privateImages": 1000}}}));
    let forged_labels = Patch::Merge(json!({"metadata": {"labels": {"forged": "true"}}}));
    let other: ImageQuota = serde_json::from_value(json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageQuota",
        "metadata": {"name": "other", "namespace": a}, "spec": {},
    }))
    .unwrap();
    let pp = PostParams::default();
    let dp = DeleteParams::default();
    let rbac = [
        (
            "patch",
            "imagequotas",
            forbidden_message(
                quotas
                    .patch(IMAGE_QUOTA_NAME, &PatchParams::default(), &forged_labels)
                    .await,
                "edit patches the ImageQuota",
            ),
        ),
        (
            "patch",
            "imagequotas/status",
            forbidden_message(
                quotas
                    .patch_status(IMAGE_QUOTA_NAME, &PatchParams::default(), &forged_status)
                    .await,
                "edit patches the ImageQuota's status",
            ),
        ),
        (
            "delete",
            "imagequotas",
            forbidden_message(
                quotas.delete(IMAGE_QUOTA_NAME, &dp).await,
                "edit deletes the ImageQuota",
            ),
        ),
        (
            "create",
            "imagequotas",
            forbidden_message(quotas.create(&pp, &other).await, "edit creates an ImageQuota"),
        ),
    ];
    for (verb, resource, message) in &rbac {
        assert!(
            message.contains(&format!("cannot {verb} resource \"{resource}\"")),
            "RBAC refuses: {message}"
        );
    }
    eprintln!("e2e: RBAC denied: {}", rbac[0].2);

    // Even a tenant whom RBAC allows writes (an admin's mistake) is stopped by the policy.
    grant_user(
        &env,
        &a,
        "quota-writer",
        TENANT,
        json!([{"apiGroups": ["ims.imageshare.io"], "resources": ["imagequotas", "imagequotas/status"],
                "verbs": ["create", "update", "patch", "delete"]}]),
    )
    .await;
    let by_policy = |r: &Result<ImageQuota, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("written only by the ims-operator"));
    env.eventually("RBAC allows the tenant and the policy denies its dry run", || async {
        by_policy(&quotas.patch(IMAGE_QUOTA_NAME, &dry_patch(), &forged_labels).await)
    })
    .await;
    let (user, operator) = (TENANT.to_string(), operator_user());
    let policy = [
        (
            "update",
            IMAGE_QUOTA_NAME,
            forbidden_message(
                quotas
                    .patch(IMAGE_QUOTA_NAME, &PatchParams::default(), &forged_labels)
                    .await,
                "a tenant allowed writes by RBAC patches the ImageQuota",
            ),
        ),
        (
            "update",
            IMAGE_QUOTA_NAME,
            forbidden_message(
                quotas
                    .patch_status(IMAGE_QUOTA_NAME, &PatchParams::default(), &forged_status)
                    .await,
                "a tenant allowed writes by RBAC patches the ImageQuota's status",
            ),
        ),
        (
            "delete",
            IMAGE_QUOTA_NAME,
            forbidden_message(
                quotas.delete(IMAGE_QUOTA_NAME, &dp).await,
                "a tenant allowed writes by RBAC deletes the ImageQuota",
            ),
        ),
        (
            "create",
            "other",
            forbidden_message(
                quotas.create(&pp, &other).await,
                "a tenant allowed writes by RBAC creates an ImageQuota",
            ),
        ),
    ];
    for (verb, name, message) in &policy {
        assert!(
            message.contains(&format!("user {user} may not {verb} ImageQuota {a}/{name}"))
                && message.contains(&operator),
            "the policy's message names the user, the operation and the operator: {message}"
        );
    }
    eprintln!("e2e: policy denied: {}", policy[0].2);

    // Not even the cluster admin (system:masters) writes it: admission policies bind everyone.
    let admin: Api<ImageQuota> = api(&env, &a);
    let message = forbidden_message(
        admin
            .delete(
                IMAGE_QUOTA_NAME,
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await,
        "the cluster admin deletes the ImageQuota",
    );
    assert!(message.contains("written only by the ims-operator"), "{message}");

    // Nothing changed, and the operator still writes it.
    let after = admin.get(IMAGE_QUOTA_NAME).await.expect("the ImageQuota");
    assert_eq!(after.status.as_ref(), Some(&before), "the status is the operator's");
    assert!(
        !after.labels().contains_key("forged"),
        "no forged label: {:?}",
        after.metadata.labels
    );
    assert!(admin.get_opt("other").await.unwrap().is_none(), "no second ImageQuota");
    env.apply(image(&a, "db")).await;
    wait_quota(&env, &a, "the operator counts a second image", |s| {
        s.used.private_images == 2
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn c_a_namespace_with_a_published_image_and_its_quota_finishes_deleting() {
    let Some(mut env) = env("quotadelete").await else {
        return;
    };
    if !namespaces_get_deleted(&mut env).await {
        eprintln!("skipping e2e test quota delete: namespaces do not finish deleting (no namespace controller)");
        env.cleanup().await;
        return;
    }
    let a = env.create_namespace("a", json!({}), json!({})).await;
    env.start_operator(Config::default()).await;
    let addr = env.metrics_addr.expect("metrics address");
    let mut published = image(&a, "gold");
    published["spec"]["published"] = json!(true);
    env.apply(published).await;
    env.apply(image(&a, "draft")).await;
    wait_quota(&env, &a, "2 private images", |s| s.used.private_images == 2).await;

    // Outside a namespace deletion both stay: the published image and the operator's quota.
    let images: Api<PrivateImage> = api(&env, &a);
    let message = forbidden_message(
        images.delete("gold", &DeleteParams::default()).await,
        "the admin deletes a published PrivateImage",
    );
    assert!(message.contains("is published to the marketplace"), "{message}");
    let message = forbidden_message(
        api::<ImageQuota>(&env, &a)
            .delete(IMAGE_QUOTA_NAME, &DeleteParams::default())
            .await,
        "the admin deletes the ImageQuota",
    );
    assert!(message.contains("written only by the ims-operator"), "{message}");

    // The namespace controller (whatever user it runs as) deletes them with the namespace.
    let before = scrape(addr, std::time::Duration::from_secs(5)).await.expect("metrics");
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let started = Instant::now();
    namespaces
        .delete(&a, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match namespaces.get_opt(&a).await {
            Ok(None) => break,
            Err(e) if is_not_found(&e) => break,
            Ok(Some(ns)) if tokio::time::Instant::now() >= deadline => {
                let conditions = ns.status.and_then(|s| s.conditions).unwrap_or_default();
                let failing: Vec<String> = conditions
                    .iter()
                    .filter(|c| c.status == "True")
                    .map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default()))
                    .collect();
                panic!("namespace {a} still Terminating after {TIMEOUT:?}: {failing:#?}");
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
    let took = started.elapsed();
    let after = scrape(addr, std::time::Duration::from_secs(5)).await.expect("metrics");
    let errors = sample(&after, "ims_write_errors_total") - sample(&before, "ims_write_errors_total");
    let forbidden = forbidden_writes(&after) - forbidden_writes(&before);
    eprintln!(
        "e2e: a namespace with a published PrivateImage and its ImageQuota deleted in {took:.1?} \
         ({errors} write errors of the operator during it, {forbidden} Forbidden)"
    );
    assert_eq!(
        forbidden, 0.0,
        "the operator wrote into the leaving namespace: {after:?}"
    );
    assert_eq!(errors, 0.0, "no write of the operator failed: {after:?}");
    env.cleanup().await;
}
