//! The controller's I/O layer against a mock API server (tower-test): the exact server-side
//! apply patches it sends (an ImageOffer whole, in one apply; a withdrawn one deleted), that it
//! sends nothing for an unchanged tenant, that it prunes only its own stale grants, that a
//! refused write fails the reconcile into a jittered retry while every other write is still
//! sent, that writes are fenced by the leader lease, and that objects which do not decode never
//! loosen a decision.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::{Request, Response, StatusCode};
use ims_operator::{
    api::{
        Decision, ImageOffer, ImageOfferStatus, ImageQuota, ImageQuotaStatus, ImageShare, ImageShareSpec, PrivateImage,
        PrivateImageSpec, ShareAcceptance, ShareAcceptanceSpec,
    },
    config::Config,
    controller::{
        self, Context, State,
        cache::{Cache, Cached, ExistingGrants},
        feed::{FeedSink, UnreadableReport, feed_guarded},
        guard::Guarded,
        leader::{Fence, Fenced, LeaderElector},
        metrics::{Metrics, WriteKind},
        reconcile::{Error, MAX_BACKOFF, backoff_with},
        writer::{self, WriteReport, WriteStats},
    },
    core::{AccessReason, Evaluator, Kind, NamespaceInfo, QuotaUpdate, Snapshot, TenantOutcome, World},
};
use k8s_openapi::{
    api::{
        core::v1::Namespace,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    client::Body,
    runtime::{controller::Action, watcher},
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_test::mock::{Handle, pair};

type MockHandle = Handle<Request<Body>, Response<Body>>;

const RBAC_A: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-a";
const IMS_A: &str = "/apis/ims.imageshare.io/v1alpha1/namespaces/tenant-a";
const IMS_B: &str = "/apis/ims.imageshare.io/v1alpha1/namespaces/tenant-b";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ims-system/leases/ims-operator";

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

fn image_in(ns: &str, name: &str, uid: &str) -> PrivateImage {
    let spec: PrivateImageSpec = serde_json::from_value(json!({
        "diskSizeGiB": 40,
        "osType": "Linux",
        "source": {"file": {"url": format!("s3://bucket/{name}.qcow2"), "format": "QCOW2"}}
    }))
    .unwrap();
    PrivateImage {
        metadata: meta(ns, name, uid),
        spec,
        status: None,
    }
}

fn image() -> PrivateImage {
    image_in("tenant-a", "centos-web", "uid-img")
}

fn share_of(images: &[&str]) -> ImageShare {
    ImageShare {
        metadata: meta("tenant-a", "share", "uid-share"),
        spec: ImageShareSpec {
            images: images.iter().map(|i| i.to_string()).collect(),
            recipients: vec!["tenant-b".into()],
            recipient_selector: None,
            expires_at: None,
        },
        status: None,
    }
}

fn share() -> ImageShare {
    share_of(&["centos-web"])
}

fn acceptance_named(name: &str, images: &[&str], decision: Decision) -> ShareAcceptance {
    ShareAcceptance {
        metadata: meta("tenant-b", name, &format!("uid-{name}")),
        spec: ShareAcceptanceSpec {
            owner: "tenant-a".into(),
            owner_selector: None,
            images: images.iter().map(|i| i.to_string()).collect(),
            decision,
        },
        status: None,
    }
}

fn acceptance() -> ShareAcceptance {
    acceptance_named("from-a", &[], Decision::Accept)
}

fn snapshot_of(images: Vec<PrivateImage>, shares: Vec<ImageShare>, acceptances: Vec<ShareAcceptance>) -> Snapshot {
    let mut snap = Snapshot::new(Config::default(), World::Cluster { kubevirt: false }, now()).unwrap();
    for ns in ["tenant-a", "tenant-b"] {
        snap.upsert_namespace(ns, NamespaceInfo::default());
    }
    for i in images {
        snap.upsert_image(Arc::new(i));
    }
    for s in shares {
        snap.upsert_share(Arc::new(s));
    }
    for a in acceptances {
        snap.upsert_acceptance(Arc::new(a));
    }
    converge(&mut snap);
    snap
}

/// Gives every namespace the ImageQuota and the ImageOffers the engine wants, so that tests
/// about other writes see none for those.
fn converge(snap: &mut Snapshot) {
    converge_quotas(snap);
    converge_offers(snap);
}

/// Gives every namespace the ImageQuota the engine wants, so that tests about other writes
/// see none for the quotas (`quota_writes_create_update_and_delete` is about those).
fn converge_quotas(snap: &mut Snapshot) {
    for ns in ["tenant-a", "tenant-b"] {
        if let QuotaUpdate::Apply { status, .. } = Evaluator::new().tenant(snap, ns).quota {
            snap.set_quota(ns, Some(Arc::new(quota_object(ns, status))));
        }
    }
}

/// Gives every recipient the ImageOffers the engine wants
/// (`a_reconcile_writes_an_image_offer_in_one_apply_and_deletes_a_withdrawn_one` is about those).
fn converge_offers(snap: &mut Snapshot) {
    for ns in ["tenant-a", "tenant-b"] {
        let outcome = Evaluator::new().tenant(snap, ns);
        for u in &outcome.offers {
            let offer = ImageOffer::of(ns, &u.name, u.status.clone());
            snap.set_offer(ns, &u.name, Some(Arc::new(offer)));
        }
        for owner in &outcome.withdrawn_offers {
            snap.set_offer(ns, owner, None);
        }
    }
}

fn quota_object(ns: &str, status: ImageQuotaStatus) -> ImageQuota {
    ImageQuota::of(ns, status)
}

fn snapshot(objects: (PrivateImage, ImageShare, Option<ShareAcceptance>)) -> Snapshot {
    snapshot_of(vec![objects.0], vec![objects.1], objects.2.into_iter().collect())
}

/// Objects carrying the statuses the engine wants: a converged cluster.
fn converged(accepted: bool) -> (PrivateImage, ImageShare, Option<ShareAcceptance>, ExistingGrants) {
    let (mut img, mut sh) = (image(), share());
    let acc = accepted.then(acceptance);
    let snap = snapshot((img.clone(), sh.clone(), acc.clone()));
    let mut ev = Evaluator::new();
    let a = ev.tenant(&snap, "tenant-a");
    img.status = Some(a.images[0].status.clone());
    sh.status = Some(a.shares[0].status.clone());
    let acc = acc.map(|mut acc| {
        acc.status = Some(ev.tenant(&snap, "tenant-b").acceptances[0].status.clone());
        acc
    });
    let mut grants = ExistingGrants::default();
    for g in a.grants.iter() {
        let name = g.role().metadata.name.clone().unwrap();
        grants.roles.insert(name.clone(), Arc::new(g.role()));
        grants.bindings.insert(name, Arc::new(g.binding()));
    }
    (img, sh, acc, grants)
}

/// The Status body the API server answers a failed request with.
fn failure(status: StatusCode) -> Value {
    let reason = match status.as_u16() {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        500 => "InternalError",
        _ => "Unknown",
    };
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "code": status.as_u16(), "reason": reason, "message": format!("mock: {reason}"),
    })
}

fn reply(send: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

/// One request the mock API server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: Option<String>,
    body: Value,
    /// By the tokio clock, since the server started.
    at: Duration,
}

impl Seen {
    fn is_event(&self) -> bool {
        self.path.starts_with("/apis/events.k8s.io/")
    }

    fn is_lease(&self) -> bool {
        self.path.starts_with("/apis/coordination.k8s.io/")
    }
}

async fn read(request: Request<Body>, start: Instant) -> Seen {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Seen {
        method,
        path,
        query,
        content_type,
        body,
        at: start.elapsed(),
    }
}

