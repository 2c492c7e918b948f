//! Decision-engine scale (README, "Performance"): 1,000 tenants, 10,000 images, 100,000 offered pairs and
//! 50,000 acceptances, with every limit lifted so that everything is offered.
//!
//! Run with `cargo bench --bench engine`. Prints the snapshot build time, the full evaluation
//! time (best of 3), the time to re-evaluate the two tenants touched by one changed acceptance
//! (median of 100), the resync of an unchanged world, and the peak memory of the process.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use ims_operator::{
    api::{
        Decision, FileFormat, FileSource, ImageOffer, ImageQuota, ImageShare, ImageShareSpec, ImageSource,
        PrivateImage, PrivateImageSpec, ShareAcceptance, ShareAcceptanceSpec,
    },
    config::Config,
    core::{self, Evaluator, NamespaceInfo, QuotaUpdate, Snapshot, TenantOutcome, World},
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

const TENANTS: usize = 1_000;
/// Tenants of the smoke run under `cargo test --benches` (no `--bench` argument).
const QUICK_TENANTS: usize = 50;
const IMAGES_PER_TENANT: usize = 10;
const SHARES_PER_TENANT: usize = 2;
const RECIPIENTS_PER_SHARE: usize = 10;
const ACCEPTANCES_PER_TENANT: usize = 50;
const CHANGES: usize = 100;

/// xorshift64: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tenant(i: usize) -> String {
    format!("tenant-{i:04}")
}

fn meta(ns: &str, name: &str, created: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        creation_timestamp: Some(Time(Timestamp::from_second(1_767_225_600 + created).unwrap())),
        generation: Some(1),
        uid: Some(format!("{ns}/{name}")),
        ..Default::default()
    }
}

fn image(ns: &str, name: &str, created: i64) -> PrivateImage {
    PrivateImage {
        metadata: meta(ns, name, created),
        spec: PrivateImageSpec {
            display_name: Some(format!("{name} of {ns}")),
            description: None,
            image_type: Default::default(),
            os_type: None,
            os_version: Some("Ubuntu 22.04 64bit".into()),
            architecture: Default::default(),
            disk_size_gib: 40,
            min_memory_mib: None,
            source: ImageSource {
                file: Some(FileSource {
                    url: format!("s3://{ns}/{name}.qcow2"),
                    format: FileFormat::Qcow2,
                }),
                ..Default::default()
            },
            published: false,
        },
        status: None,
    }
}

/// Objects of the generated world.
struct Generated {
    images: Vec<PrivateImage>,
    shares: Vec<ImageShare>,
    acceptances: Vec<ShareAcceptance>,
    pairs: usize,
}

fn generate(tenants: usize) -> Generated {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut images = Vec::new();
    let mut shares = Vec::new();
    let mut pairs = 0;
    // offered_by[r] = owners that share with r
    let mut offered_by: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); tenants];
    let per_share = IMAGES_PER_TENANT / SHARES_PER_TENANT;
    for t in 0..tenants {
        let ns = tenant(t);
        for i in 0..IMAGES_PER_TENANT {
            images.push(image(&ns, &format!("img-{i}"), (t * 100 + i) as i64));
        }
        for s in 0..SHARES_PER_TENANT {
            let mut recipients = BTreeSet::new();
            while recipients.len() < RECIPIENTS_PER_SHARE {
                let r = rng.below(tenants);
                if r != t {
                    recipients.insert(r);
                }
            }
            for r in &recipients {
                offered_by[*r].insert(t);
            }
            pairs += per_share * recipients.len();
            shares.push(ImageShare {
                metadata: meta(&ns, &format!("share-{s}"), (t * 100 + 50 + s) as i64),
                spec: ImageShareSpec {
                    images: (s * per_share..(s + 1) * per_share)
                        .map(|i| format!("img-{i}"))
                        .collect(),
                    recipients: recipients.iter().map(|r| tenant(*r)).collect(),
                    recipient_selector: None,
                    expires_at: None,
                },
                status: None,
            });
        }
    }
    let mut acceptances = Vec::new();
    for (r, owners) in offered_by.iter().enumerate() {
        let owners: Vec<usize> = owners.iter().copied().collect();
        for k in 0..ACCEPTANCES_PER_TENANT {
            let owner = if owners.is_empty() {
                rng.below(tenants)
            } else {
                owners[rng.below(owners.len())]
            };
            let images = if rng.below(2) == 0 {
                Vec::new()
            } else {
                let n = 1 + rng.below(3);
                let set: BTreeSet<String> = (0..n)
                    .map(|_| format!("img-{}", rng.below(IMAGES_PER_TENANT)))
                    .collect();
                set.into_iter().collect()
            };
            let decision = match rng.below(20) {
                0..=11 => Decision::Accept,
                12..=16 => Decision::Reject,
                _ => Decision::Remove,
            };
            acceptances.push(ShareAcceptance {
                metadata: meta(&tenant(r), &format!("acc-{k:02}"), (r * 100 + k) as i64 + 200_000),
                spec: ShareAcceptanceSpec {
                    owner: tenant(owner),
                    owner_selector: None,
                    images,
                    decision,
                },
                status: None,
            });
        }
    }
    Generated {
        images,
        shares,
        acceptances,
        pairs,
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.limits.private_images_per_tenant = -1;
    config.limits.shared_images_per_tenant = -1;
    config.limits.recipients_per_image = -1;
    config
}

