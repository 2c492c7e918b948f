//! `ims-operator run`: the decision engine live against a Kubernetes API server.
//!
//! One reconcile unit is a tenant namespace. Watchers keep an indexed cache of every object
//! ([`cache`], fed by [`feed`]); each change names the tenants it affects, and the kube-runtime
//! Controller reconciles those namespaces, a bounded number at a time, bursts coalesced
//! ([`reconcile`]): evaluate with the pure engine, then write what differs ([`writer`]) and
//! publish the events ([`events`]). With leader election, every write passes the lease's
//! fence ([`leader`]).

pub mod cache;
pub mod events;
pub mod feed;
pub mod guard;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod state;
pub mod writer;

use std::{
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::api::{
    core::v1::{Namespace, PersistentVolumeClaim},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client,
    core::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{Controller, WatchStreamExt, controller, reflector, reflector::ObjectRef, watcher},
};
use tracing::{error, info, warn};

use crate::{
    api::{self, IMAGE_QUOTA_NAME, ImageOffer, ImageQuota, ImageShare, PrivateImage, ShareAcceptance},
    cli::{LogFormat, RunArgs},
    config::Config,
    core::grants::{MANAGED_BY, MANAGED_BY_LABEL},
};

use cache::Cache;
use feed::{FeedSink, UnreadableReport, feed, feed_guarded};
use guard::Guarded;
use leader::{Fence, LeaderElector};
pub use reconcile::{Context, Error, backoff, error_policy, reconcile};
pub use state::State;

/// Name the operator reports events and field managers under.
pub const CONTROLLER_NAME: &str = "ims-operator";

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

/// Runs the controller until SIGTERM.
pub async fn run(args: RunArgs, config: Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    run_until(client, args, config, shutdown_signal()).await
}

/// Why a term of leadership (or the only term, without election) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TermEnd {
    Shutdown,
    LostLease,
    WatchDied,
}

/// Runs the controller with a given client until `shutdown` resolves. A replica that loses
/// the lease stands by and competes again (a re-election, not a restart); one whose watch
/// died returns an error (and `/livez` fails), since its cache can no longer be trusted.
pub async fn run_until(
    client: Client,
    args: RunArgs,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // KubeVirt support: `--kubevirt` or the config file's `kubevirt: true` (README.md).
    let args = RunArgs {
        kubevirt: args.kubevirt || config.kubevirt,
        ..args
    };
    let shutdown = shutdown.boxed().shared();
    let state = Arc::new(State::default());
    let http = tokio::spawn(http::serve(args.http_addr, state.clone()));
    let result = serve_terms(client, args, config, state, shutdown).await;
    http.abort();
    result
}

async fn serve_terms(
    client: Client,
    args: RunArgs,
    config: Config,
    state: Arc<State>,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = wait_for_crds(&client, &state) => {}
        _ = shutdown.clone() => return Ok(()),
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
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("ims-operator-{}", std::process::id()));
    let elector = args.leader_elect.then(|| {
        Arc::new(
            LeaderElector::new(client.clone(), &args.lease_namespace, &args.lease_name, &identity)
                .with_metrics(state.clone()),
        )
    });
    loop {
        if let Some(elector) = &elector {
            state.standby.store(true, Ordering::SeqCst);
            state.metrics.set_leader(false);
            tokio::select! {
                _ = elector.acquire() => {}
                _ = shutdown.clone() => return Ok(()),
            }
            state.standby.store(false, Ordering::SeqCst);
        }
        state.metrics.set_leader(true);
        let fence = elector.as_ref().map_or_else(Fence::open, |e| e.fence());
        let end = run_term(
            &client,
            &args,
            &config,
            &state,
            fence,
            elector.clone(),
            &identity,
            shutdown.clone(),
        )
        .await;
        state.metrics.set_leader(false);
        *state.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match end? {
            TermEnd::Shutdown => break,
            TermEnd::LostLease => warn!("lost the leader lease; standing by to compete again"),
            TermEnd::WatchDied => anyhow::bail!("a watch ended; the cache can not be trusted any more"),
        }
    }
    if let Some(elector) = &elector {
        elector.release().await;
    }
    info!("stopped");
    Ok(())
}