async fn respond(handle: &mut MockHandle, status: StatusCode, body: Value) -> (String, String, String, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the client is alive");
    let seen = read(request, Instant::now()).await;
    if seen.method == "PATCH" {
        assert_eq!(
            seen.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{}: server-side apply",
            seen.path
        );
    }
    // Roles and RoleBindings are echoed back (the client parses the reply as the object).
    let body = if body.is_null() { seen.body.clone() } else { body };
    let body = if status.is_success() { body } else { failure(status) };
    reply(send, status, &body);
    (seen.method, seen.path, seen.query, seen.body)
}

/// What the mock API server answers one request with.
enum Reply {
    Ok(StatusCode, Value),
    Fail(StatusCode),
    /// Never answered: the request stays in flight.
    Hang,
}

/// The object a status apply returns: the object of that path, with the status applied.
fn status_reply(seen: &Seen) -> Value {
    // /apis/ims.imageshare.io/v1alpha1/namespaces/{ns}/{plural}/{name}/status
    let parts: Vec<&str> = seen.path.split('/').collect();
    let (ns, plural, name) = (parts[5], parts[6], parts[7]);
    let mut object = match plural {
        "privateimages" => serde_json::to_value(image_in(ns, name, &format!("uid-{name}"))).unwrap(),
        "imageshares" => {
            let mut s = share();
            s.metadata.name = Some(name.into());
            serde_json::to_value(s).unwrap()
        }
        "shareacceptances" => serde_json::to_value(acceptance_named(name, &[], Decision::Accept)).unwrap(),
        "imagequotas" => serde_json::to_value(quota_object(ns, ImageQuotaStatus::default())).unwrap(),
        other => panic!("a status apply to {other}"),
    };
    object["status"] = seen.body["status"].clone();
    object
}

/// What a well-behaved API server answers: nothing of our grants exists yet, writes succeed.
fn default_reply(seen: &Seen) -> Reply {
    match seen.method.as_str() {
        "GET" => Reply::Fail(StatusCode::NOT_FOUND),
        "DELETE" => Reply::Ok(
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ),
        "POST" => Reply::Ok(StatusCode::CREATED, seen.body.clone()),
        "PATCH" if seen.path.ends_with("/status") => Reply::Ok(StatusCode::OK, status_reply(seen)),
        _ => Reply::Ok(StatusCode::OK, seen.body.clone()),
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Serves the mock API in a task: `rule` answers what it wants to, the rest gets
/// [`default_reply`]. Every request is logged before it is answered.
fn serve(mut handle: MockHandle, mut rule: impl FnMut(&Seen) -> Option<Reply> + Send + 'static) -> Log {
    let log = Log::default();
    let out = log.clone();
    let start = Instant::now();
    tokio::spawn(async move {
        let mut in_flight = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let seen = read(request, start).await;
            if seen.method == "PATCH" && !seen.is_event() {
                assert_eq!(
                    seen.content_type.as_deref(),
                    Some("application/apply-patch+yaml"),
                    "{}: server-side apply",
                    seen.path
                );
            }
            let answer = rule(&seen).unwrap_or_else(|| default_reply(&seen));
            log.lock().unwrap().push(seen);
            match answer {
                Reply::Ok(status, body) => reply(send, status, &body),
                Reply::Fail(status) => reply(send, status, &failure(status)),
                Reply::Hang => in_flight.push(send),
            }
        }
    });
    out
}

/// The requests logged so far other than Events, as (method, path).
fn writes(log: &Log) -> Vec<(String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| !s.is_event())
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect()
}

fn req(method: &str, path: String) -> (String, String) {
    (method.to_string(), path)
}

fn never_skip(_: &'static str, _: &str) -> bool {
    false
}

async fn write(client: &Client, outcome: &TenantOutcome, existing: &ExistingGrants, metrics: &Metrics) -> WriteReport {
    writer::write_outcome(client, outcome, existing, metrics, &Fence::open(), &never_skip).await
}

