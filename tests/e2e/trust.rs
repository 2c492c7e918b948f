//! Trust boundaries, end to end: the operator runs under the chart's ServiceAccount with the
//! chart's ClusterRole and admission policies; tenants are users holding only the stock roles
//! (into which the chart aggregates its tenant roles) in their namespaces.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ims_operator::{
    api::{Condition, ImageShare, PrivateImage, ShareAcceptance, ShareState},
    config::Config,
};
use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    coordination::v1::Lease,
    core::v1::Namespace,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{
    Env, OPERATOR_NAME, RESTART_ENV, SYSTEM_NAMESPACE, TENANTS_ENV, TempDir, acceptance, env, forbidden_message,
    free_port, http_get, image, is_not_found, operator_user, ready_reason, sample, scrape, share,
    write_operator_kubeconfig,
};

const TENANT: &str = "alice";

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<(&'a str, &'a str)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (&*c.status, &*c.reason))
}

fn image_condition(i: &PrivateImage, type_: &str) -> Option<(String, String)> {
    let (s, r) = condition(&i.status.as_ref()?.conditions, type_)?;
    Some((s.to_string(), r.to_string()))
}

/// `kubectl auth can-i VERB GROUP/RESOURCE[/SUB] NAME -n NS --as USER`
async fn can(
    env: &Env,
    user: &str,
    ns: &str,
    (group, resource, sub): (&str, &str, &str),
    name: &str,
    verb: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec!["system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: (!sub.is_empty()).then(|| sub.into()),
                namespace: Some(ns.into()),
                name: Some(name.into()),
                verb: Some(verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(env.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// A Role with `rules` and its RoleBinding to a user, made by the admin.
pub(crate) async fn grant_user(env: &Env, ns: &str, name: &str, user: &str, rules: Value) {
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "rules": rules})).unwrap();
    Api::<Role>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create rolebinding");
}

pub(crate) async fn skip_without_aggregation(env: Env, test: &str) -> Option<Env> {
    if env.tenant_roles_aggregated().await {
        return Some(env);
    }
    eprintln!(
        "skipping e2e test {test}: the stock edit ClusterRole does not aggregate the chart's tenant roles \
         (kube-controller-manager's clusterrole-aggregation controller does not run)"
    );
    env.cleanup().await;
    None
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_volume_source_needs_the_clone_permission_of_its_creator() {
    let Some(env) = env("confused").await else { return };
    let Some(mut env) = skip_without_aggregation(env, "confused deputy").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    env.bind_cluster_role(&a, "edit", TENANT).await;
    assert!(
        can(&env, TENANT, &a, ("", "persistentvolumeclaims", ""), "disk", "get").await,
        "the stock edit role lets the tenant read PVCs"
    );
    assert!(
        !can(
            &env,
            TENANT,
            &a,
            ("cdi.kubevirt.io", "datavolumes", "source"),
            "disk",
            "create"
        )
        .await,
        "but not clone them"
    );

    let images: Api<PrivateImage> = Api::namespaced(env.user_client(TENANT), &a);
    let mut manifest = image(&a, "from-disk");
    manifest["spec"]["source"] = json!({"volume": {"persistentVolumeClaim": "disk"}});
    let from_disk: PrivateImage = serde_json::from_value(manifest).unwrap();
    let denied_by_policy = |r: &Result<PrivateImage, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("datavolumes/source"));
    // A policy takes effect shortly after it is installed; dry runs pass admission and store nothing.
    env.eventually("the source-access policy denies the tenant's dry run", || async {
        denied_by_policy(&images.create(&dry_run(), &from_disk).await)
    })
    .await;
    let message = forbidden_message(
        images.create(&PostParams::default(), &from_disk).await,
        "a tenant without the clone permission creates a PrivateImage from a PVC",
    );
    eprintln!("e2e: denied: {message}");
    assert!(
        message.contains(&format!(
            "user {TENANT} may not create cdi.kubevirt.io datavolumes/source {a}/disk"
        )),
        "the message names the user, the missing permission and the PVC: {message}"
    );
    assert!(
        !message.contains("may not get persistentvolumeclaims"),
        "get on the PVC is held (edit), so it is not reported missing: {message}"
    );
    assert!(
        Api::<PrivateImage>::namespaced(env.client.clone(), &a)
            .get_opt("from-disk")
            .await
            .unwrap()
            .is_none(),
        "nothing was stored"
    );

    // The admin lets the tenant clone the disk: now the tenant may share it.
    grant_user(
        &env,
        &a,
        "clone-disk",
        TENANT,
        json!([{"apiGroups": ["cdi.kubevirt.io"], "resources": ["datavolumes/source"], "verbs": ["create"]}]),
    )
    .await;
    env.eventually("the tenant's dry run is allowed once it may clone", || async {
        images.create(&dry_run(), &from_disk).await.is_ok()
    })
    .await;
    images
        .create(&PostParams::default(), &from_disk)
        .await
        .expect("a tenant that may clone the PVC may create the image (the PVC need not exist)");
    env.cleanup().await;
}

#[tokio::test]
async fn b_tenants_write_specs_but_only_the_operator_writes_status() {
    let Some(env) = env("statuspolicy").await else { return };
    let Some(mut env) = skip_without_aggregation(env, "status policy").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    let c = env.create_namespace("c", json!({}), json!({})).await;
    env.bind_cluster_role(&a, "edit", TENANT).await;
    env.start_operator(Config::default()).await;

    let tenant = env.user_client(TENANT);
    let images: Api<PrivateImage> = Api::namespaced(tenant.clone(), &a);
    let shares: Api<ImageShare> = Api::namespaced(tenant.clone(), &a);
    let pp = PostParams::default();
    images
        .create(&pp, &serde_json::from_value(image(&a, "web")).unwrap())
        .await
        .expect("edit creates PrivateImages");
    shares
        .create(&pp, &serde_json::from_value(share(&a, "s", &["web"], &[&b])).unwrap())
        .await
        .expect("edit creates ImageShares");
    // An update (PUT) of the spec.
    let mut current = serde_json::to_value(shares.get("s").await.expect("edit reads ImageShares")).unwrap();
    current["spec"]["recipients"] = json!([b, c]);
    current.as_object_mut().unwrap().remove("status");
    shares
        .replace("s", &pp, &serde_json::from_value(current).unwrap())
        .await
        .expect("edit updates ImageShares");
    let (b2, c2) = (b.clone(), c.clone());
    env.wait_for::<ImageShare, _>(&a, "s", "Ready/AllOffered for both recipients", move |s| {
        ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "AllOffered".into()))
            && s.status.as_ref().is_some_and(|st| {
                let web = st.images.iter().find(|i| i.name == "web");
                web.is_some_and(|i| {
                    i.state_of(&b2) == Some(ShareState::Pending) && i.state_of(&c2) == Some(ShareState::Pending)
                })
            })
    })
    .await;

    // A forged status: "everything is accepted".
    let forged = Patch::Merge(json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "Forged", "message": "forged",
        "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}));
    let message = forbidden_message(
        shares.patch_status("s", &PatchParams::default(), &forged).await,
        "a tenant with edit patches the status",
    );
    assert!(
        message.contains("imageshares/status"),
        "RBAC: edit never includes /status: {message}"
    );

    // Even a tenant whom RBAC allows /status (an admin's mistake) is stopped by the policy.
    grant_user(
        &env,
        &a,
        "status-writer",
        TENANT,
        json!([{"apiGroups": ["ims.imageshare.io"], "resources": ["imageshares/status"], "verbs": ["patch", "update"]}]),
    )
    .await;
    let dry = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    env.eventually("the status policy denies the tenant's dry run", || async {
        matches!(shares.patch_status("s", &dry, &forged).await,
                 Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("status is written only by"))
    })
    .await;
    let message = forbidden_message(
        shares.patch_status("s", &PatchParams::default(), &forged).await,
        "a tenant allowed /status by RBAC patches the status",
    );
    eprintln!("e2e: denied: {message}");
    assert!(
        message.contains(&format!("user {TENANT} may not write the status of ImageShare {a}/s"))
            && message.contains(&operator_user()),
        "the policy's message: {message}"
    );

    // The operator's own status writes go through: drop a recipient, the status follows.
    shares
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"recipients": [b]}})),
        )
        .await
        .expect("edit patches ImageShares");
    let c2 = c.clone();
    let s = env
        .wait_for::<ImageShare, _>(&a, "s", "the operator writes the new status", move |s| {
            ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "AllOffered".into()))
                && s.status.as_ref().is_some_and(|st| {
                    st.observed_generation == s.metadata.generation
                        && st.images.iter().all(|i| i.state_of(&c2).is_none())
                })
        })
        .await;
    assert!(
        s.status.unwrap().conditions.iter().all(|c| c.reason != "Forged"),
        "no forged condition"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn c_one_refused_grant_among_several_and_a_foreign_role_left_alone() {
    let Some(mut env) = env("refusedgrant").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;

    // A Role the operator did not make, with the name a grant of image `foreign` would have.
    let roles: Api<Role> = Api::namespaced(env.client.clone(), &a);
    let foreign: Role = serde_json::from_value(json!({
        "metadata": {"name": "ims-image-foreign", "namespace": a},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }))
    .unwrap();
    let foreign_version = roles
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create the foreign role")
        .metadata
        .resource_version;

    // An admission policy that refuses one RoleBinding the operator will want to write.
    let policy = format!("{}-deny-blocked", env.prefix);
    env.install_policy(json!({
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": a}},
                "resourceRules": [{"apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["*"],
                                   "operations": ["CREATE", "UPDATE"], "resources": ["rolebindings"]}],
            },
            "validations": [{"expression": "object.metadata.name != 'ims-image-blocked'",
                             "reason": "Forbidden", "message": "e2e: RoleBinding ims-image-blocked is refused"}],
        },
    }))
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), &a);
    let probe: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ims-image-blocked", "namespace": a},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ims-image-blocked"},
        "subjects": [{"kind": "Group", "name": format!("system:serviceaccounts:{b}"), "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .unwrap();
    env.eventually("the test's policy is in force", || async {
        matches!(bindings.create(&dry_run(), &probe).await, Err(kube::Error::Api(s)) if s.code == 403)
    })
    .await;

    env.start_operator(Config::default()).await;
    for name in ["blocked", "fine", "foreign"] {
        env.apply(image(&a, name)).await;
    }
    env.apply(share(&a, "s", &["blocked", "fine", "foreign"], &[&b])).await;
    env.apply(acceptance(&b, "all", &a, &[], "Accept")).await;

    env.eventually("the RoleBinding of `fine` exists", || async {
        bindings.get_opt("ims-image-fine").await.unwrap().is_some()
    })
    .await;
    let b2 = b.clone();
    env.wait_for::<ImageShare, _>(&a, "s", "Ready/AllOffered, every image Accepted", move |s| {
        ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "AllOffered".into()))
            && s.status.as_ref().is_some_and(|st| {
                st.images.len() == 3 && st.images.iter().all(|i| i.state_of(&b2) == Some(ShareState::Accepted))
            })
    })
    .await;
    env.wait_for::<ShareAcceptance, _>(&b, "all", "Ready/Applied", |acc| {
        ready_reason(acc.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "Applied".into()))
    })
    .await;
    for (name, status, reason) in [
        ("blocked", "False", "GrantWriteFailed"),
        ("foreign", "False", "GrantNameTaken"),
        ("fine", "True", "Granted"),
    ] {
        env.wait_for::<PrivateImage, _>(&a, name, &format!("AccessGranted {status}/{reason}"), move |i| {
            image_condition(i, "AccessGranted") == Some((status.into(), reason.into()))
        })
        .await;
    }
    env.eventually("a Warning WriteFailed event on image `blocked`", || async {
        env.events(&a).await.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("WriteFailed")
                && e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("PrivateImage") && r.name.as_deref() == Some("blocked"))
                && e.note.as_deref().is_some_and(|n| n.contains("ims-image-blocked"))
        })
    })
    .await;
    assert!(env.can_get_image(&a, "fine", &b).await, "`fine` is usable");
    assert!(!env.can_get_image(&a, "blocked", &b).await, "`blocked` is not");
    assert!(!env.can_get_image(&a, "foreign", &b).await, "`foreign` is not");
    let after = roles
        .get("ims-image-foreign")
        .await
        .expect("the foreign role is still there");
    assert_eq!(
        after.metadata.resource_version, foreign_version,
        "the foreign Role was never modified"
    );
    assert!(
        bindings.get_opt("ims-image-foreign").await.unwrap().is_none(),
        "no binding to a Role the operator did not make"
    );
    assert!(bindings.get_opt("ims-image-blocked").await.unwrap().is_none());
    env.cleanup().await;
}

