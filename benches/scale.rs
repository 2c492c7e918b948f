//! Scale run against a real API server: N tenant namespaces, each with K PrivateImages (file
//! sources) shared through ImageShares with its R next neighbours (N×K×R offered pairs), and
//! ShareAcceptances in the recipients. Measures the creation rate, the operator's convergence
//! time, its writes and memory, a restart of a converged operator, and accept → grant latency.
//!
//! Does nothing (prints a notice) unless `IMS_SCALE_KUBECONFIG` names a cluster-admin
//! kubeconfig; `cargo test --benches` and `cargo bench` build and run it. Run it with
//!
//! ```sh
//! cargo build --release
//! IMS_SCALE_KUBECONFIG=$HOME/.kube/config IMS_SCALE_TENANTS=100 cargo bench --bench scale
//! ```
//!
//! Environment (all optional but the kubeconfig):
//! - `IMS_SCALE_TENANTS` (100), `IMS_SCALE_IMAGES` (10 per tenant), `IMS_SCALE_RECIPIENTS`
//!   (10 neighbours per image), `IMS_SCALE_SHARES` (2 ImageShares per tenant),
//!   `IMS_SCALE_CONCURRENCY` (16 creates in flight), `IMS_SCALE_LATENCY_SAMPLES` (10),
//!   `IMS_SCALE_TIMEOUT_SECS` (900, for convergence), `IMS_SCALE_PREFIX` (`ims-scale`),
//!   `IMS_SCALE_KEEP=1` (leave the namespaces in place).
//! - `IMS_SCALE_OPERATOR_BIN` (`target/release/ims-operator`), `IMS_SCALE_OPERATOR_ARGS` (extra
//!   `run` arguments, space separated), `IMS_SCALE_OPERATOR_START=after|before` (start the
//!   operator after every object exists — a cold start, the default — or before the first).
//! - `IMS_SCALE_OPERATOR_KUBECONFIG`: the identity the started operator runs as (default the
//!   admin kubeconfig; where the chart's admission policies are installed, only the chart's
//!   ServiceAccount may write statuses, so give a kubeconfig of that ServiceAccount).
//! - `IMS_SCALE_OPERATOR_METRICS=host:port`: use an operator that is already running instead of
//!   starting one (its RSS is read from `IMS_SCALE_OPERATOR_PID` if set).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use ims_operator::api::{self, ImageShare, PrivateImage, ShareAcceptance};
use k8s_openapi::{
    api::{core::v1::Namespace, rbac::v1::RoleBinding},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KUBECONFIG_ENV: &str = "IMS_SCALE_KUBECONFIG";
/// Label on every namespace of a run; its value is the run prefix.
const RUN_LABEL: &str = "ims-scale/run";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=ims-operator";
/// The metrics the report compares.
const WRITE_METRICS: [&str; 6] = [
    "ims_reconciles_total",
    "ims_status_patches_total",
    "ims_grant_applies_total",
    "ims_grant_deletes_total",
    "ims_events_total",
    "ims_write_errors_total",
];

type Key = (String, String);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

/// The generated world: who shares what with whom and who decides what.
#[derive(Clone, Debug)]
struct Plan {
    prefix: String,
    tenants: usize,
    images: usize,
    recipients: usize,
    shares: usize,
}

/// What a recipient at neighbour offset `j` (1..=R) of an owner does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// A ShareAcceptance covering every image of the owner.
    AcceptAll,
    /// A ShareAcceptance rejecting the owner's first two images by name.
    RejectNamed,
    /// Nothing: the pairs stay pending (the latency probe accepts some of them later).
    Pending,
}

impl Plan {
    fn tenant(&self, t: usize) -> String {
        format!("{}-{:04}", self.prefix, t % self.tenants)
    }

    fn image(i: usize) -> String {
        format!("img-{i:02}")
    }

    fn answer(&self, j: usize) -> Answer {
        let r = self.recipients;
        if j == r && r >= 2 {
            Answer::RejectNamed
        } else if j + 1 == r && r >= 3 {
            Answer::Pending
        } else {
            Answer::AcceptAll
        }
    }

    fn rejected(i: usize) -> bool {
        i < 2
    }

    /// Images of share `s`: every S-th image.
    fn share_images(&self, s: usize) -> Vec<usize> {
        (0..self.images).filter(|i| i % self.shares == s).collect()
    }