#[tokio::test]
async fn accepting_a_share_sends_exactly_these_server_side_applies() {
    // The owner's cluster state before tenant-b accepts: offered, pending, no grant.
    let (img, sh, _, grants) = converged(false);
    assert!(grants.roles.is_empty());
    let snap = snapshot((img, sh, Some(acceptance())));
    let outcome = Evaluator::new().tenant(&snap, "tenant-a");
    let (client, mut handle) = mock_client();
    let writer = tokio::spawn(async move {
        let metrics = Metrics::default();
        let report = write(&client, &outcome, &grants, &metrics).await;
        (report, metrics.status_patches())
    });

    // The watches see only labelled grants: whether the name is free is asked first.
    let (m, path, _, _) = respond(&mut handle, StatusCode::NOT_FOUND, Value::Null).await;
    assert_eq!((m, path), req("GET", format!("{RBAC_A}/roles/ims-image-centos-web")));
    let (m, path, query, role) = respond(&mut handle, StatusCode::OK, Value::Null).await;
    assert_eq!((m, path), req("PATCH", format!("{RBAC_A}/roles/ims-image-centos-web")));
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
    assert_eq!(role["metadata"]["labels"]["ims.imageshare.io/image"], "centos-web");

    let (m, path, _, _) = respond(&mut handle, StatusCode::NOT_FOUND, Value::Null).await;
    assert_eq!(
        (m, path),
        req("GET", format!("{RBAC_A}/rolebindings/ims-image-centos-web"))
    );
    let (m, path, _, binding) = respond(&mut handle, StatusCode::OK, Value::Null).await;
    assert_eq!(
        (m, path),
        req("PATCH", format!("{RBAC_A}/rolebindings/ims-image-centos-web"))
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
        (m, path),
        req("PATCH", format!("{IMS_A}/privateimages/centos-web/status"))
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
    assert_eq!((m, path), req("PATCH", format!("{IMS_A}/imageshares/share/status")));
    assert_eq!(patch["kind"], "ImageShare");
    assert_eq!(
        patch["status"]["images"],
        json!([{"name": "centos-web", "pending": [], "accepted": ["tenant-b"], "rejected": [], "removed": []}])
    );
    assert_eq!(
        (patch["status"]["offered"].clone(), patch["status"]["accepted"].clone()),
        (json!(1), json!(1))
    );

    let (report, status_patches) = writer.await.unwrap();
    assert_eq!(
        report.stats,
        WriteStats {
            status_patches: 2,
            grant_applies: 2,
            grant_deletes: 0
        }
    );
    assert_eq!(status_patches, 2);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(!report.fenced);
    assert_eq!(report.grant_faults, vec![("centos-web".to_string(), None)]);
    assert!(handle.next_request().await.is_none(), "nothing else was sent");
}

#[tokio::test]
async fn an_unchanged_tenant_sends_no_request_at_all() {
    let (img, sh, acc, grants) = converged(true);
    let snap = snapshot((img, sh, acc));
    let mut ev = Evaluator::new();
    let (client, mut handle) = mock_client();
    let metrics = Metrics::default();
    for ns in ["tenant-a", "tenant-b"] {
        let outcome = ev.tenant(&snap, ns);
        assert_eq!(outcome.writes(), 0);
        assert!(outcome.events.is_empty(), "{:?}", outcome.events);
        let existing = if ns == "tenant-a" {
            grants.clone()
        } else {
            ExistingGrants::default()
        };
        let report = tokio::time::timeout(Duration::from_secs(2), write(&client, &outcome, &existing, &metrics))
            .await
            .expect("no request is waiting for an answer");
        assert_eq!(report.stats, WriteStats::default());
        assert!(report.failures.is_empty() && report.written.is_empty() && !report.fenced);
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
    let outcome = Evaluator::new().tenant(&snap, "tenant-a");
    assert!(outcome.grants.is_empty());
    let (client, mut handle) = mock_client();
    let writer = tokio::spawn(async move { write(&client, &outcome, &grants, &Metrics::default()).await });
    let success = json!({"kind": "Status", "status": "Success"});
    let (m, path, _, _) = respond(&mut handle, StatusCode::OK, success.clone()).await;
    assert_eq!(
        (m, path),
        req("DELETE", format!("{RBAC_A}/rolebindings/ims-image-centos-web"))
    );
    let (m, path, _, _) = respond(&mut handle, StatusCode::OK, success).await;
    assert_eq!((m, path), req("DELETE", format!("{RBAC_A}/roles/ims-image-centos-web")));
    // Then the statuses: the image and the share lose the accepted recipient.
    let (_, path, _, patch) = respond(&mut handle, StatusCode::OK, serde_json::to_value(image()).unwrap()).await;
    assert!(path.ends_with("/privateimages/centos-web/status"));
    assert_eq!(patch["status"]["recipients"]["pending"], 1);
    let (_, path, _, patch) = respond(&mut handle, StatusCode::OK, serde_json::to_value(share()).unwrap()).await;
    assert!(path.ends_with("/imageshares/share/status"));
    assert_eq!(patch["status"]["images"][0]["pending"], json!(["tenant-b"]));
    let report = writer.await.unwrap();
    assert_eq!(
        report.stats,
        WriteStats {
            status_patches: 2,
            grant_applies: 0,
            grant_deletes: 2
        }
    );
    assert!(report.failures.is_empty() && report.grant_faults.is_empty());
}

#[tokio::test]
async fn a_refused_write_is_reported_and_every_other_write_is_still_sent() {
    // Two accepted images: two grants (Role and RoleBinding each) and three statuses.
    let images = vec![image(), image_in("tenant-a", "ubuntu", "uid-ubuntu")];
    let snap = snapshot_of(images, vec![share_of(&["centos-web", "ubuntu"])], vec![acceptance()]);
    let outcome = Evaluator::new().tenant(&snap, "tenant-a");
    let granted: Vec<String> = outcome.grants.iter().map(|g| g.image.clone()).collect();
    assert_eq!(granted.len(), 2);
    assert_eq!(outcome.writes(), 3);

    let (client, handle) = mock_client();
    let mut refused = false;
    let log = serve(handle, move |seen| {
        let first_binding = seen.method == "PATCH" && seen.path.contains("/rolebindings/") && !refused;
        refused |= first_binding;
        first_binding.then_some(Reply::Fail(StatusCode::FORBIDDEN))
    });
    let metrics = Metrics::default();
    let report = write(&client, &outcome, &ExistingGrants::default(), &metrics).await;

    let mut expected = Vec::new();
    for image in &granted {
        for kind in ["roles", "rolebindings"] {
            expected.push(req("GET", format!("{RBAC_A}/{kind}/ims-image-{image}")));
            expected.push(req("PATCH", format!("{RBAC_A}/{kind}/ims-image-{image}")));
        }
    }
    for u in outcome.images.iter().filter(|u| u.changed) {
        expected.push(req("PATCH", format!("{IMS_A}/privateimages/{}/status", u.name)));
    }
    expected.push(req("PATCH", format!("{IMS_A}/imageshares/share/status")));
    assert_eq!(writes(&log), expected);

    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let failure = &report.failures[0];
    assert_eq!(failure.reason, "Forbidden");
    assert_eq!(failure.kind, WriteKind::Grant);
    assert_eq!(failure.regarding.kind, Kind::PrivateImage);
    assert_eq!(*failure.regarding.name, *granted[0]);
    assert!(
        failure
            .message
            .contains(&format!("RoleBinding ims-image-{}", granted[0])),
        "{}",
        failure.message
    );
    assert_eq!(metrics.write_errors(WriteKind::Grant, "Forbidden"), 1);
    assert_eq!(metrics.write_errors(WriteKind::Status, "Forbidden"), 0);
    assert_eq!(metrics.status_patches(), 3);
    assert_eq!(
        report.stats,
        WriteStats {
            status_patches: 3,
            grant_applies: 3,
            grant_deletes: 0
        }
    );
    assert!(!report.fenced);
    assert_eq!(report.grant_faults.len(), 2);
    let (image, fault) = &report.grant_faults[0];
    assert_eq!(image, &granted[0]);
    assert_eq!(fault.as_ref().map(|f| f.reason), Some(AccessReason::GrantWriteFailed));
    assert_eq!(report.grant_faults[1], (granted[1].clone(), None));
}

fn labelled(name: &str, image: Option<&str>) -> ObjectMeta {
    let mut labels =
        std::collections::BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "ims-operator".to_string())]);
    if let Some(image) = image {
        labels.insert("ims.imageshare.io/image".into(), image.into());
    }
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("tenant-a".into()),
        labels: Some(labels),
        ..Default::default()
    }
}

fn role(meta: ObjectMeta) -> Arc<Role> {
    Arc::new(Role {
        metadata: meta,
        rules: None,
    })
}

fn binding(meta: ObjectMeta) -> Arc<RoleBinding> {
    Arc::new(RoleBinding {
        metadata: meta,
        role_ref: Default::default(),
        subjects: None,
    })
}

#[tokio::test]
async fn a_role_the_operator_did_not_make_is_never_written_nor_deleted() {
    let (img, sh, _, _) = converged(false);
    let outcome = Evaluator::new().tenant(&snapshot((img, sh, Some(acceptance()))), "tenant-a");
    assert_eq!(outcome.grants.len(), 1);
    // In the cache (the watches select by the managed-by label): one stale grant of ours, and
    // labelled objects whose names are not the grant name of their image label.
    let mut existing = ExistingGrants::default();
    for (name, image) in [
        ("ims-image-old", Some("old")),
        ("ims-image-decoy", Some("centos-web")),
        ("ims-image-stray", None),
        ("team-role", Some("team")),
    ] {
        existing.roles.insert(name.into(), role(labelled(name, image)));
        existing.bindings.insert(name.into(), binding(labelled(name, image)));
    }
    let (client, handle) = mock_client();
    let log = serve(handle, |seen| {
        // Someone else's Role already carries the grant's name.
        (seen.method == "GET" && seen.path.ends_with("/roles/ims-image-centos-web")).then(|| {
            Reply::Ok(
                StatusCode::OK,
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "ims-image-centos-web", "namespace": "tenant-a", "labels": {"team": "web"}},
                    "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
                }),
            )
        })
    });
    let metrics = Metrics::default();
    let report = write(&client, &outcome, &existing, &metrics).await;
    assert_eq!(
        writes(&log),
        vec![
            req("DELETE", format!("{RBAC_A}/rolebindings/ims-image-old")),
            req("DELETE", format!("{RBAC_A}/roles/ims-image-old")),
            req("GET", format!("{RBAC_A}/roles/ims-image-centos-web")),
            req("PATCH", format!("{IMS_A}/privateimages/centos-web/status")),
            req("PATCH", format!("{IMS_A}/imageshares/share/status")),
        ]
    );
    assert_eq!(report.grant_faults.len(), 1);
    let (image, fault) = &report.grant_faults[0];
    assert_eq!(image, "centos-web");
    let fault = fault.as_ref().expect("a fault");
    assert_eq!(fault.reason, AccessReason::GrantNameTaken);
    assert!(fault.message.contains("Role ims-image-centos-web"), "{}", fault.message);
    assert!(report.failures.is_empty(), "a taken name is not a refused write");
    assert_eq!(
        report.stats,
        WriteStats {
            status_patches: 2,
            grant_applies: 0,
            grant_deletes: 2
        }
    );
}

