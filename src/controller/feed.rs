//! Keeps the [`Cache`] current from watcher events and asks for the reconciles they cause.

use std::{collections::BTreeSet, sync::Arc};

use futures::{Stream, StreamExt};
use kube::{
    ResourceExt,
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::watcher,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use super::cache::{Cache, Cached};

/// Where a feed reports what it saw.
#[derive(Clone)]
pub struct FeedSink {
    pub cache: Arc<Cache>,
    /// Namespaces to reconcile.
    pub triggers: UnboundedSender<String>,
    /// Objects that do not deserialize: (kind, object metadata, error).
    pub invalid: UnboundedSender<(&'static str, InvalidObject)>,
}

impl FeedSink {
    fn trigger(&self, namespaces: BTreeSet<String>) {
        for ns in namespaces {
            // The receiver lives as long as the controller; after shutdown there is nobody to tell.
            let _ = self.triggers.send(ns);
        }
    }
}

/// Consumes a watcher stream of a kind that may hold malformed objects.
pub async fn feed_guarded<K>(
    kind: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<DeserializeGuard<K>>, watcher::Error>>,
    sink: FeedSink,
) where
    K: Cached,
{
    let mut buffer: Vec<K> = Vec::new();
    let mut first_sync = true;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // The watcher retries with backoff and relists after 410 Gone or a restart.
                warn!(kind, error = %e, "watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Apply(DeserializeGuard(Ok(obj))) => apply(&sink, obj),
            watcher::Event::Delete(DeserializeGuard(Ok(obj))) => delete(&sink, &obj),
            watcher::Event::Apply(DeserializeGuard(Err(invalid)))
            | watcher::Event::InitApply(DeserializeGuard(Err(invalid))) => {
                skip_invalid::<K>(&sink, kind, invalid);
            }
            watcher::Event::Delete(DeserializeGuard(Err(invalid))) => {
                let ns = invalid.metadata.namespace.clone().unwrap_or_default();
                let name = invalid.metadata.name.clone().unwrap_or_default();
                forget::<K>(&sink, &ns, &name);
            }
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(DeserializeGuard(Ok(obj))) => buffer.push(obj),
            watcher::Event::InitDone => {
                relisted(&sink, std::mem::take(&mut buffer));
                if first_sync {
                    first_sync = false;
                    sink.cache.mark_synced();
                    debug!(kind, "cache synced");
                }
            }
        }
    }
}

/// Consumes a watcher stream of a built-in kind.
pub async fn feed<K>(
    kind: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    sink: FeedSink,
) where
    K: Cached,
{
    let guarded = stream.map(|event| {
        event.map(|e| match e {
            watcher::Event::Apply(o) => watcher::Event::Apply(DeserializeGuard(Ok(o))),
            watcher::Event::Delete(o) => watcher::Event::Delete(DeserializeGuard(Ok(o))),
            watcher::Event::InitApply(o) => watcher::Event::InitApply(DeserializeGuard(Ok(o))),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
    });
    feed_guarded(kind, guarded, sink).await;
}

fn apply<K: Cached>(sink: &FeedSink, obj: K) {
    // Both the relations the previous version had and those of the new one.
    let mut touched = K::touched_by_key(&sink.cache, &obj.namespace().unwrap_or_default(), &obj.name_any());
    touched.extend(K::touched(&sink.cache, &obj));
    sink.cache.observed(
        &obj.namespace().unwrap_or_default(),
        obj.meta().resource_version.as_deref(),
    );
    K::store(&sink.cache, Arc::new(obj.clone()));
    touched.extend(K::touched(&sink.cache, &obj));
    sink.trigger(touched);
}

fn delete<K: Cached>(sink: &FeedSink, obj: &K) {
    let mut touched = K::touched(&sink.cache, obj);
    touched.extend(K::touched_by_key(
        &sink.cache,
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
    ));
    K::forget(&sink.cache, &obj.namespace().unwrap_or_default(), &obj.name_any());
    sink.trigger(touched);
}

/// Forgets an object known only by its key, telling every tenant it related to.
fn forget<K: Cached>(sink: &FeedSink, namespace: &str, name: &str) {
    let mut touched = K::touched_by_key(&sink.cache, namespace, name);
    touched.insert(if namespace.is_empty() {
        name.to_string()
    } else {
        namespace.to_string()
    });
    K::forget(&sink.cache, namespace, name);
    sink.trigger(touched);
}

fn skip_invalid<K: Cached>(sink: &FeedSink, kind: &'static str, invalid: InvalidObject) {
    let ns = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    warn!(kind, namespace = %ns, name = %name, error = %invalid.error, "skipping an object that does not deserialize");
    // A formerly valid object that became unreadable is treated as gone.
    forget::<K>(sink, &ns, &name);
    let _ = sink.invalid.send((kind, invalid));
}

/// After a (re)list: the listed objects replace the cached ones; objects missing from the
/// list were deleted while the watch was down.
fn relisted<K: Cached>(sink: &FeedSink, listed: Vec<K>) {
    let before = K::known(&sink.cache);
    let mut touched = BTreeSet::new();
    let mut present = BTreeSet::new();
    for obj in listed {
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        touched.extend(K::touched_by_key(&sink.cache, &key.0, &key.1));
        present.insert(key);
        touched.extend(K::touched(&sink.cache, &obj));
        sink.cache.observed(
            &obj.namespace().unwrap_or_default(),
            obj.meta().resource_version.as_deref(),
        );
        K::store(&sink.cache, Arc::new(obj.clone()));
        touched.extend(K::touched(&sink.cache, &obj));
    }
    sink.trigger(touched);
    // Objects missing from the list were deleted while the watch was down.
    for (ns, name) in before.difference(&present) {
        forget::<K>(sink, ns, name);
    }
}