/// Operator replicas running as child processes; stopped and killed on drop (also on panic).
struct Replicas(Vec<Replica>);

struct Replica {
    name: &'static str,
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Replica {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for r in &mut self.0 {
            let _ = Command::new("kill").args(["-CONT", &r.child.id().to_string()]).status();
            let _ = r.child.kill();
            let _ = r.child.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- last lines of {}:", r.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn spawn_replica(name: &'static str, kubeconfig: &std::path::Path, dir: &std::path::Path) -> Replica {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("create log file");
    let child = Command::new(env!("CARGO_BIN_EXE_ims-operator"))
        .args([
            "run",
            "--leader-elect",
            "--lease-namespace",
            SYSTEM_NAMESPACE,
            "--lease-name",
            OPERATOR_NAME,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", name)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start the ims-operator binary");
    Replica {
        name,
        child,
        metrics: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
    }
}

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(OPERATOR_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

pub(crate) async fn poll_until<F, Fut, T>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The write counters of one replica.
fn writes(m: &BTreeMap<String, f64>) -> [f64; 4] {
    [
        sample(m, "ims_status_patches_total"),
        sample(m, "ims_grant_applies_total"),
        sample(m, "ims_grant_deletes_total"),
        sample(m, "ims_events_total"),
    ]
}

#[tokio::test]
async fn d_a_stopped_leader_is_replaced_and_writes_nothing_after_it_resumes() {
    let Some(mut env) = env("leader").await else { return };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    // The chart's leader-election Role allows get/update of its own Lease only (resourceNames),
    // so the replicas use that name; a Lease left by an earlier run is removed first.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), SYSTEM_NAMESPACE);
    match leases.delete(OPERATOR_NAME, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => panic!("deleting the old lease: {e}"),
    }
    let dir = TempDir::new("ims-e2e-leader");
    let kubeconfig = dir.0.join("kubeconfig");
    write_operator_kubeconfig(&kubeconfig);
    let replicas = Replicas(vec![
        spawn_replica("replica-a", &kubeconfig, &dir.0),
        spawn_replica("replica-b", &kubeconfig, &dir.0),
    ]);

    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;
    let holder = poll_until("a replica holds the lease", Duration::from_secs(40), || async {
        lease_holder(&leases).await
    })
    .await;
    env.wait_for::<ImageShare, _>(&a, "s", "Ready/AllOffered", |s| {
        ready_reason(s.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "AllOffered".into()))
    })
    .await;
    let (leader, follower) = match holder.as_str() {
        "replica-a" => (&replicas.0[0], &replicas.0[1]),
        "replica-b" => (&replicas.0[1], &replicas.0[0]),
        other => panic!("unknown lease holder {other}"),
    };
    // The leader's write counters once it is quiet (two equal scrapes in a row).
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    let mut previous = None;
    let before = loop {
        let now = scrape(leader.metrics, Duration::from_secs(2)).await.map(|m| writes(&m));
        if let Some(settled) = now.filter(|n| Some(*n) == previous) {
            break settled;
        }
        assert!(
            Instant::now() < settle_deadline,
            "the leader's write counters never settled"
        );
        previous = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(before[0] > 0.0, "the leader wrote the statuses: {before:?}");
    let follower_before = writes(
        &scrape(follower.metrics, Duration::from_secs(2))
            .await
            .expect("follower metrics"),
    );
    assert_eq!(follower_before, [0.0; 4], "a follower writes nothing");

    leader.signal("-STOP");
    let stopped = Instant::now();
    let follower_name = follower.name.to_string();
    poll_until("the follower takes the lease over", Duration::from_secs(40), || async {
        (lease_holder(&leases).await.as_deref() == Some(follower_name.as_str())).then_some(())
    })
    .await;
    let takeover = stopped.elapsed();

    // A change that needs writes: the recipient accepts.
    env.apply(acceptance(&b, "from-a", &a, &["web"], "Accept")).await;
    env.wait_for::<ShareAcceptance, _>(&b, "from-a", "Ready/Applied", |acc| {
        ready_reason(acc.status.as_ref(), |st| &st.conditions) == Some(("True".into(), "Applied".into()))
    })
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), &a);
    env.eventually("the new leader writes the grant", || async {
        bindings.get_opt("ims-image-web").await.unwrap().is_some()
    })
    .await;
    let written = stopped.elapsed();

    leader.signal("-CONT");
    let resumed = Instant::now();
    // More work while the old leader is back: a second image, shared and accepted.
    env.apply(image(&a, "web2")).await;
    env.apply(share(&a, "s", &["web", "web2"], &[&b])).await;
    env.apply(acceptance(&b, "from-a", &a, &["web", "web2"], "Accept"))
        .await;
    env.eventually("the new leader grants web2", || async {
        bindings.get_opt("ims-image-web2").await.unwrap().is_some()
    })
    .await;
    // Watch the old leader for at least 5 s after it resumed.
    let window_end = (resumed + Duration::from_secs(5)).max(Instant::now() + Duration::from_secs(2));
    let mut answered = 0;
    let mut stepped_down = false;
    while Instant::now() < window_end {
        if let Some(m) = scrape(leader.metrics, Duration::from_secs(2)).await {
            answered += 1;
            assert_eq!(writes(&m), before, "the old leader wrote after it resumed: {m:?}");
            stepped_down |= sample(&m, "ims_leader") == 0.0;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answered > 0, "the old leader answered /metrics after it resumed");
    assert!(stepped_down, "the old leader reports ims_leader 0");
    assert_eq!(
        lease_holder(&leases).await.as_deref(),
        Some(follower.name),
        "the lease stays with the new leader"
    );
    let new_leader = writes(
        &scrape(follower.metrics, Duration::from_secs(2))
            .await
            .expect("new leader metrics"),
    );
    assert!(
        new_leader[0] > 0.0 && new_leader[1] > 0.0,
        "the new leader wrote: {new_leader:?}"
    );
    eprintln!(
        "e2e: leader {} stopped; {} held the lease after {:.1?}, the accepted image was granted {:.1?} after the stop; \
         old leader watched {:.1?} after resuming ({answered} scrapes): writes {before:?} unchanged; new leader writes {new_leader:?}",
        leader.name,
        follower.name,
        takeover,
        written,
        resumed.elapsed()
    );
    drop(replicas);
    env.cleanup().await;
}

/// Whether namespaces finish deleting (kube-controller-manager's namespace controller runs).
pub(crate) async fn namespaces_get_deleted(env: &mut Env) -> bool {
    let probe = env.create_namespace("probe", json!({}), json!({})).await;
    let api: Api<Namespace> = Api::all(env.client.clone());
    api.delete(&probe, &DeleteParams::default())
        .await
        .expect("delete probe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if api.get_opt(&probe).await.expect("get namespace").is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// `n` tenants, each sharing an image with the next (a ring), every offer accepted; waits
/// until every grant is in place.
async fn ring(env: &mut Env, tag: &str, n: usize) -> Vec<String> {
    let started = Instant::now();
    let mut namespaces = Vec::new();
    for i in 0..n {
        namespaces.push(env.create_namespace(&format!("{tag}{i}"), json!({}), json!({})).await);
    }
    for i in 0..n {
        let (owner, next) = (&namespaces[i], &namespaces[(i + 1) % n]);
        env.apply(image(owner, "img")).await;
        env.apply(share(owner, "s", &["img"], &[next])).await;
        env.apply(acceptance(next, "from-prev", owner, &[], "Accept")).await;
    }
    let bindings: Api<RoleBinding> = Api::all(env.client.clone());
    let lp = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=ims-operator");
    poll_until(
        &format!("all {n} grants of ring {tag}"),
        scaled(TIMEOUT_PER_20, n),
        || async {
            let list = bindings.list(&lp).await.ok()?;
            let granted: std::collections::BTreeSet<&str> = list
                .items
                .iter()
                .filter(|b| b.metadata.name.as_deref() == Some("ims-image-img"))
                .filter_map(|b| b.metadata.namespace.as_deref())
                .collect();
            namespaces.iter().all(|ns| granted.contains(ns.as_str())).then_some(())
        },
    )
    .await;
    eprintln!("e2e: ring {tag} of {n} tenants granted in {:.1?}", started.elapsed());
    namespaces
}

/// A timeout for 20 tenants, grown in proportion for more.
const TIMEOUT_PER_20: Duration = Duration::from_secs(60);

fn scaled(per_20: Duration, n: usize) -> Duration {
    per_20 * (n.div_ceil(20).max(1) as u32)
}

/// Deletes the namespaces and measures until the last one is gone.
async fn delete_and_time(env: &Env, namespaces: &[String]) -> Duration {
    let api: Api<Namespace> = Api::all(env.client.clone());
    let started = Instant::now();
    for ns in namespaces {
        api.delete(ns, &DeleteParams::default())
            .await
            .expect("delete namespace");
    }
    poll_until(
        "the namespaces are gone",
        scaled(Duration::from_secs(120), namespaces.len()),
        || async {
            let names: std::collections::BTreeSet<String> = api
                .list_metadata(&kube::api::ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect();
            namespaces.iter().all(|ns| !names.contains(ns)).then_some(())
        },
    )
    .await;
    started.elapsed()
}

pub(crate) fn forbidden_writes(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("ims_write_errors_total") && k.contains("reason=\"Forbidden\""))
        .map(|(_, v)| v)
        .sum()
}

/// The number of tenants of the deletion test: `IMS_E2E_TENANTS`, default 20.
fn tenants() -> usize {
    match std::env::var(TENANTS_ENV) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 2)
            .unwrap_or_else(|| panic!("{TENANTS_ENV}={v}: expected a number of tenants, at least 2")),
        Err(_) => 20,
    }
}

#[tokio::test]
async fn e_deleting_many_tenants_with_the_operator_running() {
    let n = tenants();
    let Some(mut env) = env("leaving").await else { return };
    if !namespaces_get_deleted(&mut env).await {
        eprintln!("skipping e2e test leaving tenants: namespaces do not finish deleting (no namespace controller)");
        env.cleanup().await;
        return;
    }
    env.start_operator(Config::default()).await;
    let addr = env.metrics_addr.expect("metrics address");
    let with = ring(&mut env, "r", n).await;
    let before = scrape(addr, Duration::from_secs(5)).await.expect("metrics");
    let took_with = delete_and_time(&env, &with).await;
    let after = scrape(addr, Duration::from_secs(5)).await.expect("metrics");
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    let errors = delta("ims_write_errors_total");
    let forbidden = forbidden_writes(&after) - forbidden_writes(&before);
    let patches = delta("ims_status_patches_total");
    let applies = delta("ims_grant_applies_total");
    let deletes = delta("ims_grant_deletes_total");
    let events = delta("ims_events_total");
    let reconciles = delta("ims_reconciles_total");
    let failed = delta("ims_reconcile_errors_total");
    let error_kinds: Vec<String> = after
        .iter()
        .filter(|(k, v)| k.starts_with("ims_write_errors_total") && **v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();

    // The same with the operator stopped before the deletion.
    let without = ring(&mut env, "q", n).await;
    env.stop_operator().await;
    let took_without = delete_and_time(&env, &without).await;
    eprintln!(
        "e2e: deleting {n} tenants in a ring: {took_with:.1?} with the operator running \
         ({reconciles} reconciles, {failed} failed; {patches} status patches, {applies} grant applies, \
         {deletes} grant deletes, {events} events; {errors} write errors, {forbidden} Forbidden, during it; \
         write errors by kind: {error_kinds:?}), {took_without:.1?} with the operator stopped"
    );
    assert_eq!(forbidden, 0.0, "the operator wrote into leaving namespaces: {after:?}");
    assert_eq!(errors, 0.0, "no write of the operator failed: {after:?}");
    let limit = scaled(Duration::from_secs(60), n).max(took_without * 2);
    assert!(
        took_with < limit,
        "deleting took {took_with:?} with the operator, {took_without:?} without"
    );
    env.cleanup().await;
}

/// Runs the command of `IMS_E2E_RESTART_APISERVER` (with `sh -c`, the outage in seconds as its
/// argument) while scraping the in-process operator's `ims_leader` every 250 ms; returns how
/// long the command took, its output and the samples.
async fn restart_apiserver(command: &str, down_secs: u64, metrics: SocketAddr) -> (Duration, String, Vec<f64>) {
    let script = format!("{command} \"$@\"");
    let started = Instant::now();
    let restart = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &script, "restart-apiserver", &down_secs.to_string()])
            .stdin(Stdio::null())
            .output()
    });
    let mut leader = Vec::new();
    let sampler = async {
        loop {
            if let Some(m) = scrape(metrics, Duration::from_secs(1)).await {
                leader.push(sample(&m, "ims_leader"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let out = tokio::select! {
        out = restart => out,
        () = sampler => unreachable!("the sampler never ends"),
    };
    let out = out.expect("the restart command's thread").expect("run sh -c");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {down_secs} failed ({}): {output}",
        RESTART_ENV,
        out.status
    );
    (started.elapsed(), output.trim().to_string(), leader)
}

/// The samples of `prefix` that grew from `before` to `after`, with their growth.
fn grown(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, prefix: &str) -> Vec<String> {
    after
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{k} +{d}"))
        })
        .collect()
}

/// The holder, transitions and acquire time of the chart's Lease.
async fn lease_record(leases: &Api<Lease>) -> (Option<String>, Option<i32>, Option<String>) {
    let spec = leases
        .get(OPERATOR_NAME)
        .await
        .expect("the lease")
        .spec
        .unwrap_or_default();
    (
        spec.holder_identity,
        spec.lease_transitions,
        spec.acquire_time.map(|t| t.0.to_string()),
    )
}

/// The resourceVersions of the Role and RoleBinding of an image's grant.
async fn grant_versions(env: &Env, ns: &str, image: &str) -> (Option<String>, Option<String>) {
    let name = format!("ims-image-{image}");
    let role = Api::<Role>::namespaced(env.client.clone(), ns)
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("the Role of {image}: {e}"));
    let binding = Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("the RoleBinding of {image}: {e}"));
    (role.metadata.resource_version, binding.metadata.resource_version)
}