#[tokio::test]
async fn a_role_binding_the_operator_did_not_make_is_never_written() {
    let (img, sh, _, _) = converged(false);
    let outcome = Evaluator::new().tenant(&snapshot((img, sh, Some(acceptance()))), "tenant-a");
    let grant = outcome.grants[0].clone();
    // Our Role is in place; a RoleBinding with the grant's name, labelled for another image,
    // is not ours (and the watches, which see it, hand it to the writer).
    let mut existing = ExistingGrants::default();
    existing
        .roles
        .insert("ims-image-centos-web".into(), Arc::new(grant.role()));
    let mut foreign = grant.binding();
    foreign.metadata.labels = labelled("ims-image-centos-web", Some("ubuntu")).labels;
    existing
        .bindings
        .insert("ims-image-centos-web".into(), Arc::new(foreign));
    let (client, handle) = mock_client();
    let log = serve(handle, |_| None);
    let report = write(&client, &outcome, &existing, &Metrics::default()).await;
    assert_eq!(
        writes(&log),
        vec![
            req("PATCH", format!("{IMS_A}/privateimages/centos-web/status")),
            req("PATCH", format!("{IMS_A}/imageshares/share/status")),
        ],
        "neither written nor pruned"
    );
    let fault = report.grant_faults[0].1.as_ref().expect("a fault");
    assert_eq!(fault.reason, AccessReason::GrantNameTaken);
    assert!(
        fault.message.contains("RoleBinding ims-image-centos-web"),
        "{}",
        fault.message
    );

    // Not even a stale grant with that label set is pruned once the image needs no grant.
    let (img, sh, _, _) = converged(false);
    let pending = Evaluator::new().tenant(&snapshot((img, sh, None)), "tenant-a");
    assert!(pending.grants.is_empty());
    let report = write(&client, &pending, &existing, &Metrics::default()).await;
    assert_eq!(report.stats.grant_deletes, 1);
    let deletes: Vec<_> = writes(&log).into_iter().filter(|(m, _)| m == "DELETE").collect();
    assert_eq!(
        deletes,
        vec![req("DELETE", format!("{RBAC_A}/roles/ims-image-centos-web"))]
    );
}

fn synced_cache(objects: (PrivateImage, ImageShare, Option<ShareAcceptance>)) -> Arc<Cache> {
    synced_cache_of(vec![objects.0], vec![objects.1], objects.2.into_iter().collect())
}

fn synced_cache_of(
    images: Vec<PrivateImage>,
    shares: Vec<ImageShare>,
    acceptances: Vec<ShareAcceptance>,
) -> Arc<Cache> {
    let cache = Arc::new(Cache::new(Config::default(), false).unwrap());
    for ns in ["tenant-a", "tenant-b"] {
        Namespace::store(&cache, Arc::new(tenant(ns)));
    }
    for i in images {
        PrivateImage::store(&cache, Arc::new(i));
    }
    for s in shares {
        ImageShare::store(&cache, Arc::new(s));
    }
    for a in acceptances {
        ShareAcceptance::store(&cache, Arc::new(a));
    }
    cache.with_snapshot(converge);
    cache.expect_feeds(6);
    for _ in 0..6 {
        cache.mark_synced();
    }
    assert!(cache.is_synced());
    cache
}

fn tenant(ns: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn context(client: Client, cache: Arc<Cache>) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        cache,
        Arc::new(State::default()),
        Fence::open(),
        None,
    ))
}

/// The requeue delay of an action (kube-runtime keeps it private; its Debug form shows it).
fn requeue_after(action: &Action) -> Duration {
    let text = format!("{action:?}");
    let inner = text
        .split("Some(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no requeue in {text}"));
    let (number, unit_nanos) = [("ms", 1_000_000u128), ("µs", 1_000), ("ns", 1), ("s", 1_000_000_000)]
        .into_iter()
        .find_map(|(suffix, nanos)| inner.strip_suffix(suffix).map(|n| (n, nanos)))
        .unwrap_or_else(|| panic!("a duration: {inner}"));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let mut nanos = whole.parse::<u128>().unwrap() * unit_nanos;
    if !fraction.is_empty() {
        nanos += fraction.parse::<u128>().unwrap() * unit_nanos / 10u128.pow(fraction.len() as u32);
    }
    let wait = Duration::from_nanos(nanos as u64);
    assert_eq!(Action::requeue(wait), *action, "{text} read as {wait:?}");
    wait
}

/// The ceiling of the `n`-th consecutive failure's wait.
fn ceiling(n: usize) -> Duration {
    Duration::from_secs(1 << n.min(9)).min(MAX_BACKOFF)
}

fn within_jitter(n: usize, wait: Duration) {
    let top = ceiling(n);
    assert!(
        top / 2 <= wait && wait <= top,
        "failure {n}: {wait:?} not within [{:?}, {top:?}]",
        top / 2
    );
}

#[tokio::test]
async fn a_conflict_fails_the_reconcile_and_retries_with_growing_backoff() {
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, Some(acceptance())));
    let (client, handle) = mock_client();
    let log = serve(handle, |seen| {
        (seen.method == "PATCH" && seen.path.contains("/roles/")).then_some(Reply::Fail(StatusCode::CONFLICT))
    });
    let ctx = context(client, cache.clone());
    let ns = Arc::new(tenant("tenant-a"));

    let mut waits = Vec::new();
    for round in 1..=3 {
        let err = controller::reconcile(ns.clone(), ctx.clone())
            .await
            .expect_err("a 409 fails the reconcile");
        assert_eq!(err.metric_reason(), "Conflict");
        let Error::Writes { failed, first, .. } = &err;
        assert_eq!(*failed, 1, "{first}");
        let role_applies = writes(&log)
            .iter()
            .filter(|w| **w == req("PATCH", format!("{RBAC_A}/roles/ims-image-centos-web")))
            .count();
        assert_eq!(role_applies, round);
        waits.push(requeue_after(&controller::error_policy(ns.clone(), &err, ctx.clone())));
    }
    for (n, wait) in waits.iter().enumerate() {
        within_jitter(n, *wait);
    }
    assert_ne!(
        waits,
        [1, 2, 4].map(Duration::from_secs),
        "the waits are jittered, not the bare doubling"
    );
    let fault = cache.with_snapshot(|s| s.grant_fault("tenant-a", "centos-web").cloned());
    assert_eq!(fault.map(|f| f.reason), Some(AccessReason::GrantWriteFailed));
    // Each refused write is also reported as a Warning Event.
    let warned = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_event() && s.body["reason"] == "WriteFailed")
        .count();
    assert!(warned >= 1, "a WriteFailed event");
    assert_eq!(backoff_with(0, 0.0), Duration::from_millis(500));
    assert_eq!(backoff_with(2, 1.0), Duration::from_secs(4));
    assert_eq!(backoff_with(8, 1.0), Duration::from_secs(256));
    assert_eq!(backoff_with(30, 1.0), MAX_BACKOFF);
    assert_eq!(MAX_BACKOFF, Duration::from_secs(300));
    let metrics = ctx.state.metrics_text();
    assert!(
        metrics.contains("ims_reconcile_errors_total{reason=\"Conflict\"} 3"),
        "{metrics}"
    );
    assert_eq!(ctx.state.metrics.write_errors(WriteKind::Grant, "Conflict"), 3);
}