/// What the benchmark keeps of the generated world once the snapshot holds the objects.
struct Built {
    snap: Snapshot,
    images: usize,
    shares: usize,
    pairs: usize,
    /// (namespace, name) of every acceptance, to pick the ones to change.
    acceptances: Vec<(String, String)>,
}

/// Moves the generated objects into a snapshot (the process holds each object once, as the
/// controller's caches do).
fn build(g: Generated, tenants: usize) -> Built {
    let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
    let mut snap = Snapshot::new(config(), World::Cluster { kubevirt: true }, now).unwrap();
    for t in 0..tenants {
        snap.upsert_namespace(&tenant(t), NamespaceInfo::default());
    }
    let (images, shares) = (g.images.len(), g.shares.len());
    for i in g.images {
        snap.upsert_image(Arc::new(i));
    }
    for s in g.shares {
        snap.upsert_share(Arc::new(s));
    }
    let mut acceptances = Vec::with_capacity(g.acceptances.len());
    for a in g.acceptances {
        acceptances.push((a.metadata.namespace.clone().unwrap(), a.metadata.name.clone().unwrap()));
        snap.upsert_acceptance(Arc::new(a));
    }
    Built {
        snap,
        images,
        shares,
        pairs: g.pairs,
        acceptances,
    }
}

/// Writes every desired status into its object, as the controller's status writes would.
fn feed_back(snap: &mut Snapshot, outcomes: &[TenantOutcome]) {
    for o in outcomes {
        let ns = o.namespace.as_str();
        for u in &o.images {
            let mut obj = (*snap.image(ns, &u.name).unwrap().object).clone();
            obj.status = Some(u.status.clone());
            snap.upsert_image(Arc::new(obj));
        }
        for u in &o.shares {
            let e = snap
                .shares_in(ns)
                .find(|e| e.object.metadata.name.as_deref() == Some(&u.name));
            let mut obj = (*e.unwrap().object).clone();
            obj.status = Some(u.status.clone());
            snap.upsert_share(Arc::new(obj));
        }
        for u in &o.acceptances {
            let e = snap
                .acceptances_in(ns)
                .find(|e| e.object.metadata.name.as_deref() == Some(&u.name));
            let mut obj = (*e.unwrap().object).clone();
            obj.status = Some(u.status.clone());
            snap.upsert_acceptance(Arc::new(obj));
        }
        for u in &o.offers {
            let offer = ImageOffer::of(ns, &u.name, u.status.clone());
            snap.set_offer(ns, &u.name, Some(Arc::new(offer)));
        }
        for owner in &o.withdrawn_offers {
            snap.set_offer(ns, owner, None);
        }
        match &o.quota {
            QuotaUpdate::Apply { status, .. } => {
                snap.set_quota(ns, Some(Arc::new(ImageQuota::of(ns, status.clone()))));
            }
            QuotaUpdate::Delete => snap.set_quota(ns, None),
            QuotaUpdate::Unchanged => {}
        }
    }
}

