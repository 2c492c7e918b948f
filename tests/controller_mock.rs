//! The controller's I/O layer against a mock API server (tower-test): the exact server-side
//! apply patches it sends, that it sends nothing for an unchanged tenant, that it prunes stale
//! grants, and that a 409 fails the reconcile into a retry with backoff.

use std::{sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use ims_operator::{
    api::{ImageShare, ImageShareSpec, PrivateImage, PrivateImageSpec, ShareAcceptance, ShareAcceptanceSpec},
    config::Config,
    controller::{
        self, Context, State,
        cache::{Cache, Cached, ExistingGrants},
        writer::{self, WriteStats},
    },
    core::{Evaluator, NamespaceInfo, Snapshot, World},
};
use k8s_openapi::{
    api::core::v1::Namespace,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Client, client::Body, runtime::controller::Action};
use serde_json::{Value, json};
use tower_test::mock::{Handle, pair};

type MockHandle = Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, MockHandle) {
    let (service, handle) = pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn meta(ns: &str, name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        uid: Some(uid.into()),
        generation: Some(1),
        creation_timestamp: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
        ..Default::default()
    }
}

fn image() -> PrivateImage {
    let spec: PrivateImageSpec = serde_json::from_value(json!({
        "diskSizeGiB": 40,
        "osType": "Linux",
        "source": {"file": {"url": "s3://bucket/centos.qcow2", "format": "QCOW2"}}
    }))
    .unwrap();
    PrivateImage {
        metadata: meta("tenant-a", "centos-web", "uid-img"),
        spec,
        status: None,
    }
}

fn share() -> ImageShare {
    ImageShare {
        metadata: meta("tenant-a", "share", "uid-share"),
        spec: ImageShareSpec {
            images: vec!["centos-web".into()],
            recipients: vec!["tenant-b".into()],
            expires_at: None,
        },
        status: None,
    }
}

fn acceptance() -> ShareAcceptance {
    ShareAcceptance {
        metadata: meta("tenant-b", "from-a", "uid-acc"),
        spec: ShareAcceptanceSpec {
            owner: "tenant-a".into(),
            images: vec![],
            decision: Default::default(),
        },
        status: None,
    }
}

fn snapshot(objects: (PrivateImage, ImageShare, Option<ShareAcceptance>)) -> Snapshot {
    let mut snap = Snapshot::new(Config::default(), World::Cluster { kubevirt: false }, now()).unwrap();
    for ns in ["tenant-a", "tenant-b"] {
        snap.upsert_namespace(ns, NamespaceInfo::default());
    }
    snap.upsert_image(Arc::new(objects.0));
    snap.upsert_share(Arc::new(objects.1));
    if let Some(a) = objects.2 {
        snap.upsert_acceptance(Arc::new(a));
    }
    snap
}

/// Objects carrying the statuses the engine wants: a converged cluster.
fn converged(accepted: bool) -> (PrivateImage, ImageShare, Option<ShareAcceptance>, ExistingGrants) {
    let (mut img, mut sh) = (image(), share());
    let acc = accepted.then(acceptance);
    let snap = snapshot((img.clone(), sh.clone(), acc.clone()));
    let mut ev = Evaluator::new(&snap);
    let a = ev.tenant("tenant-a");
    img.status = Some(a.images[0].status.clone());
    sh.status = Some(a.shares[0].status.clone());
    let acc = acc.map(|mut acc| {
        acc.status = Some(ev.tenant("tenant-b").acceptances[0].status.clone());
        acc
    });
    let mut grants = ExistingGrants::default();
    for g in a.grants.iter() {
        let name = g.role.metadata.name.clone().unwrap();
        grants.roles.insert(name.clone(), Arc::new(g.role.clone()));
        grants.bindings.insert(name, Arc::new(g.binding.clone()));
    }
    (img, sh, acc, grants)
}

async fn respond(handle: &mut MockHandle, status: StatusCode, body: Value) -> (String, String, String, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the client is alive");
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let json: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if method == "PATCH" {
        assert_eq!(
            content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{path}: server-side apply"
        );
    }
    // Roles and RoleBindings are echoed back (the client parses the reply as the object).
    let body = if body.is_null() { json.clone() } else { body };
    let reply = if status.is_success() {
        body
    } else {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status.as_u16(), "reason": "Conflict", "message": "conflict"})
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (method, path, query, json)
}

