//! `ims-operator run`: the decision engine live against a Kubernetes API server.
//!
//! One reconcile unit is a tenant namespace. Watchers keep an indexed cache of every object
//! ([`cache`]); each change names the tenants it affects, and the kube-runtime Controller
//! reconciles those namespaces one at a time each: evaluate with the pure engine, then write
//! what differs ([`writer`]) and publish the events.

pub mod cache;
pub mod feed;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod state;
pub mod writer;

use std::{
    collections::{BTreeSet, HashMap},
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, ObjectReference, PersistentVolumeClaim},
        rbac::v1::{Role, RoleBinding},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    core::{ApiResource, DynamicObject, GroupVersionKind, error_boundary::InvalidObject},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType as KubeEventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{error, info, warn};

use crate::{
    api::{self, ImageShare, PrivateImage, ShareAcceptance},
    cli::{LogFormat, RunArgs},
    config::Config,
    core::{EventSpec, EventType, grants::MANAGED_BY_LABEL},
};

use cache::Cache;
use feed::{FeedSink, feed, feed_guarded};
pub use state::State;

/// Name the operator reports events and field managers under.
pub const CONTROLLER_NAME: &str = "ims-operator";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub cache: Arc<Cache>,
    pub recorder: Recorder,
    pub state: Arc<State>,
    /// Namespace warnings already published (they are level-based, not transitions).
    published_warnings: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Consecutive failures per namespace, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, cache: Arc<Cache>, state: Arc<State>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cache,
            state,
            published_warnings: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

/// A reconcile that could not finish; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing to the API server: {0}")]
    Write(#[source] kube::Error),
}

impl Error {
    /// A bounded label for the error metric.
    pub fn metric_reason(&self) -> String {
        match self {
            Error::Write(kube::Error::Api(s)) => format!("Api{}", s.code),
            Error::Write(_) => "Transport".into(),
        }
    }
}

/// Reconciles one tenant namespace.
pub async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = namespace.name_any();
    if !ctx.cache.is_synced() {
        // Deciding on a partial cache could revoke grants that exist; wait for the lists.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if ctx.cache.awaiting_writes(&ns) {
        // Our last status writes are not in the cache yet: deciding now would repeat them.
        tracing::debug!(namespace = %ns, "waiting for the watch to bring back our status writes");
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let started = Instant::now();
    let now = Timestamp::now();
    let (outcome, existing, next_expiry) = ctx.cache.evaluate(&ns, now);
    let mut written = Vec::new();
    let result = writer::write_outcome_tracked(&ctx.client, &outcome, &existing, &mut written).await;
    ctx.cache.expect_writes(&ns, written);
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            let e = Error::Write(e);
            ctx.state.metrics.reconcile_failed(&e.metric_reason());
            return Err(e);
        }
    };
    let events = fresh_events(&ctx, &ns, outcome.events);
    for e in &events {
        publish(&ctx.recorder, e).await;
    }
    ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&ns);
    ctx.state.metrics.reconciled(started.elapsed());
    if stats != writer::WriteStats::default() {
        info!(namespace = %ns, status_patches = stats.status_patches, grant_applies = stats.grant_applies,
              grant_deletes = stats.grant_deletes, "reconciled");
    }
    Ok(match next_expiry {
        // Requeue just after the next share expires, so access ends on time.
        Some(at) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_millis(500);
            Action::requeue(wait)
        }
        None => Action::await_change(),
    })
}

/// Drops namespace warnings that were already published and are still the same.
fn fresh_events(ctx: &Context, ns: &str, events: Vec<EventSpec>) -> Vec<EventSpec> {
    let mut published = ctx.published_warnings.lock().unwrap_or_else(|p| p.into_inner());
    let current: BTreeSet<String> = events
        .iter()
        .filter(|e| e.regarding.kind == "Namespace")
        .map(|e| e.note.clone())
        .collect();
    let before = published.insert(ns.to_string(), current).unwrap_or_default();
    events
        .into_iter()
        .filter(|e| e.regarding.kind != "Namespace" || !before.contains(&e.note))
        .collect()
}