#[tokio::test]
async fn a_storm_of_refused_writes_retries_with_bounded_jittered_waits() {
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, Some(acceptance())));
    let (client, handle) = mock_client();
    let storm = Arc::new(AtomicBool::new(true));
    let raging = storm.clone();
    let log = serve(handle, move |seen| {
        let write = matches!(seen.method.as_str(), "PATCH" | "DELETE") && !seen.is_event();
        (write && raging.load(Ordering::SeqCst)).then_some(Reply::Fail(StatusCode::INTERNAL_SERVER_ERROR))
    });
    let ctx = context(client, cache);
    let ns = Arc::new(tenant("tenant-a"));

    // Every write answered 500: each reconcile fails with all three refused, and is retried.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let err = controller::reconcile(ns.clone(), ctx.clone())
            .await
            .expect_err("500s fail the reconcile");
        let Error::Writes { failed, reason, .. } = &err;
        assert_eq!((*failed, *reason), (3, "ServerError"));
        waits.push(requeue_after(&controller::error_policy(ns.clone(), &err, ctx.clone())));
    }
    assert_eq!(ctx.state.metrics.write_errors(WriteKind::Status, "ServerError"), 10);
    assert_eq!(ctx.state.metrics.write_errors(WriteKind::Grant, "ServerError"), 5);
    // A storm of conflicts continues it, up to the cap and beyond.
    let conflict = Error::Writes {
        failed: 1,
        first: "applying Role ims-image-centos-web: conflict (409)".into(),
        reason: "Conflict",
    };
    for _ in 5..16 {
        waits.push(requeue_after(&controller::error_policy(
            ns.clone(),
            &conflict,
            ctx.clone(),
        )));
    }
    for (n, wait) in waits.iter().enumerate() {
        within_jitter(n, *wait);
        assert!(*wait <= MAX_BACKOFF);
    }
    // Up to the ninth failure (256 s) the jitter ranges of consecutive failures touch, so the
    // waits never shrink; from then on they stay in the capped range.
    assert!(waits[..9].windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    assert!(waits[9..].iter().all(|w| *w >= MAX_BACKOFF / 2), "{waits:?}");
    assert!(
        waits.iter().enumerate().any(|(n, w)| *w != ceiling(n)),
        "jittered: {waits:?}"
    );
    // Another namespace's failures are counted on their own.
    let other = Arc::new(tenant("tenant-b"));
    within_jitter(
        0,
        requeue_after(&controller::error_policy(other, &conflict, ctx.clone())),
    );
    let metrics = ctx.state.metrics_text();
    assert!(
        metrics.contains("ims_reconcile_errors_total{reason=\"ServerError\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ims_reconcile_errors_total{reason=\"Conflict\"} 12"),
        "{metrics}"
    );

    // Once the writes succeed again, the backoff starts over.
    storm.store(false, Ordering::SeqCst);
    let before = writes(&log).len();
    controller::reconcile(ns.clone(), ctx.clone())
        .await
        .expect("the storm is over");
    assert!(writes(&log).len() > before);
    within_jitter(0, requeue_after(&controller::error_policy(ns, &conflict, ctx.clone())));
}

#[tokio::test]
async fn a_reconcile_writes_an_image_offer_in_one_apply_and_deletes_a_withdrawn_one() {
    // tenant-a offers centos-web to tenant-b, whose inbox does not hold that ImageOffer yet; it
    // still holds one of tenant-c, which offers it nothing (any more).
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, None));
    ImageOffer::forget(&cache, "tenant-b", "tenant-a");
    let stale = ImageOfferStatus {
        images: serde_json::from_value(json!([{
            "name": "old", "state": "Pending", "imageType": "SystemDisk", "architecture": "x86_64", "diskSizeGiB": 10,
        }]))
        .unwrap(),
        pending: 1,
        ..Default::default()
    };
    ImageOffer::store(&cache, Arc::new(ImageOffer::of("tenant-b", "tenant-c", stale)));
    let (client, handle) = mock_client();
    let log = serve(handle, |_| None);
    let ctx = context(client, cache.clone());
    let b = Arc::new(tenant("tenant-b"));
    controller::reconcile(b.clone(), ctx.clone())
        .await
        .expect("the writes succeed");

    // One server-side apply of the whole object (no status subresource), one delete.
    assert_eq!(
        writes(&log),
        vec![
            req("PATCH", format!("{IMS_B}/imageoffers/tenant-a")),
            req("DELETE", format!("{IMS_B}/imageoffers/tenant-c")),
        ]
    );
    let sent: Vec<Seen> = log.lock().unwrap().clone();
    let apply = &sent[0];
    assert!(
        apply.query.contains("fieldManager=ims-operator-offers") && apply.query.contains("force=true"),
        "{}",
        apply.query
    );
    let offer = &apply.body;
    assert_eq!(offer["apiVersion"], "ims.imageshare.io/v1alpha1");
    assert_eq!(offer["kind"], "ImageOffer");
    assert_eq!(offer["metadata"]["name"], "tenant-a");
    assert_eq!(
        offer["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "ims-operator", "ims.imageshare.io/owner": "tenant-a"})
    );
    assert_eq!(offer["spec"], json!({"owner": "tenant-a"}));
    let status = &offer["status"];
    assert_eq!(
        [
            &status["pending"],
            &status["accepted"],
            &status["rejected"],
            &status["removed"]
        ],
        [&json!(1), &json!(0), &json!(0), &json!(0)]
    );
    let images = status["images"].as_array().expect("a list of images");
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(
        (&images[0]["name"], &images[0]["state"], &images[0]["diskSizeGiB"]),
        (&json!("centos-web"), &json!("Pending"), &json!(40))
    );
    assert!(
        images[0].get("source").is_none(),
        "no source while Pending: {}",
        images[0]
    );
    assert!(
        images[0].get("decidedBy").is_none(),
        "nobody decided yet: {}",
        images[0]
    );
    assert_eq!(ctx.state.metrics.status_patches(), 1);
    // The recipient is told, on the ImageOffers.
    let told: Vec<(String, String)> = sent
        .iter()
        .filter(|s| s.is_event())
        .map(|s| {
            let regarding = &s.body["regarding"];
            (
                format!(
                    "{}/{}",
                    regarding["kind"].as_str().unwrap(),
                    regarding["name"].as_str().unwrap()
                ),
                s.body["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        told.contains(&("ImageOffer/tenant-a".into(), "ImageOffered".into())),
        "{told:?}"
    );
    assert!(
        told.contains(&("ImageOffer/tenant-c".into(), "OfferWithdrawn".into())),
        "{told:?}"
    );

    // The watch brings the written ImageOffer and the delete: the next reconcile writes nothing.
    let mut written: ImageOffer = serde_json::from_value(offer.clone()).unwrap();
    written.metadata.namespace = Some("tenant-b".into());
    ImageOffer::store(&cache, Arc::new(written));
    ImageOffer::forget(&cache, "tenant-b", "tenant-c");
    let before = writes(&log).len();
    controller::reconcile(b, ctx).await.expect("nothing to write");
    assert_eq!(writes(&log).len(), before, "{:?}", &writes(&log)[before..]);
}

#[tokio::test]
async fn a_namespace_being_deleted_gets_no_write_at_all() {
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, Some(acceptance())));
    let (client, mut handle) = mock_client();
    let ctx = context(client, cache);
    let mut ns = tenant("tenant-a");
    ns.metadata.deletion_timestamp = Some(Time(now()));
    let action = controller::reconcile(Arc::new(ns), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "no request was sent");
}

fn sink(
    cache: Arc<Cache>,
) -> (
    FeedSink,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::mpsc::UnboundedReceiver<UnreadableReport>,
) {
    let (triggers, triggered) = tokio::sync::mpsc::unbounded_channel();
    let (invalid, reports) = tokio::sync::mpsc::unbounded_channel();
    let sink = FeedSink {
        cache,
        state: Arc::new(State::default()),
        triggers,
        invalid,
    };
    (sink, triggered, reports)
}

/// Feeds a sequence of watch events; returns the tenants it asked to reconcile and the
/// unreadable objects it reported.
async fn feed_events<K>(
    cache: Arc<Cache>,
    kind: &'static str,
    events: Vec<watcher::Event<Guarded<K>>>,
) -> (std::collections::BTreeSet<String>, Vec<UnreadableReport>)
where
    K: Cached + ims_operator::controller::guard::Salvage,
{
    let (sink, mut triggered, mut invalid) = sink(cache);
    let stream = futures::stream::iter(events.into_iter().map(Ok));
    feed_guarded::<K>(kind, stream, sink).await;
    let mut touched = std::collections::BTreeSet::new();
    while let Ok(ns) = triggered.try_recv() {
        touched.insert(ns);
    }
    let mut reports = Vec::new();
    while let Ok(r) = invalid.try_recv() {
        reports.push(r);
    }
    (touched, reports)
}

#[tokio::test]
async fn an_acceptance_deleted_while_the_watch_was_down_reconciles_its_owner_too() {
    use watcher::Event;
    let (img, sh, acc, _) = converged(true);
    let cache = synced_cache((img, sh, acc));
    // The relist after a watch outage no longer holds the acceptance.
    let (touched, _) =
        feed_events::<ShareAcceptance>(cache.clone(), "ShareAcceptance", vec![Event::Init, Event::InitDone]).await;
    assert!(
        touched.contains("tenant-a") && touched.contains("tenant-b"),
        "{touched:?}"
    );
    // And an update that changes what an object relates to tells both the old and the new side.
    let mut s = share();
    s.spec.recipients = vec!["tenant-c".into()];
    let (touched, _) = feed_events::<ImageShare>(cache, "ImageShare", vec![Event::Apply(Guarded(Ok(s)))]).await;
    assert_eq!(touched, ["tenant-a", "tenant-b", "tenant-c"].map(String::from).into());
}

fn guarded_acceptance(name: &str, version: &str, images: &[&str], decision: Value) -> Guarded<ShareAcceptance> {
    serde_json::from_value(json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ShareAcceptance",
        "metadata": {
            "name": name, "namespace": "tenant-b", "uid": format!("uid-{name}"),
            "resourceVersion": version, "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"owner": "tenant-a", "images": images, "decision": decision},
    }))
    .unwrap()
}