#[tokio::test]
async fn accepting_a_share_sends_exactly_these_server_side_applies() {
    // The owner's cluster state before tenant-b accepts: offered, pending, no grant.
    let (img, sh, _, grants) = converged(false);
    assert!(grants.roles.is_empty());
    let snap = snapshot((img, sh, Some(acceptance())));
    let outcome = Evaluator::new(&snap).tenant("tenant-a");
    let (client, mut handle) = mock_client();
    let writer = tokio::spawn(async move { writer::write_outcome(&client, &outcome, &grants).await });

    let (m, path, query, role) = respond(&mut handle, StatusCode::OK, Value::Null).await;
    assert_eq!(
        (m.as_str(), path.as_str()),
        (
            "PATCH",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/roles/ims-image-centos-web"
        )
    );
    assert!(
        query.contains("fieldManager=ims-operator-grants") && query.contains("force=true"),
        "{query}"
    );
    assert_eq!(role["kind"], "Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["ims.imageshare.io"], "resources": ["privateimages"], "resourceNames": ["centos-web"], "verbs": ["get"]}])
    );
    assert_eq!(role["metadata"]["ownerReferences"][0]["uid"], "uid-img");
    assert_eq!(
        role["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "ims-operator"
    );

    let (m, path, _, binding) = respond(&mut handle, StatusCode::OK, Value::Null).await;
    assert_eq!(
        (m.as_str(), path.as_str()),
        (
            "PATCH",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/rolebindings/ims-image-centos-web"
        )
    );
    assert_eq!(
        binding["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:serviceaccounts:tenant-b"}])
    );
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ims-image-centos-web"})
    );

    let (m, path, query, patch) = respond(&mut handle, StatusCode::OK, serde_json::to_value(image()).unwrap()).await;
    assert_eq!(
        (m.as_str(), path.as_str()),
        (
            "PATCH",
            "/apis/ims.imageshare.io/v1alpha1/namespaces/tenant-a/privateimages/centos-web/status"
        )
    );
    assert!(
        query.contains("fieldManager=ims-operator-status") && query.contains("force=true"),
        "{query}"
    );
    assert_eq!(patch["apiVersion"], "ims.imageshare.io/v1alpha1");
    assert_eq!(patch["kind"], "PrivateImage");
    assert_eq!(
        patch["status"]["recipients"],
        json!({"pending": 0, "accepted": 1, "rejected": 0, "removed": 0})
    );

    let (m, path, _, patch) = respond(&mut handle, StatusCode::OK, serde_json::to_value(share()).unwrap()).await;
    assert_eq!(
        (m.as_str(), path.as_str()),
        (
            "PATCH",
            "/apis/ims.imageshare.io/v1alpha1/namespaces/tenant-a/imageshares/share/status"
        )
    );
    assert_eq!(patch["kind"], "ImageShare");
    assert_eq!(
        patch["status"]["images"],
        json!([{"name": "centos-web", "pending": [], "accepted": ["tenant-b"], "rejected": [], "removed": []}])
    );
    assert_eq!(
        (patch["status"]["offered"].clone(), patch["status"]["accepted"].clone()),
        (json!(1), json!(1))
    );

    let stats = writer.await.unwrap().unwrap();
    assert_eq!(
        stats,
        WriteStats {
            status_patches: 2,
            grant_applies: 2,
            grant_deletes: 0
        }
    );
}

#[tokio::test]
async fn an_unchanged_tenant_sends_no_request_at_all() {
    let (img, sh, acc, grants) = converged(true);
    let snap = snapshot((img, sh, acc));
    let mut ev = Evaluator::new(&snap);
    let (client, mut handle) = mock_client();
    for ns in ["tenant-a", "tenant-b"] {
        let outcome = ev.tenant(ns);
        assert_eq!(outcome.writes(), 0);
        assert!(outcome.events.is_empty(), "{:?}", outcome.events);
        let existing = if ns == "tenant-a" {
            grants.clone()
        } else {
            ExistingGrants::default()
        };
        let stats = tokio::time::timeout(
            Duration::from_secs(2),
            writer::write_outcome(&client, &outcome, &existing),
        )
        .await
        .expect("no request is waiting for an answer")
        .unwrap();
        assert_eq!(stats, WriteStats::default());
    }
    drop(client);
    assert!(handle.next_request().await.is_none(), "no request was sent");
}

