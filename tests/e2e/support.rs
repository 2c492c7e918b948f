//! Shared machinery of the end-to-end tests.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use ims_operator::{
    api::{ImageShare, PrivateImage, ShareAcceptance},
    cli::{LogFormat, RunArgs},
    config::Config,
    controller,
};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    authentication::v1::{TokenRequest, TokenRequestSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::GroupVersionKind,
    discovery::Scope,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub const KUBECONFIG_ENV: &str = "IMS_E2E_KUBECONFIG";
/// A shell command that restarts the API server, given the outage in seconds as its argument.
pub const RESTART_ENV: &str = "IMS_E2E_RESTART_APISERVER";
/// How many tenants the tenant-deletion test makes (default 20).
pub const TENANTS_ENV: &str = "IMS_E2E_TENANTS";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The chart is installed (without its workload) into this namespace, as release [`RELEASE`].
pub const SYSTEM_NAMESPACE: &str = "ims-e2e-system";
pub const RELEASE: &str = "ims";
/// The chart's ServiceAccount, ClusterRole and leader-election Lease are all named this.
pub const OPERATOR_NAME: &str = "ims-ims-operator";
/// Kinds of the rendered chart that are not applied: the workload and what serves it (the
/// operator runs in the test process, or as a child process, under the chart's identity).
const SKIPPED_KINDS: [&str; 5] = ["Deployment", "Service", "ServiceMonitor", "ConfigMap", "NetworkPolicy"];

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);
static INSTALLED: tokio::sync::OnceCell<Installed> = tokio::sync::OnceCell::const_new();

/// What the once-per-process installation of the chart produced.
struct Installed {
    /// A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest token),
    /// against the cluster of the admin kubeconfig.
    operator_kubeconfig: Kubeconfig,
}

/// Cluster-scoped objects a test made, deleted at cleanup.
#[derive(Clone, Debug)]
enum ClusterObject {
    Policy(String),
    PolicyBinding(String),
}

