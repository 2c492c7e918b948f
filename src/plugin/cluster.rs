//! The connection to the API server, and the few requests `kubectl ims` makes, each failure
//! translated into a message that names the request (error.rs).

use std::time::Duration;

use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, ValidationDirective},
    config::{KubeConfigOptions, Kubeconfig},
    core::ApiResource,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    cli::GlobalArgs,
    error::{PluginError, Request, from_kube, is_missing_object},
};

/// The field manager of every write, so that `kubectl get --show-managed-fields` tells what
/// `kubectl ims` set, and a later run replaces what an earlier one applied.
pub const FIELD_MANAGER: &str = "kubectl-ims";

/// A client, the namespace to work in and the server's address (for messages).
pub struct Cluster {
    client: Client,
    pub namespace: String,
    server: String,
}

/// The client configuration as kubectl finds it: `--kubeconfig`, else `$KUBECONFIG` or
/// `~/.kube/config`, with `--context` or the current context; without any kubeconfig (and no
/// `--context`), the in-cluster service account.
async fn config(global: &GlobalArgs) -> Result<kube::Config, PluginError> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..Default::default()
    };
    let unusable = |what: String, e: &dyn std::fmt::Display| PluginError::User(format!("{what}: {e}"));
    if let Some(path) = &global.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| unusable(format!("can not read the kubeconfig {}", path.display()), &e))?;
        return kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| unusable(format!("can not use the kubeconfig {}", path.display()), &e));
    }
    match Kubeconfig::read() {
        Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| unusable("can not use the kubeconfig".into(), &e)),
        Err(e) if global.context.is_some() => Err(unusable("can not read a kubeconfig for --context".into(), &e)),
        Err(read) => kube::Config::infer().await.map_err(|e| {
            PluginError::User(format!(
                "no kubeconfig ({read}) and not running in a cluster ({e}); pass --kubeconfig or set KUBECONFIG"
            ))
        }),
    }
}

impl Cluster {
    pub async fn connect(global: &GlobalArgs) -> Result<Self, PluginError> {
        let mut config = config(global).await?;
        // A command line must not hang on a dead server; kube's defaults wait far longer.
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        let server = config.cluster_url.to_string();
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| PluginError::Api(format!("can not make a client for the API server at {server}: {e}")))?;
        Ok(Cluster {
            client,
            namespace,
            server: server.trim_end_matches('/').to_string(),
        })
    }

    fn api(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    fn request<'a>(
        verb: &'static str,
        resource: &ApiResource,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            verb,
            resource: format!("{}.{}", resource.plural, resource.group),
            namespace,
            name,
        }
    }

    /// The object as the API server holds it (every field, also ones this build does not
    /// know), or None when it does not exist.
    pub async fn get(&self, resource: &ApiResource, namespace: &str, name: &str) -> Result<Option<Value>, PluginError> {
        match self.api(resource, Some(namespace)).get(name).await {
            Ok(object) => Ok(Some(to_value(object))),
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(from_kube(
                e,
                &Self::request("get", resource, Some(namespace), Some(name)),
                &self.server,
            )),
        }
    }

    /// Every object of the kind in the namespace, or in all namespaces.
    pub async fn list(&self, resource: &ApiResource, namespace: Option<&str>) -> Result<Vec<Value>, PluginError> {
        let list = self
            .api(resource, namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| from_kube(e, &Self::request("list", resource, namespace, None), &self.server))?;
        Ok(list.items.into_iter().map(to_value).collect())
    }

    /// Server-side apply as [`FIELD_MANAGER`], never forced: fields another writer set are
    /// reported as a conflict instead of being taken over. A field the CRD does not declare is
    /// refused, not dropped (the apply's typed patch fails on it, and strict validation is
    /// asked for besides), so an older CRD never silently ignores what was asked for.
    pub async fn apply(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, PluginError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            force: false,
            field_validation: Some(ValidationDirective::Strict),
            ..Default::default()
        };
        self.api(resource, Some(namespace))
            .patch(name, &params, &Patch::Apply(body))
            .await
            .map(to_value)
            .map_err(|e| {
                from_kube(
                    e,
                    &Self::request("apply", resource, Some(namespace), Some(name)),
                    &self.server,
                )
            })
    }
}

fn to_value(object: DynamicObject) -> Value {
    serde_json::to_value(object).expect("a DynamicObject serializes")
}

/// A raw object as one of the operator's kinds, for the tables; a shape this build can not
/// read is an API error (the CRDs and this plugin do not match).
pub fn decode<K: DeserializeOwned>(value: &Value) -> Result<K, PluginError> {
    serde_json::from_value(value.clone()).map_err(|e| {
        let kind = value["kind"].as_str().unwrap_or("object");
        let name = value["metadata"]["name"].as_str().unwrap_or_default();
        PluginError::Api(format!(
            "can not read {kind} {name:?} (does this kubectl-ims match the cluster's ims-operator?): {e}"
        ))
    })
}