#[tokio::test]
async fn revoking_the_last_acceptance_prunes_binding_then_role() {
    let (img, sh, _acc, grants) = converged(true);
    assert_eq!(grants.roles.len(), 1);
    // tenant-b deleted its acceptance: the pair is Pending again and the grant must go.
    let snap = snapshot((img, sh, None));
    let outcome = Evaluator::new(&snap).tenant("tenant-a");
    assert!(outcome.grants.is_empty());
    let (client, mut handle) = mock_client();
    let writer = tokio::spawn(async move { writer::write_outcome(&client, &outcome, &grants).await });
    let (m, path, _, _) = respond(
        &mut handle,
        StatusCode::OK,
        json!({"kind": "Status", "status": "Success"}),
    )
    .await;
    assert_eq!(
        (m.as_str(), path.as_str()),
        (
            "DELETE",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/rolebindings/ims-image-centos-web"
        )
    );
    let (m, path, _, _) = respond(
        &mut handle,
        StatusCode::OK,
        json!({"kind": "Status", "status": "Success"}),
    )
    .await;
    assert_eq!(
        (m.as_str(), path.as_str()),
        (
            "DELETE",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a/roles/ims-image-centos-web"
        )
    );
    // Then the statuses: the image and the share lose the accepted recipient.
    let (_, path, _, patch) = respond(&mut handle, StatusCode::OK, serde_json::to_value(image()).unwrap()).await;
    assert!(path.ends_with("/privateimages/centos-web/status"));
    assert_eq!(patch["status"]["recipients"]["pending"], 1);
    let (_, path, _, patch) = respond(&mut handle, StatusCode::OK, serde_json::to_value(share()).unwrap()).await;
    assert!(path.ends_with("/imageshares/share/status"));
    assert_eq!(patch["status"]["images"][0]["pending"], json!(["tenant-b"]));
    let stats = writer.await.unwrap().unwrap();
    assert_eq!(
        stats,
        WriteStats {
            status_patches: 2,
            grant_applies: 0,
            grant_deletes: 2
        }
    );
}

fn synced_cache(objects: (PrivateImage, ImageShare, Option<ShareAcceptance>)) -> Arc<Cache> {
    let cache = Arc::new(Cache::new(Config::default(), false).unwrap());
    for ns in ["tenant-a", "tenant-b"] {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Namespace::store(&cache, Arc::new(namespace));
    }
    PrivateImage::store(&cache, Arc::new(objects.0));
    ImageShare::store(&cache, Arc::new(objects.1));
    if let Some(a) = objects.2 {
        ShareAcceptance::store(&cache, Arc::new(a));
    }
    for _ in 0..ims_operator::controller::cache::FEEDS {
        cache.mark_synced();
    }
    cache
}

#[tokio::test]
async fn a_conflict_fails_the_reconcile_and_retries_with_growing_backoff() {
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, Some(acceptance())));
    let (client, mut handle) = mock_client();
    let ctx = Arc::new(Context::new(client, cache, Arc::new(State::default()), None));
    let ns = Arc::new(Namespace {
        metadata: ObjectMeta {
            name: Some("tenant-a".into()),
            ..Default::default()
        },
        ..Default::default()
    });

    let mut waits = Vec::new();
    for _ in 0..3 {
        let run = tokio::spawn(controller::reconcile(ns.clone(), ctx.clone()));
        let (m, path, _, _) = respond(&mut handle, StatusCode::CONFLICT, Value::Null).await;
        assert_eq!(m, "PATCH");
        assert!(path.ends_with("/roles/ims-image-centos-web"));
        let err = run.await.unwrap().expect_err("a 409 fails the reconcile");
        assert_eq!(err.metric_reason(), "Api409");
        waits.push(controller::error_policy(ns.clone(), &err, ctx.clone()));
    }
    assert_eq!(
        waits,
        [
            Action::requeue(Duration::from_secs(1)),
            Action::requeue(Duration::from_secs(2)),
            Action::requeue(Duration::from_secs(4))
        ]
    );
    assert_eq!(
        controller::backoff(30),
        Duration::from_secs(256).min(Duration::from_secs(300))
    );
    let metrics = ctx.state.metrics_text();
    assert!(
        metrics.contains("ims_reconcile_errors_total{reason=\"Api409\"} 3"),
        "{metrics}"
    );
}