/// One test's world: an admin client, its namespaces, and a running operator.
pub struct Env {
    /// Cluster-admin: sets up the tenants' objects and checks results.
    pub client: Client,
    pub prefix: String,
    admin_config: kube::Config,
    namespaces: Vec<String>,
    cluster_objects: Vec<ClusterObject>,
    operator: Option<(
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    /// Where the in-process operator serves /metrics.
    pub metrics_addr: Option<SocketAddr>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Connects, or returns None (after a notice) when no cluster is configured.
pub async fn env(test: &str) -> Option<Env> {
    let Some(path) = std::env::var_os(KUBECONFIG_ENV) else {
        eprintln!("skipping e2e test {test}: set {KUBECONFIG_ENV} to a kubeconfig of a cluster with the CRDs applied");
        return None;
    };
    let serial = SERIAL.lock().await;
    let kubeconfig = Kubeconfig::read_from(&path).expect("IMS_E2E_KUBECONFIG is a readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is usable");
    let client = Client::try_from(config.clone()).expect("a client");
    INSTALLED
        .get_or_init(|| install_chart(client.clone(), kubeconfig))
        .await;
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000;
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_lowercase();
    let prefix = format!("ims-e2e-{short}-{stamp}{n}");
    Some(Env {
        client,
        prefix,
        admin_config: config,
        namespaces: Vec::new(),
        cluster_objects: Vec::new(),
        operator: None,
        metrics_addr: None,
        _serial: serial,
    })
}

/// Renders the chart with its default values, as `helm template` does.
fn render_chart() -> String {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ims-operator");
    let out = std::process::Command::new("helm")
        .args(["template", RELEASE, chart, "--namespace", SYSTEM_NAMESPACE])
        .output()
        .unwrap_or_else(|e| panic!("running helm (install it: bash .ci/install-helm.sh): {e}"));
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// Server-side applies one manifest of any kind, as the admin.
pub async fn apply_any(client: &Client, manifest: &Value) {
    let (group, version) = match manifest["apiVersion"].as_str().expect("apiVersion").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), manifest["apiVersion"].as_str().unwrap().to_string()),
    };
    let kind = manifest["kind"].as_str().expect("kind");
    let name = manifest["metadata"]["name"].as_str().expect("name");
    let gvk = GroupVersionKind::gvk(&group, &version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovering {kind}: {e}"));
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = manifest["metadata"]["namespace"].as_str().unwrap_or(SYSTEM_NAMESPACE);
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    };
    api.patch(name, &PatchParams::apply("ims-e2e").force(), &Patch::Apply(manifest))
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// Once per test process: applies the chart's identity, permissions, policies and CRDs (not
/// its workload), and mints a token for its ServiceAccount.
async fn install_chart(admin: Client, admin_kubeconfig: Kubeconfig) -> Installed {
    let started = std::time::Instant::now();
    let rendered = render_chart();
    let mut docs = Vec::new();
    for doc in ims_operator::yaml::documents(&rendered) {
        let value = doc.expect("the rendered chart is YAML");
        if value.is_null() || SKIPPED_KINDS.contains(&value["kind"].as_str().unwrap_or_default()) {
            continue;
        }
        docs.push(value);
    }
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    apply_any(&admin, &namespace).await;
    // CRDs first, so that whatever refers to the group finds it.
    docs.sort_by_key(|d| d["kind"] != "CustomResourceDefinition");
    let mut kinds = Vec::new();
    for doc in &docs {
        apply_any(&admin, doc).await;
        kinds.push(format!(
            "{}/{}",
            doc["kind"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap()
        ));
    }
    // The CRDs must be established before any test creates objects of them.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    for doc in docs.iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let established = kube::runtime::wait::conditions::is_crd_established();
        tokio::time::timeout(
            TIMEOUT,
            kube::runtime::wait::await_condition(crds.clone(), &name, established),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} established in time"))
        .expect("watching CRDs");
    }
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), SYSTEM_NAMESPACE)
        .create_token_request(
            OPERATOR_NAME,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: Vec::new(),
                    expiration_seconds: Some(4 * 3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("a TokenRequest for the chart's ServiceAccount")
        .status
        .expect("a token")
        .token;
    let operator_kubeconfig = token_kubeconfig(&admin_kubeconfig, &token);
    eprintln!(
        "e2e: applied {} objects of the chart ({}) and minted a token for {}; {:?}",
        kinds.len(),
        kinds.join(", "),
        operator_user(),
        started.elapsed()
    );
    Installed { operator_kubeconfig }
}

/// The username the chart's ServiceAccount authenticates as.
pub fn operator_user() -> String {
    format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{OPERATOR_NAME}")
}

/// A kubeconfig for the cluster of `admin` (same server and CA) with a bearer token.
fn token_kubeconfig(admin: &Kubeconfig, token: &str) -> Kubeconfig {
    let context = admin
        .current_context
        .as_ref()
        .and_then(|c| admin.contexts.iter().find(|n| &n.name == c))
        .or_else(|| admin.contexts.first())
        .and_then(|c| c.context.as_ref())
        .expect("the admin kubeconfig has a context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .expect("the context's cluster");
    let user = operator_user();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [serde_json::to_value(cluster).unwrap()],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster.name, "user": user}}],
        "current-context": "operator",
    }))
    .expect("a kubeconfig")
}