fn object_reference(e: &EventSpec) -> ObjectReference {
    let api_version = match e.regarding.kind {
        "Namespace" => "v1".to_string(),
        _ => api::API_VERSION.to_string(),
    };
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(e.regarding.kind.to_string()),
        namespace: e.regarding.namespace.clone(),
        name: Some(e.regarding.name.clone()),
        uid: e.regarding.uid.clone(),
        ..Default::default()
    }
}

async fn publish(recorder: &Recorder, e: &EventSpec) {
    let event = Event {
        type_: match e.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: e.reason.clone(),
        note: Some(e.note.clone()),
        action: e.action.clone(),
        secondary: None,
    };
    // Events are informational; failing to publish one must not fail the reconcile.
    if let Err(err) = recorder.publish(&event, &object_reference(e)).await {
        warn!(error = %err, reason = %e.reason, "could not publish an event");
    }
}

/// Per-namespace exponential backoff: 1 s, 2 s, 4 s … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

pub fn error_policy(namespace: Arc<Namespace>, err: &Error, ctx: Arc<Context>) -> Action {
    let ns = namespace.name_any();
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = failures.entry(ns.clone()).or_default();
    let wait = backoff(*n);
    *n += 1;
    warn!(namespace = %ns, error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Entry point of `ims-operator run`.
pub fn main(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(region) = &args.region {
        config.region = region.clone();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits until the API server serves our group, logging while it does not.
async fn wait_for_crds(client: &Client, state: &State) {
    let mut logged = false;
    loop {
        match client.list_api_group_resources(api::API_VERSION).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "privateimages") => {
                state.crds_present.store(true, Ordering::SeqCst);
                info!("CRDs of {} are installed", api::API_VERSION);
                return;
            }
            Ok(_) | Err(_) if !logged => {
                warn!(
                    "waiting for the CRDs of {} (kubectl apply -f crds/, or install the Helm chart)",
                    api::API_VERSION
                );
                logged = true;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

/// Runs the controller until SIGTERM (or loss of the lease).
pub async fn run(args: RunArgs, config: Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    run_until(client, args, config, shutdown_signal()).await
}

/// Runs the controller with a given client until `shutdown` resolves (or the lease is lost).
pub async fn run_until(
    client: Client,
    args: RunArgs,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let state = Arc::new(State::default());
    let http = tokio::spawn(http::serve(args.http_addr, state.clone()));

    tokio::select! {
        _ = wait_for_crds(&client, &state) => {}
        _ = shutdown.clone() => return Ok(()),
    }

    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("ims-operator-{}", std::process::id()));
    let elector = args
        .leader_elect
        .then(|| leader::LeaderElector::new(client.clone(), &args.lease_namespace, &args.lease_name, &identity));
    if let Some(elector) = &elector {
        state.standby.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.clone() => return Ok(()),
        }
        state.standby.store(false, Ordering::SeqCst);
    }

    if args.kubevirt {
        // Without KubeVirt the VirtualMachine watch could never list, and the operator would
        // never become ready; say so instead.
        let served = client.list_api_group_resources("kubevirt.io/v1").await;
        if !served.is_ok_and(|list| list.resources.iter().any(|r| r.name == "virtualmachines")) {
            anyhow::bail!(
                "--kubevirt (Helm value kubevirt.enabled) needs KubeVirt: kubevirt.io/v1 virtualmachines is not served"
            );
        }
    }
    let cache = Arc::new(Cache::new(config, args.kubevirt)?);
    *state.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cache.clone());
    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (invalid_tx, mut invalid_rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, InvalidObject)>();
    let sink = FeedSink {
        cache: cache.clone(),
        triggers: trigger_tx,
        invalid: invalid_tx,
    };

    let wc = watcher::Config::default();
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={}", crate::core::grants::MANAGED_BY));
    let mut feeds = vec![
        tokio::spawn(feed_guarded::<PrivateImage>(
            "PrivateImage",
            watcher(Api::all(client.clone()), wc.clone()).default_backoff(),
            sink.clone(),
        )),
        tokio::spawn(feed_guarded::<ImageShare>(
            "ImageShare",
            watcher(Api::all(client.clone()), wc.clone()).default_backoff(),
            sink.clone(),
        )),
        tokio::spawn(feed_guarded::<ShareAcceptance>(
            "ShareAcceptance",
            watcher(Api::all(client.clone()), wc.clone()).default_backoff(),
            sink.clone(),
        )),
        tokio::spawn(feed::<Namespace>(
            "Namespace",
            watcher(Api::all(client.clone()), wc.clone()).default_backoff(),
            sink.clone(),
        )),
        tokio::spawn(feed::<Role>(
            "Role",
            watcher(Api::all(client.clone()), managed.clone()).default_backoff(),
            sink.clone(),
        )),
        tokio::spawn(feed::<RoleBinding>(
            "RoleBinding",
            watcher(Api::all(client.clone()), managed.clone()).default_backoff(),
            sink.clone(),
        )),
    ];
    if args.kubevirt {
        feeds.push(tokio::spawn(feed::<PersistentVolumeClaim>(
            "PersistentVolumeClaim",
            watcher(Api::all(client.clone()), wc.clone()).default_backoff(),
            sink.clone(),
        )));
        let vm = ApiResource::from_gvk(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"));
        feeds.push(tokio::spawn(feed::<DynamicObject>(
            "VirtualMachine",
            watcher(Api::all_with(client.clone(), &vm), wc.clone()).default_backoff(),
            sink.clone(),
        )));
    }
    drop(sink);

    let ctx = Arc::new(Context::new(
        client.clone(),
        cache.clone(),
        state.clone(),
        Some(identity),
    ));
    let invalid_ctx = ctx.clone();
    let invalid_reporter = tokio::spawn(async move {
        while let Some((kind, invalid)) = invalid_rx.recv().await {
            report_invalid(&invalid_ctx.recorder, kind, &invalid).await;
        }
    });

    let triggers = tokio_stream_from(trigger_rx).map(|ns| ObjectRef::<Namespace>::new(&ns));
    let elector = elector.map(Arc::new);
    let holder = elector.clone();
    let lost_lease = async move {
        match &holder {
            Some(e) => e.hold().await,
            None => futures::future::pending().await,
        }
    };
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    // The controller wants a Sync shutdown future; the lease renewal is not, so it runs in its
    // own task and reports through a channel.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watchdog = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => info!("shutting down: finishing running reconciles"),
            _ = lost_lease => lost_flag.store(true, Ordering::SeqCst),
        }
        let _ = stop_tx.send(());
    });
    let stop = async move {
        let _ = stop_rx.await;
    };
    Controller::new(Api::<Namespace>::all(client.clone()), wc)
        .reconcile_on(triggers)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
    for f in feeds {
        f.abort();
    }
    invalid_reporter.abort();
    watchdog.abort();
    http.abort();
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!("lost the leader lease; exiting so that a new election starts");
    }
    if let Some(elector) = &elector {
        elector.release().await;
    }
    info!("stopped");
    Ok(())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn report_invalid(recorder: &Recorder, kind: &'static str, invalid: &InvalidObject) {
    let spec = EventSpec::new(
        &crate::core::Regarding {
            kind,
            namespace: invalid.metadata.namespace.clone(),
            name: invalid.metadata.name.clone().unwrap_or_default(),
            uid: invalid.metadata.uid.clone(),
        },
        EventType::Warning,
        "InvalidObject",
        "Skip",
        format!("the operator can not read this object and skips it: {}", invalid.error),
    );
    publish(recorder, &spec).await;
}
