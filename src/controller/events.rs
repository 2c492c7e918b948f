//! Publishing Kubernetes Events: the engine's transition events, reports of refused writes and
//! of objects that do not decode. Publishing is best effort: a failed Event is counted and
//! logged, and never fails a reconcile.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use tracing::warn;

use super::{
    feed::UnreadableReport,
    leader::Fence,
    metrics::{Metrics, WriteKind, error_reason},
    writer::WriteFailure,
};
use crate::core::{Action, EventReason, EventSpec, EventType, Kind, Regarding};

fn object_reference(r: &Regarding) -> ObjectReference {
    ObjectReference {
        api_version: Some(r.kind.api_version().to_string()),
        kind: Some(r.kind.as_str().to_string()),
        namespace: r.namespace.as_deref().map(String::from),
        name: Some(r.name.to_string()),
        uid: r.uid.as_deref().map(String::from),
        ..Default::default()
    }
}

/// Publishes one event, unless this replica may no longer write.
pub async fn publish(recorder: &Recorder, metrics: &Metrics, fence: &Fence, e: &EventSpec) {
    let event = Event {
        type_: match e.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: e.reason.to_string(),
        note: Some(e.note.clone()),
        action: e.action.as_str().to_string(),
        secondary: None,
    };
    match fence
        .guard(recorder.publish(&event, &object_reference(&e.regarding)))
        .await
    {
        Ok(Ok(())) => metrics.event_published(),
        Ok(Err(err)) => {
            metrics.write_failed(WriteKind::Event, error_reason(&err));
            warn!(error = %err, reason = %e.reason, "could not publish an event");
        }
        Err(_) => {}
    }
}

/// The Warning Event for a refused write, on the object it concerns.
pub fn write_failure_event(failure: &WriteFailure) -> EventSpec {
    EventSpec::new(
        &failure.regarding,
        EventType::Warning,
        EventReason::WriteFailed.as_str(),
        Action::Write,
        format!("{} (retried with backoff)", failure.message),
    )
}

/// The Warning Event for an object that does not decode.
pub fn unreadable_event(report: &UnreadableReport) -> EventSpec {
    let regarding = Regarding::object(report.kind, &report.metadata);
    let consequence = if report.kept_last_version {
        "the operator keeps using the last version it could read"
    } else {
        "the operator can not use it; it grants nothing and keeps holding what it held under the limits"
    };
    EventSpec::new(
        &regarding,
        EventType::Warning,
        EventReason::UnreadableObject.as_str(),
        Action::Decode,
        format!("this object does not decode ({}); {consequence}", report.error),
    )
}

/// (kind, namespace, name) of an object.
type ObjectKey = (&'static str, String, String);

/// Reports each unreadable version once (a relist delivers every object again).
#[derive(Default)]
pub struct UnreadableReports(Mutex<HashMap<ObjectKey, Option<String>>>);

impl UnreadableReports {
    /// Whether this version of the object was not reported yet.
    pub fn first_time(&self, report: &UnreadableReport) -> bool {
        let key = (
            report.kind.as_str(),
            report.metadata.namespace.clone().unwrap_or_default(),
            report.metadata.name.clone().unwrap_or_default(),
        );
        let version = report.metadata.resource_version.clone();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(key, version.clone()) != Some(version)
    }
}

/// Namespace warnings are level-based: the engine repeats them at every evaluation, so one
/// is published only when it was not published for that namespace already.
#[derive(Default)]
pub struct NamespaceWarnings(Mutex<HashMap<String, BTreeSet<String>>>);

impl NamespaceWarnings {
    pub fn fresh(&self, ns: &str, events: Vec<EventSpec>) -> Vec<EventSpec> {
        let mut published = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let current: BTreeSet<String> = events
            .iter()
            .filter(|e| e.regarding.kind == Kind::Namespace)
            .map(|e| e.note.clone())
            .collect();
        let before = published.insert(ns.to_string(), current).unwrap_or_default();
        events
            .into_iter()
            .filter(|e| e.regarding.kind != Kind::Namespace || !before.contains(&e.note))
            .collect()
    }
}