/// Triggers a feed sends for a sequence of watch events.
async fn triggers_of<K: ims_operator::controller::cache::Cached>(
    cache: Arc<Cache>,
    events: Vec<kube::runtime::watcher::Event<kube::core::DeserializeGuard<K>>>,
) -> std::collections::BTreeSet<String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (invalid, _invalid_rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = ims_operator::controller::feed::FeedSink {
        cache,
        triggers: tx,
        invalid,
    };
    let stream = futures::stream::iter(events.into_iter().map(Ok));
    ims_operator::controller::feed::feed_guarded::<K>("test", stream, sink).await;
    let mut out = std::collections::BTreeSet::new();
    while let Ok(ns) = rx.try_recv() {
        out.insert(ns);
    }
    out
}

#[tokio::test]
async fn an_acceptance_deleted_while_the_watch_was_down_reconciles_its_owner_too() {
    use kube::{core::DeserializeGuard, runtime::watcher::Event};
    let (img, sh, acc, _) = converged(true);
    let cache = synced_cache((img, sh, acc));
    // The relist after a watch outage no longer holds the acceptance.
    let touched = triggers_of::<ShareAcceptance>(cache.clone(), vec![Event::Init, Event::InitDone]).await;
    assert!(
        touched.contains("tenant-a") && touched.contains("tenant-b"),
        "{touched:?}"
    );
    // And an update that changes what an object relates to tells both the old and the new side.
    let mut s = share();
    s.spec.recipients = vec!["tenant-c".into()];
    let touched = triggers_of::<ImageShare>(cache, vec![Event::Apply(DeserializeGuard(Ok(s)))]).await;
    assert_eq!(touched, ["tenant-a", "tenant-b", "tenant-c"].map(String::from).into());
}

#[tokio::test]
async fn a_reconcile_waits_until_the_watch_brought_back_its_own_status_writes() {
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, Some(acceptance())));
    let (client, mut handle) = mock_client();
    let ctx = Arc::new(Context::new(client, cache.clone(), Arc::new(State::default()), None));
    let ns = Arc::new(Namespace {
        metadata: ObjectMeta {
            name: Some("tenant-a".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let run = tokio::spawn(controller::reconcile(ns.clone(), ctx.clone()));
    respond(&mut handle, StatusCode::OK, Value::Null).await; // Role
    respond(&mut handle, StatusCode::OK, Value::Null).await; // RoleBinding
    let mut patched = serde_json::to_value(image()).unwrap();
    patched["metadata"]["resourceVersion"] = json!("101");
    respond(&mut handle, StatusCode::OK, patched).await;
    let mut patched = serde_json::to_value(share()).unwrap();
    patched["metadata"]["resourceVersion"] = json!("102");
    respond(&mut handle, StatusCode::OK, patched).await;
    // Then the Events of the transitions: accept them all.
    while !run.is_finished() {
        if let Ok(Some((request, send))) = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await
        {
            assert_eq!(request.method(), "POST", "only events follow the writes");
            let body = request.into_body().collect_bytes().await.unwrap();
            send.send_response(
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Body::from(body.to_vec()))
                    .unwrap(),
            );
        }
    }
    run.await.unwrap().unwrap();

    // The cache still holds the old statuses: the next reconcile waits instead of writing.
    assert!(cache.awaiting_writes("tenant-a"));
    let action = controller::reconcile(ns.clone(), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_millis(200)));
    cache.observed("tenant-a", Some("101"));
    assert!(cache.awaiting_writes("tenant-a"), "one write is still on its way");
    cache.observed("tenant-a", Some("102"));
    assert!(!cache.awaiting_writes("tenant-a"));
    // The watch may deliver a version before the write that made it has returned.
    cache.observed("tenant-a", Some("103"));
    cache.expect_writes("tenant-a", vec!["103".into()]);
    assert!(!cache.awaiting_writes("tenant-a"));
}
