//! Kubernetes Events the engine asks for: one per state transition and per refusal, derived
//! from the difference between the current and the desired status (so an unchanged object
//! produces none).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{ImageShareStatus, PrivateImageStatus, READY, ShareAcceptanceStatus, ShareState, ready_condition};

use super::conditions::{name_list, truncate};

/// Event notes are capped like the API's 1 KiB `note`.
pub const MAX_NOTE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Regarding {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventSpec {
    pub regarding: Regarding,
    pub type_: EventType,
    pub reason: String,
    pub action: String,
    pub note: String,
}

impl EventSpec {
    pub fn new(regarding: &Regarding, type_: EventType, reason: &str, action: &str, note: String) -> Self {
        EventSpec {
            regarding: regarding.clone(),
            type_,
            reason: reason.into(),
            action: action.into(),
            note: truncate(note, MAX_NOTE),
        }
    }
}

fn ready_triplet(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(&str, &str, &str)> {
    ready_condition(conditions).map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Event for a changed Ready condition (status or reason).
fn ready_event(
    regarding: &Regarding,
    old: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    action: &str,
) -> Option<EventSpec> {
    let (status, reason, message) = ready_triplet(new)?;
    let changed = match ready_triplet(old) {
        Some((s, r, _)) => s != status || r != reason,
        None => true,
    };
    if !changed {
        return None;
    }
    let type_ = if status == "True" {
        EventType::Normal
    } else {
        EventType::Warning
    };
    Some(EventSpec::new(
        regarding,
        type_,
        reason,
        action,
        format!("{READY}={status}: {message}"),
    ))
}

pub fn image_events(
    regarding: &Regarding,
    old: Option<&PrivateImageStatus>,
    new: &PrivateImageStatus,
) -> Vec<EventSpec> {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    ready_event(regarding, old_conditions, &new.conditions, "Admit")
        .into_iter()
        .collect()
}

fn share_pairs(status: Option<&ImageShareStatus>) -> BTreeMap<(String, String), ShareState> {
    let mut pairs = BTreeMap::new();
    for img in status.iter().flat_map(|s| &s.images) {
        for (state, list) in img.lists() {
            for r in list {
                pairs.insert((img.name.clone(), r.clone()), state);
            }
        }
    }
    pairs
}

pub fn share_events(regarding: &Regarding, old: Option<&ImageShareStatus>, new: &ImageShareStatus) -> Vec<EventSpec> {
    let before = share_pairs(old);
    let after = share_pairs(Some(new));
    // reason -> "image → recipient" items
    let mut groups: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (pair, state) in &after {
        let reason = match before.get(pair) {
            None => "Offered",
            Some(prev) if prev != state => match state {
                ShareState::Pending => "Pending",
                ShareState::Accepted => "RecipientAccepted",
                ShareState::Rejected => "RecipientRejected",
                ShareState::Removed => "RecipientRemoved",
            },
            Some(_) => continue,
        };
        groups
            .entry(reason)
            .or_default()
            .push(format!("{} → {}", pair.0, pair.1));
    }
    for pair in before.keys().filter(|p| !after.contains_key(*p)) {
        groups
            .entry("OfferWithdrawn")
            .or_default()
            .push(format!("{} → {}", pair.0, pair.1));
    }
    let mut events: Vec<EventSpec> = groups
        .into_iter()
        .map(|(reason, items)| {
            let note = format!("{reason}: {}", name_list(items.iter().map(String::as_str), 20));
            EventSpec::new(regarding, EventType::Normal, reason, "Share", note)
        })
        .collect();
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    events.extend(ready_event(regarding, old_conditions, &new.conditions, "Share"));
    events
}

/// Recipient-side events. `why_gone` explains, per image that is no longer offered, why
/// (it only ever names images this namespace was offered before).
pub fn acceptance_events(
    regarding: &Regarding,
    owner: &str,
    old: Option<&ShareAcceptanceStatus>,
    new: &ShareAcceptanceStatus,
    why_gone: &dyn Fn(&str) -> String,
) -> Vec<EventSpec> {
    let before: BTreeMap<&str, ShareState> = old
        .iter()
        .flat_map(|s| &s.images)
        .map(|i| (i.name.as_str(), i.state))
        .collect();
    let after: BTreeMap<&str, ShareState> = new.images.iter().map(|i| (i.name.as_str(), i.state)).collect();
    let listed_before: BTreeSet<&str> = before.keys().copied().collect();
    let mut events = Vec::new();
    let mut offered = Vec::new();
    let mut changed: BTreeMap<ShareState, Vec<&str>> = BTreeMap::new();
    for (name, state) in &after {
        match before.get(name) {
            None => offered.push(*name),
            Some(prev) if prev != state => changed.entry(*state).or_default().push(name),
            Some(_) => {}
        }
    }
    if !offered.is_empty() {
        events.push(EventSpec::new(
            regarding,
            EventType::Normal,
            "ImageOffered",
            "Offer",
            format!("{owner} offers: {}", name_list(offered.iter().copied(), 20)),
        ));
    }
    for (state, names) in changed {
        events.push(EventSpec::new(
            regarding,
            EventType::Normal,
            state.as_str(),
            "Decide",
            format!("now {state}: {}", name_list(names.iter().copied(), 20)),
        ));
    }
    // Images that are no longer in the list were withdrawn or revoked; an image that is simply
    // beyond the 1,000-entry window is still offered, so only truly vanished ones count.
    let more = new.more_images > 0;
    for name in listed_before.iter().filter(|n| !after.contains_key(**n)) {
        let why = why_gone(name);
        if why.is_empty() && more {
            continue;
        }
        let (type_, reason) = if before[name] == ShareState::Accepted {
            (EventType::Warning, "AccessRevoked")
        } else {
            (EventType::Normal, "OfferWithdrawn")
        };
        events.push(EventSpec::new(
            regarding,
            type_,
            reason,
            "Revoke",
            format!("image {name} of {owner}: {why}"),
        ));
    }
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some(mut e) = ready_event(regarding, old_conditions, &new.conditions, "Decide") {
        if e.reason != "Conflict" {
            e.type_ = EventType::Normal;
        }
        events.push(e);
    }
    events
}