/// Image x of tenant-a, offered to tenant-b and recorded Pending in the share's status.
fn offered_x() -> Arc<Cache> {
    let x = image_in("tenant-a", "x", "uid-x");
    let sh = share_of(&["x"]);
    let snap = snapshot_of(vec![x.clone()], vec![sh.clone()], vec![]);
    let a = Evaluator::new().tenant(&snap, "tenant-a");
    let (mut x, mut sh) = (x, sh);
    x.status = Some(a.images[0].status.clone());
    sh.status = Some(a.shares[0].status.clone());
    assert_eq!(a.shares[0].status.images[0].pending, vec![Arc::<str>::from("tenant-b")]);
    synced_cache_of(vec![x], vec![sh], vec![])
}

/// The state of (x, tenant-b) the owner's evaluation decides, and how many grants it wants.
fn pair_of_x(cache: &Cache) -> (&'static str, usize) {
    let (outcome, _, _) = cache.evaluate("tenant-a", now());
    let image = &outcome.shares[0].status.images[0];
    assert_eq!(image.name, "x");
    let b = "tenant-b".to_string();
    let state = [
        ("Pending", &image.pending),
        ("Accepted", &image.accepted),
        ("Rejected", &image.rejected),
        ("Removed", &image.removed),
    ]
    .into_iter()
    .find(|(_, list)| list.iter().any(|r| **r == *b))
    .map_or("NotOffered", |(state, _)| state);
    (state, outcome.grants.len())
}

#[tokio::test]
async fn an_unreadable_version_of_a_reject_keeps_the_reject() {
    use watcher::Event;
    let cache = offered_x();
    let reject = guarded_acceptance("reject-x", "1", &["x"], json!("Reject"));
    let accept_all = guarded_acceptance("accept-all", "2", &[], json!("Accept"));
    assert!(reject.0.is_ok() && accept_all.0.is_ok());
    let (_, reports) = feed_events::<ShareAcceptance>(
        cache.clone(),
        "ShareAcceptance",
        vec![Event::Apply(reject), Event::Apply(accept_all)],
    )
    .await;
    assert!(reports.is_empty());
    assert_eq!(pair_of_x(&cache), ("Rejected", 0), "the named Reject beats accept-all");

    // Its next version does not decode: the Reject that was read stays in use.
    let broken = guarded_acceptance("reject-x", "3", &["x"], json!(7));
    assert!(broken.0.is_err(), "decision 7 does not decode");
    let (touched, reports) =
        feed_events::<ShareAcceptance>(cache.clone(), "ShareAcceptance", vec![Event::Apply(broken.clone())]).await;
    assert!(touched.contains("tenant-a"), "{touched:?}");
    assert_eq!(reports.len(), 1);
    assert!(reports[0].kept_last_version);
    assert_eq!(reports[0].metadata.name.as_deref(), Some("reject-x"));
    assert!(cache.is_unreadable("ShareAcceptance", "tenant-b", "reject-x"));
    assert!(cache.with_snapshot(|s| s.unreadable().acceptances.is_empty()));
    assert_eq!(pair_of_x(&cache), ("Rejected", 0));

    // Only when it is gone does accept-all decide.
    feed_events::<ShareAcceptance>(cache.clone(), "ShareAcceptance", vec![Event::Delete(broken)]).await;
    assert!(!cache.is_unreadable("ShareAcceptance", "tenant-b", "reject-x"));
    assert_eq!(pair_of_x(&cache), ("Accepted", 1));
}

#[tokio::test]
async fn a_never_decoded_acceptance_keeps_a_pending_pair_pending() {
    use watcher::Event;
    let cache = offered_x();
    let accept_all = guarded_acceptance("accept-all", "1", &[], json!("Accept"));
    feed_events::<ShareAcceptance>(cache.clone(), "ShareAcceptance", vec![Event::Apply(accept_all)]).await;
    assert_eq!(pair_of_x(&cache), ("Accepted", 1), "accept-all alone accepts");

    let unknown = guarded_acceptance("mystery", "2", &["x"], json!(7));
    assert!(unknown.0.is_err());
    let (touched, reports) =
        feed_events::<ShareAcceptance>(cache.clone(), "ShareAcceptance", vec![Event::Apply(unknown.clone())]).await;
    assert!(
        touched.contains("tenant-a"),
        "the owners sharing with tenant-b: {touched:?}"
    );
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].kept_last_version);
    let recorded = cache.with_snapshot(|s| s.unreadable().acceptances.get("tenant-b").cloned());
    assert_eq!(recorded, Some(["mystery".to_string()].into()));
    // It might be a Reject of x: the pair keeps its recorded state, and nothing is granted.
    assert_eq!(pair_of_x(&cache), ("Pending", 0));

    feed_events::<ShareAcceptance>(cache.clone(), "ShareAcceptance", vec![Event::Delete(unknown)]).await;
    assert_eq!(pair_of_x(&cache), ("Accepted", 1));
}

#[tokio::test]
async fn a_reconcile_waits_until_the_watch_brought_back_its_own_status_writes() {
    let (img, sh, _, _) = converged(false);
    let cache = synced_cache((img, sh, Some(acceptance())));
    let (client, mut handle) = mock_client();
    let ctx = context(client, cache.clone());
    let ns = Arc::new(tenant("tenant-a"));
    let run = tokio::spawn(controller::reconcile(ns.clone(), ctx.clone()));
    respond(&mut handle, StatusCode::NOT_FOUND, Value::Null).await; // GET Role
    respond(&mut handle, StatusCode::OK, Value::Null).await; // Role
    respond(&mut handle, StatusCode::NOT_FOUND, Value::Null).await; // GET RoleBinding
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

// --- The leader lease fences writes ---

/// Sets its flag when dropped: shows that a guarded write's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn lease_held_by(holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ims-operator", "namespace": "ims-system", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15,
            "acquireTime": Timestamp::now().to_string(), "renewTime": Timestamp::now().to_string(),
            "leaseTransitions": 0,
        },
    })
}

/// The lease is free: the first GET finds nothing, the create succeeds. Renewals are answered
/// by `renewal` (after the lease was created).
fn lease_rule(mut renewal: impl FnMut(&Seen) -> Reply + Send + 'static) -> impl FnMut(&Seen) -> Option<Reply> + Send {
    let mut created = false;
    move |seen| {
        if !seen.is_lease() {
            return None;
        }
        if seen.method == "POST" {
            created = true;
            return None;
        }
        created.then(|| renewal(seen))
    }
}

/// A status apply through the fence, for a write against the mock API.
fn guarded_write(
    client: &Client,
    fence: &Fence,
    name: &str,
    dropped: Option<Arc<AtomicBool>>,
) -> impl std::future::Future<Output = Result<kube::Result<PrivateImage>, Fenced>> + Send + 'static {
    let api: Api<PrivateImage> = Api::namespaced(client.clone(), "tenant-a");
    let (fence, name) = (fence.clone(), name.to_string());
    async move {
        let write = async move {
            let _flag = dropped.map(DropFlag);
            let body = json!({"apiVersion": "ims.imageshare.io/v1alpha1", "kind": "PrivateImage", "status": {}});
            api.patch_status(&name, &PatchParams::apply("test").force(), &Patch::Apply(body))
                .await
        };
        fence.guard(write).await
    }
}