/// A line of /proc/self/status, e.g. `VmHWM:` (peak resident set) or `VmRSS:`.
fn memory(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l[key.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".into())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, with fewer repeats.
    let quick = !std::env::args().any(|a| a == "--bench");
    let t = Instant::now();
    let tenants = if quick { QUICK_TENANTS } else { TENANTS };
    let generated = generate(tenants);
    let generate_time = t.elapsed();

    let t = Instant::now();
    let Built {
        mut snap,
        images,
        shares,
        pairs,
        acceptances,
    } = build(generated, tenants);
    let build_time = t.elapsed();

    let mut best = Duration::MAX;
    let mut outcomes = Vec::new();
    let rss_snapshot = memory("VmRSS:");
    let full_only = std::env::var_os("IMS_BENCH_FULL_EVALUATION_ONLY").is_some();
    for _ in 0..if quick || full_only { 1 } else { 3 } {
        // `evaluate_all` starts from an empty one-shot evaluator: every run evaluates from
        // scratch.
        drop(std::mem::take(&mut outcomes)); // outside the timing, and not held twice
        let t = Instant::now();
        let fresh = core::evaluate_all(&snap);
        best = best.min(t.elapsed());
        outcomes = fresh;
    }
    let peak_after_evaluation = memory("VmHWM:");
    if full_only {
        // For a profiler (e.g. callgrind, whose counts do not vary with the machine's load):
        // the world and its full evaluation, nothing else.
        println!("full evaluation: {}", ms(best));
        return;
    }

    // How much of it is the owner-side decision (admission, offers, states) alone.
    let t = Instant::now();
    let mut evaluator = Evaluator::new();
    for ns in snap.tenants() {
        std::hint::black_box(evaluator.owner(&snap, &ns));
    }
    drop(evaluator);
    let owner_side = t.elapsed();

    // The controller's cold start: the same pass with the evaluator that remembers statuses
    // for the next reconcile.
    drop(std::mem::take(&mut outcomes));
    let t = Instant::now();
    let mut evaluator = Evaluator::new();
    outcomes = snap.tenants().iter().map(|ns| evaluator.tenant(&snap, ns)).collect();
    let cold_start = t.elapsed();
    drop(evaluator);
    let offered: i64 = outcomes
        .iter()
        .flat_map(|o| &o.shares)
        .map(|u| i64::from(u.status.offered))
        .sum();
    let accepted: i64 = outcomes
        .iter()
        .flat_map(|o| &o.shares)
        .map(|u| i64::from(u.status.accepted))
        .sum();
    let grants: usize = outcomes.iter().map(|o| o.grants.len()).sum();
    let writes: usize = outcomes.iter().map(|o| o.writes()).sum();
    let events: usize = outcomes.iter().map(|o| o.events.len()).sum();
    assert_eq!(offered as usize, pairs, "every pair is offered");

    // Resync: the statuses written back, everything evaluated again.
    feed_back(&mut snap, &outcomes);
    let t = Instant::now();
    let mut evaluator = Evaluator::new();
    let resync: Vec<TenantOutcome> = snap.tenants().iter().map(|ns| evaluator.tenant(&snap, ns)).collect();
    let resync_time = t.elapsed();
    let resync_writes: usize = resync.iter().map(|o| o.writes()).sum();
    let resync_events: usize = resync.iter().map(|o| o.events.len()).sum();
    drop(resync);
    assert_eq!(
        (resync_writes, resync_events),
        (0, 0),
        "an unchanged world writes nothing"
    );

    // One acceptance changes: re-evaluate its owner and its recipient only.
    let mut rng = Rng(42);
    let mut times = Vec::new();
    for _ in 0..if quick { 5 } else { CHANGES } {
        let (ns, name) = acceptances[rng.below(acceptances.len())].clone();
        let current = snap
            .acceptances_in(&ns)
            .find(|e| e.object.metadata.name.as_deref() == Some(name.as_str()))
            .unwrap()
            .object
            .clone();
        let mut changed = (*current).clone();
        changed.spec.decision = match changed.spec.decision {
            Decision::Accept => Decision::Reject,
            Decision::Reject => Decision::Remove,
            Decision::Remove => Decision::Accept,
        };
        let owner = changed.spec.owner.clone();
        let t = Instant::now();
        snap.upsert_acceptance(Arc::new(changed));
        let owner_outcome = evaluator.tenant(&snap, &owner);
        let recipient_outcome = evaluator.tenant(&snap, &ns);
        times.push(t.elapsed());
        std::hint::black_box((owner_outcome, recipient_outcome));
    }
    times.sort();
    let median = times[times.len() / 2];

    println!("decision engine benchmark{}", if quick { " (quick run)" } else { "" });
    println!(
        "  world: {tenants} tenants, {} images, {} shares, {} pairs, {} acceptances (limits unlimited)",
        images,
        shares,
        pairs,
        acceptances.len()
    );
    println!("  generate objects:          {}", ms(generate_time));
    println!("  snapshot build:            {}", ms(build_time));
    println!(
        "  full evaluation:           {} (evaluate_all, best of {})",
        ms(best),
        if quick { 1 } else { 3 }
    );
    println!(
        "    of which owner decisions:  {} (Evaluator::owner for every tenant: admission, offers, states)",
        ms(owner_side)
    );
    println!(
        "  controller cold start:     {} (every tenant with the evaluator that remembers statuses)",
        ms(cold_start)
    );
    println!(
        "    -> {offered} pairs offered, {accepted} accepted, {grants} grants, {writes} status writes, {events} events"
    );
    println!(
        "  resync (statuses fed back): {} -> {resync_writes} writes, {resync_events} events",
        ms(resync_time)
    );
    println!(
        "  one acceptance changed:    {} median, {} max (upsert + owner tenant + recipient tenant, {} changes)",
        ms(median),
        ms(*times.last().unwrap()),
        times.len()
    );
    println!("  memory: {rss_snapshot} resident with the snapshot built (VmRSS),");
    println!("          {peak_after_evaluation} peak after the full evaluations (VmHWM),");
    println!(
        "          {} peak at the end (VmHWM; also holds the fed-back snapshot and the resync)",
        memory("VmHWM:")
    );
}