    fn pending_offset(&self) -> Option<usize> {
        (1..=self.recipients).find(|j| self.answer(*j) == Answer::Pending)
    }

    /// (accepted, rejected, pending) recipients of each image with index `i`.
    fn image_counts(&self, i: usize) -> (i32, i32, i32) {
        let (mut a, mut r, mut p) = (0, 0, 0);
        for j in 1..=self.recipients {
            match self.answer(j) {
                Answer::AcceptAll => a += 1,
                Answer::RejectNamed if Self::rejected(i) => r += 1,
                _ => p += 1,
            }
        }
        (a, r, p)
    }

    fn accepted_subjects(&self, owner: usize) -> BTreeSet<String> {
        (1..=self.recipients)
            .filter(|j| self.answer(*j) == Answer::AcceptAll)
            .map(|j| format!("system:serviceaccounts:{}", self.tenant(owner + j)))
            .collect()
    }

    fn acceptances_per_tenant(&self) -> usize {
        (1..=self.recipients)
            .filter(|j| self.answer(*j) != Answer::Pending)
            .count()
    }

    fn namespace(&self, t: usize) -> Namespace {
        let mut annotations = BTreeMap::<String, String>::new();
        // Lift a limit only where the run needs it; the defaults are 10 / 30 / 128.
        if self.images > 10 {
            annotations.insert("ims.imageshare.io/limit.private-images".into(), "-1".into());
        }
        if self.images > 30 {
            annotations.insert("ims.imageshare.io/limit.shared-images".into(), "-1".into());
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": self.tenant(t),
                "labels": {RUN_LABEL: self.prefix},
                "annotations": annotations,
            }
        }))
        .unwrap()
    }

    fn private_image(&self, t: usize, i: usize) -> PrivateImage {
        let ns = self.tenant(t);
        let name = Self::image(i);
        serde_json::from_value(json!({
            "apiVersion": api::API_VERSION, "kind": "PrivateImage",
            "metadata": {"name": name, "namespace": ns, "labels": {RUN_LABEL: self.prefix}},
            "spec": {
                "displayName": format!("{name} of {ns}"),
                "osType": "Linux",
                "osVersion": "Ubuntu 22.04 64bit",
                "diskSizeGiB": 40,
                "source": {"file": {"url": format!("s3://{ns}/{name}.qcow2"), "format": "QCOW2"}},
            }
        }))
        .unwrap()
    }

    fn image_share(&self, t: usize, s: usize) -> ImageShare {
        let images: Vec<String> = self.share_images(s).into_iter().map(Self::image).collect();
        let recipients: Vec<String> = (1..=self.recipients).map(|j| self.tenant(t + j)).collect();
        serde_json::from_value(json!({
            "apiVersion": api::API_VERSION, "kind": "ImageShare",
            "metadata": {"name": format!("share-{s}"), "namespace": self.tenant(t), "labels": {RUN_LABEL: self.prefix}},
            "spec": {"images": images, "recipients": recipients}
        }))
        .unwrap()
    }

    /// The ShareAcceptances of recipient `r`, one per owner that offers to it and is answered.
    fn acceptances(&self, r: usize) -> Vec<ShareAcceptance> {
        let mut out = Vec::new();
        for j in 1..=self.recipients {
            let owner = self.tenant(r + self.tenants - j);
            let (name, images, decision) = match self.answer(j) {
                Answer::AcceptAll => (format!("from-{owner}"), vec![], "Accept"),
                Answer::RejectNamed => (
                    format!("reject-{owner}"),
                    (0..self.images.min(2)).map(Self::image).collect(),
                    "Reject",
                ),
                Answer::Pending => continue,
            };
            out.push(self.acceptance(r, &name, &owner, images, decision));
        }
        out
    }

    fn acceptance(&self, r: usize, name: &str, owner: &str, images: Vec<String>, decision: &str) -> ShareAcceptance {
        serde_json::from_value(json!({
            "apiVersion": api::API_VERSION, "kind": "ShareAcceptance",
            "metadata": {"name": name, "namespace": self.tenant(r), "labels": {RUN_LABEL: self.prefix}},
            "spec": {"owner": owner, "images": images, "decision": decision}
        }))
        .unwrap()
    }
}