/// One term: fresh caches, the feeds, the controller; until shutdown, the loss of the lease or
/// the death of a watch.
#[allow(clippy::too_many_arguments)]
async fn run_term(
    client: &Client,
    args: &RunArgs,
    config: &Config,
    state: &Arc<State>,
    fence: Fence,
    elector: Option<Arc<LeaderElector>>,
    identity: &str,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<TermEnd> {
    let cache = Arc::new(Cache::new(config.clone(), args.kubevirt)?);
    *state.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cache.clone());
    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (invalid_tx, mut invalid_rx) = tokio::sync::mpsc::unbounded_channel::<UnreadableReport>();
    let sink = FeedSink {
        cache: cache.clone(),
        state: state.clone(),
        triggers: trigger_tx,
        invalid: invalid_tx,
    };

    // One watch per kind. The Namespace watch also fills the store the Controller reads the
    // namespace of each reconcile from.
    let (namespaces, namespace_writer) = reflector::store::<Namespace>();
    let wc = watcher::Config::default();
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let mut feeds: Vec<(&'static str, tokio::task::JoinHandle<()>)> = vec![
        (
            "PrivateImage",
            tokio::spawn(feed_guarded::<PrivateImage>(
                "PrivateImage",
                watcher(Api::<Guarded<PrivateImage>>::all(client.clone()), wc.clone()).default_backoff(),
                sink.clone(),
            )),
        ),
        (
            "ImageShare",
            tokio::spawn(feed_guarded::<ImageShare>(
                "ImageShare",
                watcher(Api::<Guarded<ImageShare>>::all(client.clone()), wc.clone()).default_backoff(),
                sink.clone(),
            )),
        ),
        (
            "ShareAcceptance",
            tokio::spawn(feed_guarded::<ShareAcceptance>(
                "ShareAcceptance",
                watcher(Api::<Guarded<ShareAcceptance>>::all(client.clone()), wc.clone()).default_backoff(),
                sink.clone(),
            )),
        ),
        (
            "Namespace",
            tokio::spawn(feed::<Namespace>(
                "Namespace",
                watcher(Api::all(client.clone()), wc.clone())
                    .default_backoff()
                    .reflect(namespace_writer),
                sink.clone(),
            )),
        ),
        (
            "ImageQuota",
            // Only the one named "ims" per namespace is the operator's.
            tokio::spawn(feed::<ImageQuota>(
                "ImageQuota",
                watcher(
                    Api::all(client.clone()),
                    watcher::Config::default().fields(&format!("metadata.name={IMAGE_QUOTA_NAME}")),
                )
                .default_backoff(),
                sink.clone(),
            )),
        ),
        (
            "ImageOffer",
            tokio::spawn(feed::<ImageOffer>(
                "ImageOffer",
                watcher(Api::all(client.clone()), managed.clone()).default_backoff(),
                sink.clone(),
            )),
        ),
        (
            "Role",
            tokio::spawn(feed::<Role>(
                "Role",
                watcher(Api::all(client.clone()), managed.clone()).default_backoff(),
                sink.clone(),
            )),
        ),
        (
            "RoleBinding",
            tokio::spawn(feed::<RoleBinding>(
                "RoleBinding",
                watcher(Api::all(client.clone()), managed.clone()).default_backoff(),
                sink.clone(),
            )),
        ),
    ];
    if args.kubevirt {
        feeds.push((
            "PersistentVolumeClaim",
            tokio::spawn(feed::<PersistentVolumeClaim>(
                "PersistentVolumeClaim",
                watcher(Api::all(client.clone()), wc.clone()).default_backoff(),
                sink.clone(),
            )),
        ));
        let vm = ApiResource::from_gvk(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"));
        feeds.push((
            "VirtualMachine",
            tokio::spawn(feed::<DynamicObject>(
                "VirtualMachine",
                watcher(Api::all_with(client.clone(), &vm), wc.clone()).default_backoff(),
                sink.clone(),
            )),
        ));
    }
    cache.expect_feeds(feeds.len());
    drop(sink);
    let feed_aborts: Vec<_> = feeds.iter().map(|(_, f)| f.abort_handle()).collect();

    let ctx = Arc::new(Context::new(
        client.clone(),
        cache.clone(),
        state.clone(),
        fence,
        Some(identity.to_string()),
    ));
    let reporter_ctx = ctx.clone();
    let unreadable_reporter = tokio::spawn(async move {
        while let Some(report) = invalid_rx.recv().await {
            if reporter_ctx.unreadable_reports.first_time(&report) {
                reporter_ctx.publish(&events::unreadable_event(&report)).await;
            }
        }
    });

    // The controller wants a Sync shutdown future; the lease renewal and the supervision of
    // the watches are not, so they run in their own task and report through a channel.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_state = state.clone();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<TermEnd>();
    let lease = elector.clone();
    let watchdog = tokio::spawn(async move {
        let lease_lost = async {
            match &lease {
                Some(e) => e.hold().await,
                None => futures::future::pending().await,
            }
        };
        let mut lease_lost = std::pin::pin!(lease_lost);
        let watch_died = async {
            let handles = feeds.into_iter().map(|(kind, handle)| handle.map(move |r| (kind, r)));
            let ((kind, result), _, _) = futures::future::select_all(handles).await;
            let why = match result {
                Ok(()) => "its stream ended".to_string(),
                Err(e) => format!("its task failed: {e}"),
            };
            error!(kind, %why, "a watch died; /livez fails from now on");
            watch_state.watch_died(kind, why);
        };
        let end = tokio::select! {
            _ = shutdown => {
                info!("shutting down: finishing running reconciles");
                TermEnd::Shutdown
            }
            _ = &mut lease_lost => TermEnd::LostLease,
            _ = watch_died => TermEnd::WatchDied,
        };
        let _ = end_tx.send(end);
        let _ = stop_tx.send(());
        if end == TermEnd::Shutdown {
            // Keep renewing while the running reconciles finish, so that their writes are not
            // fenced off half-way; the term's end aborts this.
            lease_lost.await;
        }
    });
    let stop = async move {
        let _ = stop_rx.await;
    };
    let triggers = tokio_stream_from(trigger_rx).map(|ns| ObjectRef::<Namespace>::new(&ns));
    let settings = controller::Config::default()
        .concurrency(args.concurrency)
        .debounce(Duration::from_millis(args.debounce_ms));
    // The namespace objects come from the store the Namespace feed fills; reconciles are asked
    // for by the feeds alone (every change names the tenants it touches).
    Controller::for_stream(
        futures::stream::pending::<Result<Namespace, watcher::Error>>(),
        namespaces,
    )
    .with_config(settings)
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
    for abort in feed_aborts {
        abort.abort();
    }
    unreadable_reporter.abort();
    watchdog.abort();
    let end = end_rx.await.unwrap_or(TermEnd::Shutdown);
    if end == TermEnd::WatchDied
        && let Some(elector) = &elector
    {
        // The cache can not be trusted: stop writing now, and let a standby take over at once.
        elector.release().await;
    }
    Ok(end)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
