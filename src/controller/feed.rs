//! Keeps the [`Cache`] current from watcher events and asks for the reconciles they cause.
//!
//! An object that does not decode is never simply forgotten (that would fail open: a named
//! Reject would stop counting, an unreadable share would free its limit slots). If a version of
//! it was decoded before, that last version stays in use; if none ever was, the engine is told
//! it exists (with its salvaged status) and holds what it may hold.

use std::{collections::BTreeSet, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{ResourceExt, runtime::watcher};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use super::{
    State,
    cache::{Cache, Cached},
    guard::{Guarded, Salvage, Salvaged},
};

/// An object that could not be decoded, as reported to users.
#[derive(Clone, Debug)]
pub struct UnreadableReport {
    pub kind: crate::core::Kind,
    pub metadata: ObjectMeta,
    pub error: String,
    /// Whether an earlier decoded version stays in use.
    pub kept_last_version: bool,
}

/// Where a feed reports what it saw.
#[derive(Clone)]
pub struct FeedSink {
    pub cache: Arc<Cache>,
    pub state: Arc<State>,
    /// Namespaces to reconcile.
    pub triggers: UnboundedSender<String>,
    /// Objects that do not decode.
    pub invalid: UnboundedSender<UnreadableReport>,
}

impl FeedSink {
    fn trigger(&self, namespaces: BTreeSet<String>) {
        for ns in namespaces {
            // The receiver lives as long as the controller; after shutdown there is nobody to tell.
            let _ = self.triggers.send(ns);
        }
    }
}

/// What a watch delivered: an object, or what could be read of one that does not decode.
enum Seen<K> {
    Object(K),
    Unreadable(Box<Undecoded>),
}

/// What could be read of an object that does not decode.
struct Undecoded {
    metadata: ObjectMeta,
    error: String,
    salvaged: Salvaged,
}

impl<K: ResourceExt> Seen<K> {
    fn key(&self) -> (String, String) {
        let meta = match self {
            Seen::Object(o) => o.meta(),
            Seen::Unreadable(u) => &u.metadata,
        };
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// Consumes a watcher stream of one of the operator's kinds, which may hold objects that do
/// not decode.
pub async fn feed_guarded<K>(
    kind: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<Guarded<K>>, watcher::Error>>,
    sink: FeedSink,
) where
    K: Cached + Salvage,
{
    let seen = stream.map(|event| {
        event.map(|e| {
            map_event(e, |Guarded(g)| match g {
                Ok(o) => Seen::Object(o),
                Err(u) => Seen::Unreadable(Box::new(Undecoded {
                    metadata: u.metadata,
                    error: u.error,
                    salvaged: K::salvaged(u.status),
                })),
            })
        })
    });
    consume(kind, seen, sink).await;
}

/// Consumes a watcher stream of a built-in kind.
pub async fn feed<K>(
    kind: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    sink: FeedSink,
) where
    K: Cached,
{
    consume(
        kind,
        stream.map(|event| event.map(|e| map_event(e, Seen::Object))),
        sink,
    )
    .await;
}

fn map_event<A, B>(event: watcher::Event<A>, mut f: impl FnMut(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

async fn consume<K: Cached>(
    kind: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<Seen<K>>, watcher::Error>>,
    sink: FeedSink,
) {
    let mut buffer: Vec<Seen<K>> = Vec::new();
    let mut first_sync = true;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // The watcher retries with backoff and relists after 410 Gone or a restart.
                warn!(kind, error = %e, "watch failed; retrying");
                sink.state.metrics.watch_error(kind);
                continue;
            }
        };
        match event {
            watcher::Event::Apply(seen) => apply(&sink, kind, seen),
            watcher::Event::Delete(seen) => {
                let (ns, name) = seen.key();
                forget::<K>(&sink, kind, &ns, &name);
            }
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(seen) => buffer.push(seen),
            watcher::Event::InitDone => {
                relisted(&sink, kind, std::mem::take(&mut buffer));
                if first_sync {
                    first_sync = false;
                    sink.cache.mark_synced();
                    debug!(kind, "cache synced");
                }
            }
        }
    }
}

fn apply<K: Cached>(sink: &FeedSink, kind: &'static str, seen: Seen<K>) {
    let (ns, name) = seen.key();
    match seen {
        Seen::Object(obj) => {
            // Both the relations the previous version had and those of the new one.
            let mut touched = K::touched_by_key(&sink.cache, &ns, &name);
            touched.extend(K::touched(&sink.cache, &obj));
            sink.cache.observed(&ns, obj.meta().resource_version.as_deref());
            // Readable again: whoever the unreadable version held back is told as well (read
            // before it is forgotten).
            let was_unreadable = sink.cache.touched_by_unreadable(kind, &ns);
            if sink.cache.set_unreadable(kind, &ns, &name, None) {
                touched.extend(was_unreadable);
                sink.state
                    .metrics
                    .set_unreadable(kind, sink.cache.unreadable_count(kind));
            }
            K::store(&sink.cache, Arc::new(obj.clone()));
            touched.extend(K::touched(&sink.cache, &obj));
            sink.trigger(touched);
        }
        Seen::Unreadable(undecoded) => {
            let Undecoded {
                metadata,
                error,
                salvaged,
            } = *undecoded;
            sink.cache.observed(&ns, metadata.resource_version.as_deref());
            let report_kind = salvaged.kind();
            let kept_last_version = K::known(&sink.cache).contains(&(ns.clone(), name.clone()));
            // A decoded version stays in use as it is; otherwise the engine learns that an
            // unreadable object exists and what it holds.
            let salvaged = (!kept_last_version).then_some(salvaged);
            sink.cache.set_unreadable(kind, &ns, &name, Some(salvaged));
            sink.state
                .metrics
                .set_unreadable(kind, sink.cache.unreadable_count(kind));
            warn!(kind, namespace = %ns, name = %name, error = %error, kept_last_version,
                  "an object does not decode");
            let mut touched = K::touched_by_key(&sink.cache, &ns, &name);
            touched.extend(sink.cache.touched_by_unreadable(kind, &ns));
            sink.trigger(touched);
            let _ = sink.invalid.send(UnreadableReport {
                kind: report_kind,
                metadata,
                error,
                kept_last_version,
            });
        }
    }
}

/// Forgets an object (decoded or not) known only by its key, telling every tenant it related to.
fn forget<K: Cached>(sink: &FeedSink, kind: &'static str, namespace: &str, name: &str) {
    let mut touched = K::touched_by_key(&sink.cache, namespace, name);
    touched.insert(if namespace.is_empty() {
        name.to_string()
    } else {
        namespace.to_string()
    });
    if sink.cache.set_unreadable(kind, namespace, name, None) {
        touched.extend(sink.cache.touched_by_unreadable(kind, namespace));
        sink.state
            .metrics
            .set_unreadable(kind, sink.cache.unreadable_count(kind));
    }
    K::forget(&sink.cache, namespace, name);
    sink.trigger(touched);
}

/// After a (re)list: the listed objects replace the cached ones; objects missing from the
/// list were deleted while the watch was down.
fn relisted<K: Cached>(sink: &FeedSink, kind: &'static str, listed: Vec<Seen<K>>) {
    let mut before = K::known(&sink.cache);
    before.extend(sink.cache.unreadable_keys(kind));
    let mut present = BTreeSet::new();
    for seen in listed {
        present.insert(seen.key());
        apply(sink, kind, seen);
    }
    for (ns, name) in before.difference(&present) {
        forget::<K>(sink, kind, ns, name);
    }
}