/// What the watches have seen, against what the plan expects.
struct Tracker {
    plan: Plan,
    /// The run's namespaces, to filter the cluster-wide RoleBinding watch.
    namespaces: HashSet<String>,
    images_ok: HashSet<Key>,
    shares_ok: HashSet<Key>,
    acceptances_ok: HashSet<Key>,
    bindings_ok: HashSet<Key>,
    /// A sample of what is not converged yet, per kind, for the progress lines.
    stuck: BTreeMap<&'static str, (Key, String)>,
    converged_at: Option<Instant>,
}

impl Tracker {
    fn expected(&self) -> [(&'static str, usize, usize); 4] {
        let p = &self.plan;
        [
            ("images", self.images_ok.len(), p.tenants * p.images),
            ("shares", self.shares_ok.len(), p.tenants * p.shares),
            (
                "acceptances",
                self.acceptances_ok.len(),
                p.tenants * p.acceptances_per_tenant(),
            ),
            ("grants", self.bindings_ok.len(), p.tenants * p.images),
        ]
    }

    fn check(&mut self) {
        let done = self.expected().iter().all(|(_, have, want)| have == want);
        match (done, self.converged_at) {
            (true, None) => self.converged_at = Some(Instant::now()),
            (false, Some(_)) => self.converged_at = None,
            _ => {}
        }
    }

    fn progress(&self) -> String {
        let mut s = String::new();
        for (kind, have, want) in self.expected() {
            let _ = write!(s, "{kind} {have}/{want}  ");
        }
        for (kind, ((ns, name), why)) in &self.stuck {
            let _ = write!(s, "\n      e.g. {kind} {ns}/{name}: {why}");
        }
        s
    }

    fn tenant_index(&self, ns: &str) -> Option<usize> {
        ns.strip_prefix(&self.plan.prefix)?.strip_prefix('-')?.parse().ok()
    }

    fn mark(&mut self, kind: &'static str, key: Key, verdict: Result<(), String>) {
        let set = match kind {
            "images" => &mut self.images_ok,
            "shares" => &mut self.shares_ok,
            "acceptances" => &mut self.acceptances_ok,
            _ => &mut self.bindings_ok,
        };
        match verdict {
            Ok(()) => {
                set.insert(key.clone());
                if self.stuck.get(kind).is_some_and(|(k, _)| *k == key) {
                    self.stuck.remove(kind);
                }
            }
            Err(why) => {
                set.remove(&key);
                self.stuck.insert(kind, (key, why));
            }
        }
    }

    fn unmark(&mut self, kind: &'static str, key: &Key) {
        match kind {
            "images" => self.images_ok.remove(key),
            "shares" => self.shares_ok.remove(key),
            "acceptances" => self.acceptances_ok.remove(key),
            _ => self.bindings_ok.remove(key),
        };
    }

    fn clear(&mut self, kind: &'static str) {
        match kind {
            "images" => self.images_ok.clear(),
            "shares" => self.shares_ok.clear(),
            "acceptances" => self.acceptances_ok.clear(),
            _ => self.bindings_ok.clear(),
        }
    }

    fn apply(&mut self, obj: Observed) {
        let (kind, key, verdict) = match obj {
            Observed::Image(o) => {
                let key = key_of(&*o);
                let verdict = self.judge_image(&o);
                ("images", key, verdict)
            }
            Observed::Share(o) => {
                let key = key_of(&*o);
                let verdict = self.judge_share(&o);
                ("shares", key, verdict)
            }
            Observed::Acceptance(o) => {
                let key = key_of(&*o);
                let verdict = judge_acceptance(&o);
                // Acceptances the latency probe adds later are not part of the convergence.
                if o.name_any().starts_with("latency-") {
                    return;
                }
                ("acceptances", key, verdict)
            }
            Observed::Binding(o) => {
                let key = key_of(&*o);
                if !self.namespaces.contains(&key.0) {
                    return;
                }
                let verdict = self.judge_binding(&o);
                ("grants", key, verdict)
            }
        };
        self.mark(kind, key, verdict);
    }

    fn judge_image(&self, o: &PrivateImage) -> Result<(), String> {
        let status = o.status.as_ref().ok_or("no status")?;
        current(status.observed_generation, o.meta().generation)?;
        let i: usize = o
            .name_any()
            .strip_prefix("img-")
            .and_then(|n| n.parse().ok())
            .ok_or("not an image of the plan")?;
        let (a, r, p) = self.plan.image_counts(i);
        let c = &status.recipients;
        if (c.accepted, c.rejected, c.pending) != (a, r, p) {
            return Err(format!(
                "recipients accepted/rejected/pending {}/{}/{}, want {a}/{r}/{p}",
                c.accepted, c.rejected, c.pending
            ));
        }
        Ok(())
    }

    fn judge_share(&self, o: &ImageShare) -> Result<(), String> {
        let status = o.status.as_ref().ok_or("no status")?;
        current(status.observed_generation, o.meta().generation)?;
        let ready = api::ready_condition(&status.conditions).ok_or("no Ready condition")?;
        if ready.status != "True" || ready.reason != "AllOffered" {
            return Err(format!("Ready={} {}: {}", ready.status, ready.reason, ready.message));
        }
        let images = o.spec.images.len();
        let want_offered = images * self.plan.recipients;
        let want_accepted: usize = o
            .spec
            .images
            .iter()
            .filter_map(|n| n.strip_prefix("img-")?.parse::<usize>().ok())
            .map(|i| self.plan.image_counts(i).0 as usize)
            .sum();
        if (status.offered as usize, status.accepted as usize) != (want_offered, want_accepted) {
            return Err(format!(
                "offered/accepted {}/{}, want {want_offered}/{want_accepted}",
                status.offered, status.accepted
            ));
        }
        Ok(())
    }

    fn judge_binding(&self, o: &RoleBinding) -> Result<(), String> {
        let t = self
            .tenant_index(&o.namespace().unwrap_or_default())
            .ok_or("not a tenant")?;
        let want = self.plan.accepted_subjects(t);
        let have: BTreeSet<String> = o.subjects.iter().flatten().map(|s| s.name.clone()).collect();
        if have != want {
            return Err(format!("{} subjects, want {}", have.len(), want.len()));
        }
        Ok(())
    }
}

fn current(observed: Option<i64>, generation: Option<i64>) -> Result<(), String> {
    if observed != generation {
        return Err(format!("observedGeneration {observed:?}, generation {generation:?}"));
    }
    Ok(())
}

fn judge_acceptance(o: &ShareAcceptance) -> Result<(), String> {
    let status = o.status.as_ref().ok_or("no status")?;
    current(status.observed_generation, o.meta().generation)?;
    let ready = api::ready_condition(&status.conditions).ok_or("no Ready condition")?;
    if ready.status != "True" {
        return Err(format!("Ready={} {}: {}", ready.status, ready.reason, ready.message));
    }
    Ok(())
}

fn key_of<K: Resource>(o: &K) -> Key {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

enum Observed {
    Image(Box<PrivateImage>),
    Share(Box<ImageShare>),
    Acceptance(Box<ShareAcceptance>),
    Binding(Box<RoleBinding>),
}

enum Seen {
    Apply(Observed),
    Delete(&'static str, Key),
    Init(&'static str),
    Error(&'static str, String),
}

fn watch<K, F>(api: Api<K>, labels: String, kind: &'static str, wrap: F) -> futures::stream::BoxStream<'static, Seen>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(K) -> Observed + Send + Sync + 'static,
{
    watcher(api, watcher::Config::default().labels(&labels))
        .map(move |e| match e {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Seen::Apply(wrap(o)),
            Ok(watcher::Event::Delete(o)) => Seen::Delete(kind, key_of(&o)),
            Ok(watcher::Event::Init) => Seen::Init(kind),
            Ok(watcher::Event::InitDone) => Seen::Init("done"),
            Err(e) => Seen::Error(kind, e.to_string()),
        })
        .boxed()
}

/// Watches the run's objects and RoleBindings until aborted, updating the tracker.
fn spawn_watches(client: &Client, tracker: Arc<Mutex<Tracker>>) -> tokio::task::JoinHandle<()> {
    let run = format!("{RUN_LABEL}={}", tracker.lock().unwrap().plan.prefix);
    let streams = vec![
        watch(Api::<PrivateImage>::all(client.clone()), run.clone(), "images", |o| {
            Observed::Image(Box::new(o))
        }),
        watch(Api::<ImageShare>::all(client.clone()), run.clone(), "shares", |o| {
            Observed::Share(Box::new(o))
        }),
        watch(Api::<ShareAcceptance>::all(client.clone()), run, "acceptances", |o| {
            Observed::Acceptance(Box::new(o))
        }),
        watch(
            Api::<RoleBinding>::all(client.clone()),
            MANAGED_BY.into(),
            "grants",
            |o| Observed::Binding(Box::new(o)),
        ),
    ];
    tokio::spawn(async move {
        let mut all = stream::select_all(streams);
        while let Some(seen) = all.next().await {
            let mut t = tracker.lock().unwrap();
            match seen {
                Seen::Apply(o) => t.apply(o),
                Seen::Delete(kind, key) => t.unmark(kind, &key),
                Seen::Init("done") => {}
                Seen::Init(kind) => t.clear(kind),
                Seen::Error(kind, e) => eprintln!("    watch of {kind}: {e}"),
            }
            t.check();
        }
    })
}

/// The operator under test: a child process, or one that runs already.
struct Operator {
    metrics: String,
    pid: Option<u32>,
    child: Option<Child>,
    binary: PathBuf,
    kubeconfig: String,
    log_dir: PathBuf,
}

impl Operator {
    fn start(&mut self, phase: &str) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        self.metrics = format!("127.0.0.1:{port}");
        let log = self.log_dir.join(format!("operator-{phase}.log"));
        let file = std::fs::File::create(&log).expect("the operator's log file");
        let extra = std::env::var("IMS_SCALE_OPERATOR_ARGS").unwrap_or_default();
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--http-addr")
            .arg(&self.metrics)
            .args(extra.split_whitespace())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(file.try_clone().expect("the operator's log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} failed ({e}); build it first with `cargo build --release`",
                    self.binary.display()
                )
            });
        println!(
            "  operator started: pid {}, metrics http://{}/metrics, log {}",
            child.id(),
            self.metrics,
            log.display()
        );
        self.pid = Some(child.id());
        self.child = Some(child);
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    async fn wait_ready(&mut self) -> Duration {
        let t = Instant::now();
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the operator exited ({status}); see its log in {}",
                    self.log_dir.display()
                );
            }
            if let Ok((code, _)) = http_get(&self.metrics, "/readyz").await
                && code == 200
            {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "the operator is not ready after 5 min"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn scrape(&self) -> BTreeMap<&'static str, f64> {
        let (_, body) = http_get(&self.metrics, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("scraping http://{}/metrics: {e}", self.metrics));
        let mut out = BTreeMap::new();
        for name in WRITE_METRICS {
            let sum: f64 = body
                .lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            out.insert(name, sum);
        }
        out
    }

    /// Scrapes until the write counters did not move for `quiet` (at most `max`).
    async fn settle(&self, quiet: Duration, max: Duration) -> BTreeMap<&'static str, f64> {
        let t = Instant::now();
        let mut last = self.scrape().await;
        let mut since = Instant::now();
        while since.elapsed() < quiet && t.elapsed() < max {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.scrape().await;
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        last
    }

    fn memory(&self) -> String {
        let Some(pid) = self.pid else {
            return "unknown (set IMS_SCALE_OPERATOR_PID)".into();
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        format!("VmRSS {}, VmHWM {}", field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    Ok((code, body.to_string()))
}

fn delta(after: &BTreeMap<&'static str, f64>, before: &BTreeMap<&'static str, f64>, name: &str) -> u64 {
    (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)).max(0.0) as u64
}

fn print_writes(
    label: &str,
    after: &BTreeMap<&'static str, f64>,
    before: &BTreeMap<&'static str, f64>,
    expected: Option<(usize, usize)>,
) {
    let d = |n| delta(after, before, n);
    println!(
        "  operator writes {label}: {} reconciles, {} status patches, {} grant applies, {} grant deletes, {} events, {} write errors",
        d("ims_reconciles_total"),
        d("ims_status_patches_total"),
        d("ims_grant_applies_total"),
        d("ims_grant_deletes_total"),
        d("ims_events_total"),
        d("ims_write_errors_total"),
    );
    if let Some((statuses, grants)) = expected {
        println!(
            "    needed at least: {statuses} status writes (one per object with a status, ImageQuotas and ImageOffers included), {grants} grant applies (a Role and a RoleBinding per image) -> {:.2} status writes per object, {:.2} grant applies per grant object",
            d("ims_status_patches_total") as f64 / statuses as f64,
            d("ims_grant_applies_total") as f64 / grants as f64,
        );
    }
}

/// Creates every object with at most `concurrency` requests in flight; retries what the
/// server throttles or fails transiently. Returns the objects created.
async fn create_all<K, F>(objects: Vec<K>, concurrency: usize, api_of: F) -> usize
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    F: Fn(&K) -> Api<K>,
{
    let results: Vec<bool> = stream::iter(objects)
        .map(|o| {
            let api = api_of(&o);
            async move {
                let mut attempt = 0;
                loop {
                    match api.create(&PostParams::default(), &o).await {
                        Ok(_) => return true,
                        Err(kube::Error::Api(e)) if e.code == 409 => return false,
                        Err(e) if attempt < 10 => {
                            attempt += 1;
                            eprintln!("    create {} failed ({e}); retrying", o.name_any());
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(e) => panic!("creating {}: {e}", o.name_any()),
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().filter(|c| *c).count()
}

/// Deletes the run's namespaces and waits until they are gone. Returns how many there were.
async fn delete_namespaces(client: &Client, prefix: &str, concurrency: usize) -> usize {
    let api: Api<Namespace> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{RUN_LABEL}={prefix}"));
    let names: Vec<String> = api
        .list_metadata(&lp)
        .await
        .expect("listing namespaces")
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let count = names.len();
    stream::iter(names)
        .map(|n| {
            let api = api.clone();
            async move {
                match api.delete(&n, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => eprintln!("    deleting namespace {n}: {e}"),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    let t = Instant::now();
    let mut last = Instant::now();
    loop {
        let left = api.list_metadata(&lp).await.expect("listing namespaces").items.len();
        if left == 0 {
            return count;
        }
        if last.elapsed() > Duration::from_secs(15) {
            println!(
                "    {left} namespaces still terminating ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "namespaces of {prefix} still terminating after 30 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Applies the operator's CRDs (as `kubectl apply --server-side -f crds/`) and waits until
/// they are established.
async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("ims-scale-bench").force();
    for crd in api::crds() {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let t = Instant::now();
        loop {
            let c = api.get(&name).await.expect("reading a CRD");
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let Ok(kubeconfig) = std::env::var(KUBECONFIG_ENV) else {
        println!(
            "scale run skipped: set {KUBECONFIG_ENV} to a cluster-admin kubeconfig to run it (see the README, section Performance)"
        );
        return;
    };
    let plan = Plan {
        prefix: std::env::var("IMS_SCALE_PREFIX").unwrap_or_else(|_| "ims-scale".into()),
        tenants: env_usize("IMS_SCALE_TENANTS", 100),
        images: env_usize("IMS_SCALE_IMAGES", 10),
        recipients: env_usize("IMS_SCALE_RECIPIENTS", 10),
        shares: env_usize("IMS_SCALE_SHARES", 2),
    };
    let concurrency = env_usize("IMS_SCALE_CONCURRENCY", 16).max(1);
    let samples = env_usize("IMS_SCALE_LATENCY_SAMPLES", 10);
    let timeout = Duration::from_secs(env_usize("IMS_SCALE_TIMEOUT_SECS", 900) as u64);
    assert!(
        plan.tenants > plan.recipients,
        "IMS_SCALE_TENANTS must exceed IMS_SCALE_RECIPIENTS"
    );
    assert!((1..=128).contains(&plan.recipients), "IMS_SCALE_RECIPIENTS is 1-128");
    assert!(
        plan.images >= plan.shares && plan.shares >= 1 && plan.images.div_ceil(plan.shares) <= 30,
        "every ImageShare lists 1-30 images"
    );
    let external = std::env::var("IMS_SCALE_OPERATOR_METRICS").ok();
    let start_before = external.is_some() || std::env::var("IMS_SCALE_OPERATOR_START").as_deref() == Ok("before");

    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("IMS_SCALE_KUBECONFIG is a readable kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("the kubeconfig is usable");
    let client = Client::try_from(config).expect("a client");

    let p = &plan;
    let pairs = p.tenants * p.images * p.recipients;
    let acceptances = p.tenants * p.acceptances_per_tenant();
    let objects = p.tenants * (1 + p.images + p.shares) + acceptances;
    println!("ims-operator scale run");
    println!(
        "  plan: {} tenants x {} images, {} ImageShares per tenant, each image offered to the next {} tenants: {pairs} pairs; {acceptances} ShareAcceptances; {objects} objects",
        p.tenants, p.images, p.shares, p.recipients
    );
    println!(
        "  machine: {} cores; operator {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if let Some(m) = &external {
            format!("already running at {m}")
        } else if start_before {
            "started before the objects are created".into()
        } else {
            "started after every object exists (cold start)".into()
        }
    );

    let mut operator = Operator {
        metrics: external.clone().unwrap_or_default(),
        pid: std::env::var("IMS_SCALE_OPERATOR_PID")
            .ok()
            .and_then(|p| p.parse().ok()),
        child: None,
        binary: std::env::var_os("IMS_SCALE_OPERATOR_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/ims-operator"),
            PathBuf::from,
        ),
        kubeconfig: std::env::var("IMS_SCALE_OPERATOR_KUBECONFIG").unwrap_or_else(|_| kubeconfig.clone()),
        log_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ims-scale"),
    };
    std::fs::create_dir_all(&operator.log_dir).expect("target/ims-scale");
    if external.is_none() && !operator.binary.exists() {
        panic!(
            "{} is missing: run `cargo build --release` first",
            operator.binary.display()
        );
    }

    apply_crds(&client).await;
    let t = Instant::now();
    let leftover = delete_namespaces(&client, &p.prefix, concurrency).await;
    if leftover > 0 {
        println!(
            "  deleted {leftover} namespaces left over by an earlier run in {}",
            secs(t.elapsed())
        );
    }

    if start_before && external.is_none() {
        operator.start("run");
    }
    if start_before {
        let ready = operator.wait_ready().await;
        println!("  operator ready in {}", secs(ready));
    }
    let before = if start_before {
        Some(operator.scrape().await)
    } else {
        None
    };

    let tracker = Arc::new(Mutex::new(Tracker {
        plan: plan.clone(),
        namespaces: (0..p.tenants).map(|t| p.tenant(t)).collect(),
        images_ok: HashSet::new(),
        shares_ok: HashSet::new(),
        acceptances_ok: HashSet::new(),
        bindings_ok: HashSet::new(),
        stuck: BTreeMap::new(),
        converged_at: None,
    }));
    let watches = spawn_watches(&client, tracker.clone());

    // Create: namespaces, then images, shares and acceptances, each kind at full concurrency.
    let created_at = Instant::now();
    let mut created = 0;
    let kinds: [(&str, usize, Duration); 4] = {
        let t = Instant::now();
        let n = create_all((0..p.tenants).map(|t| p.namespace(t)).collect(), concurrency, |_| {
            Api::all(client.clone())
        })
        .await;
        let ns = ("Namespace", n, t.elapsed());
        let t = Instant::now();
        let imgs: Vec<PrivateImage> = (0..p.tenants)
            .flat_map(|t| (0..p.images).map(move |i| (t, i)))
            .map(|(t, i)| p.private_image(t, i))
            .collect();
        let n = create_all(imgs, concurrency, |o| {
            Api::namespaced(client.clone(), o.meta().namespace.as_deref().unwrap_or_default())
        })
        .await;
        let im = ("PrivateImage", n, t.elapsed());
        let t = Instant::now();
        let shares: Vec<ImageShare> = (0..p.tenants)
            .flat_map(|t| (0..p.shares).map(move |s| (t, s)))
            .map(|(t, s)| p.image_share(t, s))
            .collect();
        let n = create_all(shares, concurrency, |o| {
            Api::namespaced(client.clone(), o.meta().namespace.as_deref().unwrap_or_default())
        })
        .await;
        let sh = ("ImageShare", n, t.elapsed());
        let t = Instant::now();
        let accs: Vec<ShareAcceptance> = (0..p.tenants).flat_map(|r| p.acceptances(r)).collect();
        let n = create_all(accs, concurrency, |o| {
            Api::namespaced(client.clone(), o.meta().namespace.as_deref().unwrap_or_default())
        })
        .await;
        let ac = ("ShareAcceptance", n, t.elapsed());
        [ns, im, sh, ac]
    };
    let create_time = created_at.elapsed();
    for (kind, n, d) in kinds {
        created += n;
        println!("  created {n} {kind}s in {} ({})", secs(d), rate(n, d));
    }
    println!(
        "  created {created} objects in {} ({}, {concurrency} requests in flight)",
        secs(create_time),
        rate(created, create_time)
    );
    let _ = std::io::stdout().flush();

    // Convergence.
    let (start, before) = match before {
        Some(b) => (created_at, b),
        None => {
            let t = Instant::now();
            operator.start("cold");
            let ready = operator.wait_ready().await;
            println!(
                "  operator ready in {} (initial lists of every watched kind)",
                secs(ready)
            );
            (t, operator.scrape().await)
        }
    };
    let mut last_progress = Instant::now();
    let converged = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = tracker.lock().unwrap();
        if let Some(at) = t.converged_at {
            break at;
        }
        if start.elapsed() > timeout {
            panic!("not converged after {}: {}", secs(timeout), t.progress());
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            println!("    {}: {}", secs(start.elapsed()), t.progress());
            last_progress = Instant::now();
        }
    };
    let convergence = converged.duration_since(start);
    watches.abort();
    // Per tenant: its images, shares and acceptances, its ImageQuota, and one ImageOffer from
    // each of the owners that offer to it.
    let statuses_needed = p.tenants * (p.images + p.shares + p.acceptances_per_tenant() + 1 + p.recipients);
    let grants_needed = 2 * p.tenants * p.images;
    let after = operator.settle(Duration::from_secs(3), Duration::from_secs(60)).await;
    if external.is_none() && !start_before {
        println!(
            "  converged {} after the operator started ({} objects with a status, {} grants)",
            secs(convergence),
            statuses_needed,
            p.tenants * p.images
        );
    } else {
        println!(
            "  converged {} after the first create, {} after the last",
            secs(convergence),
            secs(converged.saturating_duration_since(created_at + create_time))
        );
    }
    print_writes(
        "until converged (+3 s quiet)",
        &after,
        &before,
        Some((statuses_needed, grants_needed)),
    );
    println!("  operator memory after convergence: {}", operator.memory());

    // A restart of the converged operator must write nothing.
    if external.is_none() {
        operator.stop();
        operator.start("restart");
        let ready = operator.wait_ready().await;
        let base = operator.scrape().await;
        let settled = operator.settle(Duration::from_secs(5), Duration::from_secs(60)).await;
        println!("  restarted operator ready in {}", secs(ready));
        print_writes(
            "after the restart (resync of a converged cluster)",
            &settled,
            &base,
            None,
        );
        println!("  operator memory after the restart: {}", operator.memory());
    }

    // Accept -> grant latency: a new ShareAcceptance for a pending pair until the owner's
    // RoleBinding names the recipient.
    let mut latencies = Vec::new();
    if let Some(j) = p.pending_offset() {
        let base = operator.scrape().await;
        for k in 0..samples {
            let r = k * p.tenants / samples.max(1);
            let owner = r + p.tenants - j;
            let owner_ns = p.tenant(owner);
            let subject = format!("system:serviceaccounts:{}", p.tenant(r));
            let acc = p.acceptance(r, &format!("latency-{owner_ns}"), &owner_ns, vec![], "Accept");
            let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &owner_ns);
            let grant = format!("ims-image-{}", Plan::image(0));
            let t = Instant::now();
            Api::<ShareAcceptance>::namespaced(client.clone(), &p.tenant(r))
                .create(&PostParams::default(), &acc)
                .await
                .expect("creating a ShareAcceptance");
            loop {
                let b = bindings.get_opt(&grant).await.expect("reading a RoleBinding");
                if b.iter()
                    .flat_map(|b| b.subjects.iter().flatten())
                    .any(|s| s.name == subject)
                {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "no grant after 60 s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies.push(t.elapsed());
        }
        latencies.sort();
        if !latencies.is_empty() {
            let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
            println!(
                "  accept -> grant latency: median {}, min {}, max {} ({} samples, RoleBinding polled every 10 ms)",
                ms(latencies[latencies.len() / 2]),
                ms(latencies[0]),
                ms(*latencies.last().unwrap()),
                latencies.len()
            );
            let settled = operator.settle(Duration::from_secs(2), Duration::from_secs(30)).await;
            print_writes("for the latency probes", &settled, &base, None);
        }
    }
    println!("  operator memory at the end: {}", operator.memory());

    if std::env::var("IMS_SCALE_KEEP").as_deref() == Ok("1") {
        println!(
            "  kept the namespaces (IMS_SCALE_KEEP=1); label {RUN_LABEL}={}",
            p.prefix
        );
        return;
    }
    let base = operator.scrape().await;
    let t = Instant::now();
    let n = delete_namespaces(&client, &p.prefix, concurrency).await;
    println!("  deleted {n} namespaces in {} (operator running)", secs(t.elapsed()));
    let settled = operator.settle(Duration::from_secs(2), Duration::from_secs(30)).await;
    print_writes("during the deletion", &settled, &base, None);
}