impl Env {
    /// `<prefix>-<suffix>`: a namespace of this test.
    pub fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    pub async fn create_namespace(&mut self, suffix: &str, labels: Value, annotations: Value) -> String {
        let name = self.ns(suffix);
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels, "annotations": annotations}
        }))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        self.namespaces.push(name.clone());
        name
    }

    /// A client authenticated as the chart's ServiceAccount (the operator's identity).
    pub async fn operator_client(&self) -> Client {
        let config = kube::Config::from_custom_kubeconfig(operator_kubeconfig(), &KubeConfigOptions::default())
            .await
            .expect("the operator's kubeconfig is usable");
        Client::try_from(config).expect("a client")
    }

    /// A client of the admin impersonating `user` (with the group every authenticated user has).
    pub fn user_client(&self, user: &str) -> Client {
        let mut config = self.admin_config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(vec!["system:authenticated".into()]);
        Client::try_from(config).expect("an impersonating client")
    }

    /// Binds a ClusterRole (e.g. the stock `edit`) to a user in a namespace, as the admin.
    pub async fn bind_cluster_role(&self, ns: &str, role: &str, user: &str) {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{role}-{user}"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .unwrap();
        api::<RoleBinding>(self, ns)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create rolebinding");
    }

    /// Whether the stock `edit` ClusterRole carries the chart's tenant-edit rules (the
    /// clusterrole-aggregation controller of kube-controller-manager fills it); waits up to
    /// 30 s for it.
    pub async fn tenant_roles_aggregated(&self) -> bool {
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let edit = roles.get("edit").await.expect("the stock edit ClusterRole");
            let aggregated = edit.rules.iter().flatten().any(|r| {
                r.api_groups.iter().flatten().any(|g| g == "ims.imageshare.io")
                    && r.verbs.iter().any(|v| v == "create")
                    && r.resources.iter().flatten().any(|res| res == "imageshares")
            });
            if aggregated {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Installs a ValidatingAdmissionPolicy and its Deny binding, deleted at cleanup.
    pub async fn install_policy(&mut self, policy: Value) {
        let name = policy["metadata"]["name"].as_str().unwrap().to_string();
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(policy).expect("a policy");
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .expect("create policy");
        self.cluster_objects.push(ClusterObject::Policy(name.clone()));
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        }))
        .unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("create policy binding");
        self.cluster_objects.push(ClusterObject::PolicyBinding(name));
    }

    /// Starts the operator in this process, authenticated as the chart's ServiceAccount.
    pub async fn start_operator(&mut self, config: Config) {
        self.start_operator_with(config, None).await;
    }

    /// Starts the operator in this process; with `lease` (namespace, name) it runs with leader
    /// election on that Lease.
    pub async fn start_operator_with(&mut self, config: Config, lease: Option<(&str, &str)>) {
        assert!(self.operator.is_none(), "operator already running");
        let (lease_namespace, lease_name) = lease.unwrap_or(("default", "ims-operator-e2e"));
        let args = RunArgs {
            config: None,
            region: None,
            leader_elect: lease.is_some(),
            lease_name: lease_name.into(),
            lease_namespace: lease_namespace.into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            log_format: LogFormat::Text,
            kubevirt: false,
            concurrency: 4,
            debounce_ms: 200,
        };
        self.metrics_addr = Some(args.http_addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let client = self.operator_client().await;
        let task = tokio::spawn(controller::run_until(client, args, config, async move {
            let _ = rx.await;
        }));
        self.operator = Some((task, tx));
    }

    /// Whether the in-process operator's task has ended (returned or panicked) by itself;
    /// None when none was started.
    pub fn operator_finished(&self) -> Option<bool> {
        self.operator.as_ref().map(|(task, _)| task.is_finished())
    }

    /// Stops the operator and waits until it has finished.
    pub async fn stop_operator(&mut self) {
        if let Some((task, stop)) = self.operator.take() {
            let _ = stop.send(());
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("operator stops in time")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn apply(&self, manifest: Value) {
        let ns = manifest["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let params = PatchParams::apply("ims-e2e").force();
        let result = match manifest["kind"].as_str().unwrap() {
            "PrivateImage" => api::<PrivateImage>(self, &ns)
                .patch(&name, &params, &Patch::Apply(&manifest))
                .await
                .map(|_| ()),
            "ImageShare" => api::<ImageShare>(self, &ns)
                .patch(&name, &params, &Patch::Apply(&manifest))
                .await
                .map(|_| ()),
            "ShareAcceptance" => api::<ShareAcceptance>(self, &ns)
                .patch(&name, &params, &Patch::Apply(&manifest))
                .await
                .map(|_| ()),
            other => panic!("unsupported kind {other}"),
        };
        result.unwrap_or_else(|e| panic!("apply {ns}/{name}: {e}"));
    }

    pub async fn delete<K>(&self, ns: &str, name: &str)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        api::<K>(self, ns)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }

    /// Waits until `check` holds for the object, or fails the test with the last state seen.
    pub async fn wait_for<K, F>(&self, ns: &str, name: &str, what: &str, check: F) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
        F: Fn(&K) -> bool + Send + 'static,
    {
        let watched = api::<K>(self, ns);
        let cond = kube::runtime::wait::await_condition(watched, name, move |o: Option<&K>| o.is_some_and(&check));
        match tokio::time::timeout(TIMEOUT, cond).await {
            Ok(Ok(Some(obj))) => obj,
            Ok(Ok(None)) => panic!("{ns}/{name} vanished while waiting for: {what}"),
            Ok(Err(e)) => panic!("watching {ns}/{name}: {e}"),
            Err(_) => {
                let last = api::<K>(self, ns).get_opt(name).await.ok().flatten();
                panic!("timed out after {TIMEOUT:?} waiting for {ns}/{name}: {what}; last seen: {last:#?}")
            }
        }
    }

    /// Polls an API-level predicate (RBAC checks have no watch) until it holds or times out.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        loop {
            interval.tick().await;
            if check().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {TIMEOUT:?} waiting for: {what}"
            );
        }
    }

    /// Waits until `recipient` may (or may not) get the image.
    pub async fn expect_access(&self, owner: &str, image: &str, recipient: &str, allowed: bool) {
        self.eventually(&format!("{recipient} may get {owner}/{image}: {allowed}"), || async {
            self.can_get_image(owner, image, recipient).await == allowed
        })
        .await;
    }

    /// `kubectl auth can-i get privateimage/<image> -n <owner> --as system:serviceaccount:<recipient>:default`
    pub async fn can_get_image(&self, owner: &str, image: &str, recipient: &str) -> bool {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{recipient}:default")),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{recipient}"),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("ims.imageshare.io".into()),
                    resource: Some("privateimages".into()),
                    namespace: Some(owner.into()),
                    name: Some(image.into()),
                    verb: Some("get".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let result = api
            .create(&PostParams::default(), &review)
            .await
            .expect("SubjectAccessReview");
        result.status.is_some_and(|s| s.allowed)
    }

    /// The events.k8s.io Events of a namespace.
    /// `kubectl get PLURAL -n NS` for a kind of ims.imageshare.io: the server's Table, one map of
    /// column name to cell per row.
    pub async fn table(&self, plural: &str, ns: &str) -> Vec<BTreeMap<String, Value>> {
        let request = http::Request::get(format!("/apis/ims.imageshare.io/v1alpha1/namespaces/{ns}/{plural}"))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap();
        let text = self
            .client
            .request_text(request)
            .await
            .unwrap_or_else(|e| panic!("the Table of {plural} in {ns}: {e}"));
        let table: Value = serde_json::from_str(&text).expect("a Table");
        let columns: Vec<String> = table["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        table["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .cloned()
                    .zip(row["cells"].as_array().expect("cells").iter().cloned())
                    .collect()
            })
            .collect()
    }

    pub async fn events(&self, ns: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), ns);
        api.list(&ListParams::default()).await.expect("list events").items
    }

    /// Managed Roles and RoleBindings in a namespace, by name.
    pub async fn grants(&self, ns: &str) -> (BTreeMap<String, Role>, BTreeMap<String, RoleBinding>) {
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=ims-operator");
        let roles = Api::<Role>::namespaced(self.client.clone(), ns)
            .list(&lp)
            .await
            .expect("list roles");
        let bindings = Api::<RoleBinding>::namespaced(self.client.clone(), ns)
            .list(&lp)
            .await
            .expect("list rolebindings");
        (
            roles.items.into_iter().map(|r| (r.name_any(), r)).collect(),
            bindings.items.into_iter().map(|b| (b.name_any(), b)).collect(),
        )
    }

    /// Stops the operator and deletes the test's namespaces and cluster-scoped objects.
    pub async fn cleanup(mut self) {
        self.stop_operator().await;
        let namespaces = std::mem::take(&mut self.namespaces);
        let objects = std::mem::take(&mut self.cluster_objects);
        delete_all(&self.client, namespaces, objects).await;
    }
}