fn lease_requests(log: &Log) -> Vec<(String, Duration)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_lease())
        .map(|s| (s.method.clone(), s.at))
        .collect()
}

fn near(at: Duration, secs: f64) -> bool {
    let want = Duration::from_secs_f64(secs);
    at >= want && at - want < Duration::from_millis(5)
}

#[tokio::test(start_paused = true)]
async fn writes_are_fenced_once_renewals_fail_past_the_renew_deadline() {
    let (client, handle) = mock_client();
    let mut lease = lease_rule(|_| Reply::Fail(StatusCode::INTERNAL_SERVER_ERROR));
    let log = serve(handle, move |seen| {
        // The mock never answers this write.
        if seen.path.ends_with("/in-flight/status") {
            return Some(Reply::Hang);
        }
        lease(seen)
    });
    let elector = Arc::new(LeaderElector::new(client.clone(), "ims-system", "ims-operator", "me"));
    let fence = elector.fence();
    assert!(!fence.is_open());
    assert_eq!(fence.guard(async {}).await, Err(Fenced), "not the leader yet");

    let t0 = Instant::now();
    elector.acquire().await;
    assert!(fence.is_open());
    assert_eq!(
        lease_requests(&log),
        vec![
            ("GET".to_string(), Duration::ZERO),
            ("POST".to_string(), Duration::ZERO)
        ]
    );
    let holder = tokio::spawn({
        let elector = elector.clone();
        async move {
            elector.hold().await;
            t0.elapsed()
        }
    });

    // Renewals fail, but the lease is valid until the renew deadline: writes still go through.
    tokio::time::sleep_until(t0 + Duration::from_secs(9)).await;
    assert!(fence.is_open());
    let written = guarded_write(&client, &fence, "before", None).await;
    assert!(matches!(written, Ok(Ok(_))), "{written:?}");

    // A write in flight when the deadline passes is cancelled: no response is awaited.
    let dropped = Arc::new(AtomicBool::new(false));
    let result = guarded_write(&client, &fence, "in-flight", Some(dropped.clone())).await;
    let at = t0.elapsed();
    assert_eq!(result.map(|_| ()), Err(Fenced));
    assert!(near(at, 10.0), "cancelled at the renew deadline, not at {at:?}");
    assert!(dropped.load(Ordering::SeqCst), "the request's future was dropped");
    assert!(!fence.is_open());

    // After the deadline nothing is even started.
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let refused = fence.guard(async move { flag.store(true, Ordering::SeqCst) }).await;
    assert_eq!(refused, Err(Fenced));
    assert!(!polled.load(Ordering::SeqCst));

    let stepped_down = holder.await.unwrap();
    assert!(
        near(stepped_down, 10.0),
        "hold gave up at the deadline, not at {stepped_down:?}"
    );
    // Renewal attempts every RETRY_PERIOD, all refused.
    let renewals: Vec<Duration> = lease_requests(&log)[2..].iter().map(|(_, at)| *at).collect();
    assert!(renewals.len() >= 4, "{renewals:?}");
    for (i, at) in renewals.iter().take(4).enumerate() {
        assert!(near(*at, 2.0 * (i + 1) as f64), "renewal {i} at {at:?}");
    }
    let paths: Vec<_> = writes(&log)
        .into_iter()
        .filter(|(_, p)| !p.contains("/leases"))
        .collect();
    assert_eq!(
        paths,
        vec![
            req("PATCH", format!("{IMS_A}/privateimages/before/status")),
            req("PATCH", format!("{IMS_A}/privateimages/in-flight/status")),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_does_not_outlive_the_renew_deadline() {
    let (client, handle) = mock_client();
    let mut lease = lease_rule(|_| Reply::Hang);
    let log = serve(handle, move |seen| {
        if seen.path.ends_with("/in-flight/status") {
            return Some(Reply::Hang);
        }
        lease(seen)
    });
    let elector = Arc::new(LeaderElector::new(client.clone(), "ims-system", "ims-operator", "me"));
    let fence = elector.fence();
    let t0 = Instant::now();
    elector.acquire().await;
    let holder = tokio::spawn({
        let elector = elector.clone();
        async move {
            elector.hold().await;
            t0.elapsed()
        }
    });
    // A write that starts at 3 s and is never answered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let in_flight = tokio::spawn({
        let write = guarded_write(&client, &fence, "in-flight", Some(dropped.clone()));
        async move { (write.await.map(|_| ()), t0.elapsed()) }
    });
    tokio::time::sleep_until(t0 + Duration::from_millis(9_990)).await;
    assert!(fence.is_open(), "valid until the renew deadline");
    assert_eq!(fence.guard(async { 1 }).await, Ok(1));
    assert!(!in_flight.is_finished());

    let (result, at) = in_flight.await.unwrap();
    assert_eq!(result, Err(Fenced));
    assert!(near(at, 10.0), "cancelled at {at:?}");
    assert!(dropped.load(Ordering::SeqCst));
    let stepped_down = holder.await.unwrap();
    assert!(near(stepped_down, 10.0), "hold gave up at {stepped_down:?}");
    assert!(!fence.is_open());
    assert_eq!(fence.guard(async { 1 }).await, Err(Fenced));
    // One renewal was sent at 2 s and never answered; it was not retried past the deadline.
    let lease = lease_requests(&log);
    assert_eq!(lease.len(), 3, "{lease:?}");
    assert_eq!(lease[2].0, "GET");
    assert!(near(lease[2].1, 2.0), "{lease:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_by_another_replica_closes_the_fence_at_once() {
    let (client, handle) = mock_client();
    let mut lease = lease_rule(|_| Reply::Ok(StatusCode::OK, lease_held_by("other")));
    let log = serve(handle, move |seen| {
        if seen.path.ends_with("/in-flight/status") {
            return Some(Reply::Hang);
        }
        lease(seen)
    });
    let elector = Arc::new(LeaderElector::new(client.clone(), "ims-system", "ims-operator", "me"));
    let fence = elector.fence();
    let t0 = Instant::now();
    elector.acquire().await;
    let holder = tokio::spawn({
        let elector = elector.clone();
        async move {
            elector.hold().await;
            t0.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let in_flight = tokio::spawn({
        let write = guarded_write(&client, &fence, "in-flight", Some(dropped.clone()));
        async move { (write.await.map(|_| ()), t0.elapsed()) }
    });
    // The first renewal, at 2 s, finds the lease held by another identity.
    let stepped_down = holder.await.unwrap();
    assert!(near(stepped_down, 2.0), "stepped down at {stepped_down:?}");
    assert!(!fence.is_open(), "closed long before the renew deadline");
    let (result, at) = in_flight.await.unwrap();
    assert_eq!(result, Err(Fenced));
    assert!(near(at, 2.0), "the write in flight was cancelled at {at:?}");
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(fence.guard(async { 1 }).await, Err(Fenced));
    // It only read the lease: nothing was written over the other holder.
    let lease = lease_requests(&log);
    assert_eq!(
        lease.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        ["GET", "POST", "GET"]
    );
}

#[tokio::test]
async fn release_fences_writes_first_then_clears_the_holder() {
    let (client, mut handle) = mock_client();
    let elector = Arc::new(LeaderElector::new(client.clone(), "ims-system", "ims-operator", "me"));
    let fence = elector.fence();
    let acquire = tokio::spawn({
        let elector = elector.clone();
        async move { elector.acquire().await }
    });
    let (m, path, _, _) = respond(&mut handle, StatusCode::NOT_FOUND, Value::Null).await;
    assert_eq!((m, path), req("GET", LEASE.to_string()));
    let (m, _, _, created) = respond(&mut handle, StatusCode::CREATED, Value::Null).await;
    assert_eq!(m, "POST");
    assert_eq!(created["spec"]["holderIdentity"], "me");
    acquire.await.unwrap();
    assert!(fence.is_open());

    // A write in flight when the shutdown begins.
    let dropped = Arc::new(AtomicBool::new(false));
    let in_flight = tokio::spawn(guarded_write(&client, &fence, "in-flight", Some(dropped.clone())));
    let (request, _unanswered) = handle.next_request().await.expect("the write is sent");
    assert!(request.uri().path().ends_with("/in-flight/status"));

    let release = tokio::spawn({
        let elector = elector.clone();
        async move { elector.release().await }
    });
    // By the time release reads the lease, the fence is closed.
    let (request, send) = handle.next_request().await.expect("release reads the lease");
    assert_eq!((request.method().as_str(), request.uri().path()), ("GET", LEASE));
    assert!(!fence.is_open());
    assert_eq!(in_flight.await.unwrap().map(|_| ()), Err(Fenced));
    assert!(dropped.load(Ordering::SeqCst), "the write in flight was dropped");
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    assert_eq!(
        fence.guard(async move { flag.store(true, Ordering::SeqCst) }).await,
        Err(Fenced)
    );
    assert!(!polled.load(Ordering::SeqCst), "a refused write is never started");

    reply(send, StatusCode::OK, &lease_held_by("me"));
    let (m, path, _, put) = respond(&mut handle, StatusCode::OK, Value::Null).await;
    assert_eq!((m, path), req("PUT", LEASE.to_string()));
    assert!(
        put["spec"].get("holderIdentity").is_none_or(Value::is_null),
        "the holder is cleared: {put}"
    );
    assert_eq!(put["metadata"]["resourceVersion"], "7", "a replace of the version read");
    release.await.unwrap();
    assert_eq!(fence.guard(async { 1 }).await, Err(Fenced));
    drop((elector, client, fence));
    assert!(handle.next_request().await.is_none(), "nothing else was sent");
}

#[tokio::test(start_paused = true)]
async fn the_fence_closes_by_its_own_clock_even_without_a_renewal_loop() {
    // A renewal loop that stalls (here: none runs at all) must not keep writes open.
    let (client, handle) = mock_client();
    let mut lease = lease_rule(|_| Reply::Hang);
    let log = serve(handle, move |seen| {
        if seen.path.ends_with("/in-flight/status") {
            return Some(Reply::Hang);
        }
        lease(seen)
    });
    let elector = LeaderElector::new(client.clone(), "ims-system", "ims-operator", "me");
    let fence = elector.fence();
    let t0 = Instant::now();
    elector.acquire().await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let result = guarded_write(&client, &fence, "in-flight", Some(dropped.clone())).await;
    let at = t0.elapsed();
    assert_eq!(result.map(|_| ()), Err(Fenced));
    assert!(near(at, 10.0), "cancelled at {at:?}");
    assert!(dropped.load(Ordering::SeqCst));
    assert!(!fence.is_open());
    assert_eq!(lease_requests(&log).len(), 2, "only the acquisition");
}

#[tokio::test]
async fn quota_writes_create_update_and_delete() {
    // A tenant without its ImageQuota: the object is created (server-side apply), then its
    // status written.
    let mut snap = snapshot((image(), share(), None));
    snap.set_quota("tenant-a", None);
    let outcome = Evaluator::new().tenant(&snap, "tenant-a");
    let QuotaUpdate::Apply { create: true, status } = outcome.quota.clone() else {
        panic!("{:?}", outcome.quota)
    };
    assert_eq!(
        (
            status.used.private_images,
            status.used.shared_images,
            status.hard.private_images
        ),
        (1, 1, 10)
    );
    assert_eq!(status.summary.private_images, "1/10");
    let quota_only = TenantOutcome {
        namespace: "tenant-a".into(),
        quota: outcome.quota.clone(),
        ..Default::default()
    };
    let (client, handle) = mock_client();
    let log = serve(handle, |_| None);
    let report = write(&client, &quota_only, &ExistingGrants::default(), &Metrics::default()).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let quota_path = format!("{IMS_A}/imagequotas/ims");
    assert_eq!(
        writes(&log),
        vec![
            req("PATCH", quota_path.clone()),
            req("PATCH", format!("{quota_path}/status"))
        ]
    );
    let sent: Vec<Seen> = log.lock().unwrap().clone();
    assert!(
        sent[0].query.contains("fieldManager=ims-operator-quota"),
        "{}",
        sent[0].query
    );
    assert_eq!(
        sent[0].body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "ims-operator"
    );
    assert_eq!(sent[1].body["status"]["summary"]["sharedImages"], "1/30");

    // Converged: nothing. A lowered limit: the status alone.
    snap.set_quota("tenant-a", Some(Arc::new(quota_object("tenant-a", status))));
    assert_eq!(Evaluator::new().tenant(&snap, "tenant-a").quota, QuotaUpdate::Unchanged);
    let mut annotated = NamespaceInfo::default();
    annotated
        .annotations
        .insert("ims.imageshare.io/limit.private-images".into(), "5".into());
    snap.upsert_namespace("tenant-a", annotated);
    let QuotaUpdate::Apply { create: false, status } = Evaluator::new().tenant(&snap, "tenant-a").quota else {
        panic!("the status is updated")
    };
    assert_eq!(status.summary.private_images, "1/5");

    // Nothing left to count, no annotation: the quota goes.
    let mut empty = snapshot_of(vec![], vec![], vec![]);
    empty.set_quota(
        "tenant-a",
        Some(Arc::new(quota_object("tenant-a", ImageQuotaStatus::default()))),
    );
    let outcome = Evaluator::new().tenant(&empty, "tenant-a");
    assert_eq!(outcome.quota, QuotaUpdate::Delete);
    let (client, handle) = mock_client();
    let log = serve(handle, |_| None);
    let report = write(&client, &outcome, &ExistingGrants::default(), &Metrics::default()).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(writes(&log), vec![req("DELETE", quota_path)]);
}

#[tokio::test]
async fn our_binding_to_a_role_someone_else_replaced_is_deleted() {
    // Our grant was in place; then someone replaced the Role with their own of the same name
    // (the watch no longer sees it: it lost the label). The binding of ours would hand out
    // whatever that Role allows: it goes, with the uid of the object the operator made.
    let (img, sh, acc, grants) = converged(true);
    let outcome = Evaluator::new().tenant(&snapshot((img, sh, acc)), "tenant-a");
    let mut existing = ExistingGrants::default();
    let mut ours = grants.bindings["ims-image-centos-web"].as_ref().clone();
    ours.metadata.uid = Some("uid-our-binding".into());
    existing.bindings.insert("ims-image-centos-web".into(), Arc::new(ours));
    let (client, handle) = mock_client();
    let log = serve(handle, |seen| {
        (seen.method == "GET" && seen.path.ends_with("/roles/ims-image-centos-web")).then(|| {
            Reply::Ok(
                StatusCode::OK,
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "ims-image-centos-web", "namespace": "tenant-a"},
                    "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
                }),
            )
        })
    });
    let report = write(&client, &outcome, &existing, &Metrics::default()).await;
    assert_eq!(
        writes(&log),
        vec![
            req("GET", format!("{RBAC_A}/roles/ims-image-centos-web")),
            req("DELETE", format!("{RBAC_A}/rolebindings/ims-image-centos-web")),
        ]
    );
    let sent: Vec<Seen> = log.lock().unwrap().clone();
    assert_eq!(
        sent[1].body["preconditions"]["uid"], "uid-our-binding",
        "{}",
        sent[1].body
    );
    assert_eq!(report.stats.grant_deletes, 1);
    assert_eq!(
        report.grant_faults[0].1.as_ref().map(|f| f.reason),
        Some(AccessReason::GrantNameTaken)
    );
}
