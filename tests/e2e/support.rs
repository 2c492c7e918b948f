//! Shared machinery of the end-to-end tests.

use std::{
    collections::BTreeMap,
    future::Future,
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
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::Namespace,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub const KUBECONFIG_ENV: &str = "IMS_E2E_KUBECONFIG";
pub const TIMEOUT: Duration = Duration::from_secs(60);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test's world: a client, its namespaces, and a running operator.
pub struct Env {
    pub client: Client,
    pub prefix: String,
    namespaces: Vec<String>,
    operator: Option<(
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tokio::sync::oneshot::Sender<()>,
    )>,
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
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is usable");
    let client = Client::try_from(config).expect("a client");
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
        namespaces: Vec::new(),
        operator: None,
        _serial: serial,
    })
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

    /// Starts the operator in this process.
    pub async fn start_operator(&mut self, config: Config) {
        assert!(self.operator.is_none(), "operator already running");
        let args = RunArgs {
            config: None,
            region: None,
            leader_elect: false,
            lease_name: "ims-operator-e2e".into(),
            lease_namespace: "default".into(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            log_format: LogFormat::Text,
            kubevirt: false,
            concurrency: 4,
            debounce_ms: 200,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let client = self.client.clone();
        let task = tokio::spawn(controller::run_until(client, args, config, async move {
            let _ = rx.await;
        }));
        self.operator = Some((task, tx));
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

    /// Stops the operator and deletes the test's namespaces.
    pub async fn cleanup(mut self) {
        self.stop_operator().await;
        let api = Api::<Namespace>::all(self.client.clone());
        for ns in std::mem::take(&mut self.namespaces) {
            if let Err(e) = api.delete(&ns, &DeleteParams::default()).await {
                eprintln!("cleanup: deleting namespace {ns}: {e}");
            }
        }
    }
}

pub fn api<K>(env: &Env, ns: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(env.client.clone(), ns)
}

pub fn ready_reason<S>(
    status: Option<&S>,
    conditions: impl Fn(&S) -> &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Option<(String, String)> {
    let conds = conditions(status?);
    let c = conds.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
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