/// A test that panicked did not reach `cleanup`: delete what it made anyway (on a runtime of
/// its own, since the test's is going away).
impl Drop for Env {
    fn drop(&mut self) {
        if self.namespaces.is_empty() && self.cluster_objects.is_empty() {
            return;
        }
        let namespaces = std::mem::take(&mut self.namespaces);
        let objects = std::mem::take(&mut self.cluster_objects);
        let config = self.admin_config.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = Client::try_from(config).expect("a client");
                let _ = tokio::time::timeout(TIMEOUT, delete_all(&client, namespaces, objects)).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn delete_all(client: &Client, namespaces: Vec<String>, objects: Vec<ClusterObject>) {
    let dp = DeleteParams::default();
    for object in objects {
        let result = match &object {
            ClusterObject::PolicyBinding(name) => Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                .delete(name, &dp)
                .await
                .map(|_| ()),
            ClusterObject::Policy(name) => Api::<ValidatingAdmissionPolicy>::all(client.clone())
                .delete(name, &dp)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => eprintln!("cleanup: deleting {object:?}: {e}"),
        }
    }
    let api = Api::<Namespace>::all(client.clone());
    for ns in namespaces {
        match api.delete(&ns, &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => eprintln!("cleanup: deleting namespace {ns}: {e}"),
        }
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The API server's refusal (status 403) and its message, or a panic describing the result.
pub fn forbidden_message<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// The kubeconfig of the chart's ServiceAccount (installed by the first `env`).
pub fn operator_kubeconfig() -> Kubeconfig {
    INSTALLED
        .get()
        .expect("the chart is installed by env()")
        .operator_kubeconfig
        .clone()
}

/// Writes the operator's kubeconfig (it holds a token: owner-only) to `path`.
pub fn write_operator_kubeconfig(path: &std::path::Path) {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let yaml = ims_operator::yaml::to_string(&operator_kubeconfig());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the kubeconfig file");
    file.write_all(yaml.as_bytes()).expect("write the kubeconfig");
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The status code and body of `GET <path>` on an operator's HTTP port (a plain HTTP/1.1
/// request) within `timeout`; None when it does not answer in time.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(timeout, fetch).await.ok()??;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The samples of an operator's /metrics (`name{labels}` → value) within `timeout`; None when
/// it does not answer in time.
pub async fn scrape(addr: SocketAddr, timeout: Duration) -> Option<BTreeMap<String, f64>> {
    let (code, body) = http_get(addr, "/metrics", timeout).await?;
    if code != 200 {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| l.starts_with("ims_"))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// The sum of the samples whose `name{labels}` starts with `prefix`.
pub fn sample(metrics: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

pub fn api<K>(env: &Env, ns: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(env.client.clone(), ns)
}

pub fn ready_reason<S>(
    status: Option<&S>,
    conditions: impl Fn(&S) -> &Vec<ims_operator::api::Condition>,
) -> Option<(String, String)> {
    let conds = conditions(status?);
    let c = conds.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.to_string(), c.reason.to_string()))
}

pub fn image(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "PrivateImage",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"displayName": name, "osType": "Linux", "diskSizeGiB": 40,
                 "source": {"file": {"url": format!("s3://images/{name}.qcow2"), "format": "QCOW2"}}}
    })
}

pub fn share(ns: &str, name: &str, images: &[&str], recipients: &[&str]) -> Value {
    json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageShare",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"images": images, "recipients": recipients}
    })
}

pub fn acceptance(ns: &str, name: &str, owner: &str, images: &[&str], decision: &str) -> Value {
    json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ShareAcceptance",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"owner": owner, "images": images, "decision": decision}
    })
}