/// Waits (polling) until the RoleBinding of an image's grant exists; returns how long it took.
async fn wait_for_grant(env: &Env, ns: &str, image: &str, timeout: Duration) -> Duration {
    let bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), ns);
    let name = format!("ims-image-{image}");
    let started = Instant::now();
    poll_until(&format!("the grant of {ns}/{image}"), timeout, || async {
        bindings.get_opt(&name).await.ok().flatten().map(|_| ())
    })
    .await;
    started.elapsed()
}

/// Whether the in-process operator's /readyz answers 200; waits up to `timeout`.
async fn wait_ready(addr: SocketAddr, what: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    poll_until(what, timeout, || async {
        http_get(addr, "/readyz", Duration::from_secs(2))
            .await
            .and_then(|(code, _)| (code == 200).then_some(()))
    })
    .await;
    started.elapsed()
}

async fn wait_leader(addr: SocketAddr, what: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    poll_until(what, timeout, || async {
        scrape(addr, Duration::from_secs(2))
            .await
            .and_then(|m| (sample(&m, "ims_leader") == 1.0).then_some(()))
    })
    .await;
    started.elapsed()
}

/// An API server outage longer than the renew deadline makes the leader step down (its writes
/// are fenced) and, once the server is back, take its own Lease again and carry on; a short
/// one costs nothing. Opt-in: needs `IMS_E2E_RESTART_APISERVER`.
#[tokio::test]
async fn f_the_operator_survives_api_server_restarts() {
    let Some(mut env) = env("apirestart").await else { return };
    let Some(restart) = std::env::var(RESTART_ENV).ok().filter(|c| !c.trim().is_empty()) else {
        eprintln!("skipping e2e test api server restarts: set {RESTART_ENV} to a command that restarts the API server");
        env.cleanup().await;
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    // The chart's leader-election Role allows its own Lease only; one left by an earlier run
    // (a killed replica of test d) is removed first.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), SYSTEM_NAMESPACE);
    match leases.delete(OPERATOR_NAME, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => panic!("deleting the old lease: {e}"),
    }
    env.start_operator_with(Config::default(), Some((SYSTEM_NAMESPACE, OPERATOR_NAME)))
        .await;
    let addr = env.metrics_addr.expect("metrics address");
    for name in ["web1", "web2", "web3"] {
        env.apply(image(&a, name)).await;
    }
    env.apply(share(&a, "s", &["web1", "web2"], &[&b])).await;
    env.apply(acceptance(&b, "from-a", &a, &["web1"], "Accept")).await;
    wait_for_grant(&env, &a, "web1", Duration::from_secs(60)).await;
    wait_ready(addr, "the operator is ready", Duration::from_secs(30)).await;
    wait_leader(addr, "the operator leads", Duration::from_secs(30)).await;
    let web1 = grant_versions(&env, &a, "web1").await;
    let lease_before = lease_record(&leases).await;
    let before = scrape(addr, Duration::from_secs(5)).await.expect("metrics");

    // 1. Down for 15 s: longer than the renew deadline (10 s).
    let (took, output, leader) = restart_apiserver(&restart, 15, addr).await;
    eprintln!("e2e: {RESTART_ENV} 15 took {took:.1?}: {output}");
    assert_eq!(
        env.operator_finished(),
        Some(false),
        "the operator's task ended during the outage"
    );
    assert!(
        leader.contains(&0.0),
        "the operator stepped down (ims_leader 0) when it could not renew: {leader:?}"
    );
    let ready = wait_ready(addr, "/readyz ok after the long outage", Duration::from_secs(60)).await;
    let leads = wait_leader(addr, "ims_leader 1 after the long outage", Duration::from_secs(60)).await;
    let lease_long = lease_record(&leases).await;
    env.apply(acceptance(&b, "from-a", &a, &["web1", "web2"], "Accept"))
        .await;
    let granted = wait_for_grant(&env, &a, "web2", Duration::from_secs(30)).await;
    assert_eq!(
        grant_versions(&env, &a, "web1").await,
        web1,
        "the grant of web1 was not rewritten (Role and RoleBinding resourceVersions)"
    );
    assert_eq!(env.operator_finished(), Some(false), "the operator still runs");
    let after_long = scrape(addr, Duration::from_secs(5)).await.expect("metrics");
    eprintln!(
        "e2e: long outage: ims_leader samples during the restart {leader:?}; afterwards /readyz ok in {ready:.1?}, \
         ims_leader 1 in {leads:.1?}; web2 granted {granted:.1?} after its acceptance; lease {lease_before:?} -> {lease_long:?}; \
         watch restarts {}, reconcile errors {:?}, write errors {:?}",
        sample(&after_long, "ims_watch_restarts_total") - sample(&before, "ims_watch_restarts_total"),
        grown(&before, &after_long, "ims_reconcile_errors_total"),
        grown(&before, &after_long, "ims_write_errors_total"),
    );

    // 2. Down for 3 s: well within the renew deadline; nothing changes hands.
    let web2 = grant_versions(&env, &a, "web2").await;
    let lease_short = lease_record(&leases).await;
    let (took, output, leader) = restart_apiserver(&restart, 3, addr).await;
    eprintln!("e2e: {RESTART_ENV} 3 took {took:.1?}: {output}");
    assert_eq!(env.operator_finished(), Some(false), "the operator's task ended");
    assert!(
        !leader.is_empty() && leader.iter().all(|v| *v == 1.0),
        "the operator led throughout the short outage: {leader:?}"
    );
    let lease_after = lease_record(&leases).await;
    assert_eq!(
        (&lease_after.0, lease_after.1),
        (&lease_short.0, lease_short.1),
        "the same holder and no transition"
    );
    let ready = wait_ready(addr, "/readyz ok after the short outage", Duration::from_secs(60)).await;
    env.apply(share(&a, "s", &["web1", "web2", "web3"], &[&b])).await;
    env.apply(acceptance(&b, "from-a", &a, &["web1", "web2", "web3"], "Accept"))
        .await;
    let granted = wait_for_grant(&env, &a, "web3", Duration::from_secs(30)).await;
    assert_eq!(grant_versions(&env, &a, "web1").await, web1, "web1's grant untouched");
    assert_eq!(grant_versions(&env, &a, "web2").await, web2, "web2's grant untouched");
    assert!(env.can_get_image(&a, "web3", &b).await, "web3 is usable");
    let after_short = scrape(addr, Duration::from_secs(5)).await.expect("metrics");
    eprintln!(
        "e2e: short outage: ims_leader {} samples, all 1; /readyz ok {ready:.1?} after; web3 granted {granted:.1?} \
         after its acceptance; lease {lease_after:?}; watch restarts {}, reconcile errors {:?}, write errors {:?}",
        leader.len(),
        sample(&after_short, "ims_watch_restarts_total") - sample(&after_long, "ims_watch_restarts_total"),
        grown(&after_long, &after_short, "ims_reconcile_errors_total"),
        grown(&after_long, &after_short, "ims_write_errors_total"),
    );
    env.cleanup().await;
}
