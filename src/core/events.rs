//! Kubernetes Events the engine asks for: one per state transition and per refusal, derived
//! from the difference between the current and the desired status (so an unchanged object
//! produces none).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{
    Condition, ImageOfferStatus, ImageShareStatus, PrivateImageStatus, READY, ShareAcceptanceStatus, ShareState,
    ready_condition,
};

use super::{
    conditions::{list_of, truncate, write_list},
    vocabulary::{Action, EventReason, Kind, offer_state_reason, share_state_reason},
};

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

/// The object an event is about. Its strings are shared by every event about the object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Regarding {
    pub kind: Kind,
    pub namespace: Option<Arc<str>>,
    pub name: Arc<str>,
    pub uid: Option<Arc<str>>,
}

impl Regarding {
    /// An object of the given kind, as far as it is known (a new one has no uid yet).
    pub fn object(kind: Kind, meta: &ObjectMeta) -> Self {
        Regarding::named(kind, meta, meta.name.as_deref().unwrap_or_default().into())
    }

    /// [`Regarding::object`] with the name already shared.
    pub fn named(kind: Kind, meta: &ObjectMeta, name: Arc<str>) -> Self {
        Regarding {
            kind,
            namespace: meta.namespace.as_deref().map(Arc::from),
            name,
            uid: meta.uid.as_deref().map(Arc::from),
        }
    }
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventSpec {
    pub regarding: Regarding,
    pub type_: EventType,
    pub reason: &'static str,
    pub action: Action,
    pub note: String,
}

impl EventSpec {
    pub fn new(regarding: &Regarding, type_: EventType, reason: &'static str, action: Action, note: String) -> Self {
        EventSpec {
            regarding: regarding.clone(),
            type_,
            reason,
            action,
            note: truncate(note, MAX_NOTE),
        }
    }
}

fn ready_triplet(conditions: &[Condition]) -> Option<(&str, &str, &str)> {
    ready_condition(conditions).map(|c| (&*c.status, &*c.reason, c.message.as_str()))
}

/// Event for a changed Ready condition (status or reason). `reason` is the new condition's
/// reason, as the engine's vocabulary spells it.
fn ready_event(
    regarding: &Regarding,
    old: &[Condition],
    new: &[Condition],
    reason: &'static str,
    action: Action,
) -> Option<EventSpec> {
    let (status, new_reason, message) = ready_triplet(new)?;
    debug_assert_eq!(new_reason, reason);
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
    let mut note = String::with_capacity(READY.len() + 1 + status.len() + 2 + message.len().min(MAX_NOTE));
    note.push_str(READY);
    note.push('=');
    note.push_str(status);
    note.push_str(": ");
    note.push_str(message);
    Some(EventSpec::new(regarding, type_, reason, action, note))
}

/// The events of a PrivateImage's new status, added to `events` (as the other `*_events`
/// do: a tenant's events are gathered in one list).
pub fn image_events(
    events: &mut Vec<EventSpec>,
    regarding: &Regarding,
    old: Option<&PrivateImageStatus>,
    new: &PrivateImageStatus,
    reason: &'static str,
) {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    events.extend(ready_event(
        regarding,
        old_conditions,
        &new.conditions,
        reason,
        Action::Admit,
    ));
}

/// The (image, recipient) pairs a share status lists with their states, sorted, each once (a
/// pair listed twice keeps the state listed last).
fn share_pairs(status: Option<&ImageShareStatus>) -> Vec<((&str, &str), ShareState)> {
    let images = status.map_or(&[][..], |s| &s.images[..]);
    let mut pairs = Vec::with_capacity(images.iter().map(|img| img.recipients().count()).sum());
    for img in images {
        // Each list is sorted, so an image's pairs need only a short sort by recipient (stable:
        // a recipient listed twice keeps its listing order); images listed in name order
        // then leave nothing to sort.
        let start = pairs.len();
        for (state, list) in img.lists() {
            pairs.extend(list.iter().map(|r| ((img.name.as_str(), &**r), state)));
        }
        pairs[start..].sort_by(|a, b| a.0.1.cmp(b.0.1));
    }
    sorted_by_pair(&mut pairs);
    pairs
}

/// Pairs by image, then recipient. The pairs of one image share its name, so names at the
/// same address are equal without reading them.
fn cmp_pairs(a: &(&str, &str), b: &(&str, &str)) -> std::cmp::Ordering {
    let image = if std::ptr::eq(a.0, b.0) {
        std::cmp::Ordering::Equal
    } else {
        a.0.cmp(b.0)
    };
    image.then_with(|| a.1.cmp(b.1))
}

/// Sorts pairs and keeps the last of equal ones (see [`sort_keeping_last`]). A status the
/// engine wrote lists them sorted already: that is only checked.
fn sorted_by_pair<V>(pairs: &mut Vec<((&str, &str), V)>) {
    if pairs.windows(2).all(|w| cmp_pairs(&w[0].0, &w[1].0).is_lt()) {
        return;
    }
    sort_keeping_last(pairs, |a, b| cmp_pairs(&a.0, &b.0));
}

/// Sorts items and keeps the last listed of equal ones, as repeated inserts into a map would:
/// a status may list an entry twice (it is read as the operator's record, not trusted).
fn sort_keeping_last<T>(items: &mut Vec<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) {
    // Stable, so equal items keep their listing order.
    items.sort_by(&cmp);
    items.dedup_by(|later, earlier| {
        let equal = cmp(later, earlier).is_eq();
        if equal {
            std::mem::swap(later, earlier);
        }
        equal
    });
}

fn find_pair<'v, V>(pairs: &'v [((&str, &str), V)], pair: &(&str, &str)) -> Option<&'v V> {
    let i = pairs.binary_search_by(|(p, _)| cmp_pairs(p, pair)).ok()?;
    Some(&pairs[i].1)
}

fn refused_pairs(status: Option<&ImageShareStatus>) -> Vec<((&str, &str), &str)> {
    let mut pairs = Vec::new();
    for img in status.iter().flat_map(|s| &s.images) {
        for group in &img.refused {
            for r in &group.recipients {
                pairs.push(((img.name.as_str(), r.as_str()), group.reason.as_str()));
            }
        }
    }
    sorted_by_pair(&mut pairs);
    pairs
}

/// A note of the given parts followed by a [`name_list`] of `names` (at most 20 shown), built
/// in one buffer.
fn note_with_list(parts: &[&str], names: Vec<&str>) -> String {
    // Its exact size (but for the count of names not shown): notes are kept, in every Event.
    let size = parts.iter().map(|p| p.len()).sum::<usize>()
        + names.iter().take(20).map(|n| n.len() + 2).sum::<usize>()
        + if names.len() > 20 { 16 } else { 0 };
    let mut note = String::with_capacity(size);
    for part in parts {
        note.push_str(part);
    }
    write_list(&mut note, names, 20, |out, name| out.push_str(name));
    note
}

/// `image → recipient` items joined as [`name_list`] joins names, formatting only those shown.
fn pair_list(pairs: &[(&str, &str)], max: usize) -> String {
    list_of(pairs, max, |out, (image, recipient)| {
        out.push_str(image);
        out.push_str(" → ");
        out.push_str(recipient);
    })
}

pub fn share_events(
    events: &mut Vec<EventSpec>,
    regarding: &Regarding,
    old: Option<&ImageShareStatus>,
    new: &ImageShareStatus,
    reason: &'static str,
) {
    let before = share_pairs(old);
    let after = share_pairs(Some(new));
    // reason -> (image, recipient) items
    let mut groups: BTreeMap<EventReason, Vec<(&str, &str)>> = BTreeMap::new();
    for (pair, state) in &after {
        let reason = match find_pair(&before, pair) {
            None => EventReason::Offered,
            Some(prev) if prev != state => share_state_reason(*state),
            Some(_) => continue,
        };
        groups.entry(reason).or_default().push(*pair);
    }
    for (pair, _) in before.iter().filter(|(p, _)| find_pair(&after, p).is_none()) {
        groups.entry(EventReason::OfferWithdrawn).or_default().push(*pair);
    }
    events.extend(groups.into_iter().map(|(reason, items)| {
        let note = format!("{reason}: {}", pair_list(&items, 20));
        EventSpec::new(regarding, EventType::Normal, reason.as_str(), Action::Share, note)
    }));
    // Every newly refused pair, also when the Ready reason stays the same.
    let refused_before = refused_pairs(old);
    let mut refused: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (pair, why) in refused_pairs(Some(new)) {
        if find_pair(&refused_before, &pair) != Some(&why) {
            refused.entry(why).or_default().push(pair);
        }
    }
    if !refused.is_empty() {
        let parts: Vec<String> = refused
            .iter()
            .map(|(why, items)| format!("{why}: {}", pair_list(items, 20)))
            .collect();
        events.push(EventSpec::new(
            regarding,
            EventType::Warning,
            EventReason::Refused.as_str(),
            Action::Share,
            format!("not offered: {}", parts.join("; ")),
        ));
    }
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    events.extend(ready_event(
        regarding,
        old_conditions,
        &new.conditions,
        reason,
        Action::Share,
    ));
}

/// A ShareAcceptance's own events: its Ready condition. What happens to the images it
/// decides is told once, on the ImageOffer (or, for revoked access, on this acceptance when it
/// was the deciding one; see [`offer_events`]).
pub fn acceptance_events(
    events: &mut Vec<EventSpec>,
    regarding: &Regarding,
    old: Option<&ShareAcceptanceStatus>,
    new: &ShareAcceptanceStatus,
    reason: &'static str,
) {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some(mut event) = ready_event(regarding, old_conditions, &new.conditions, reason, Action::Decide) {
        if event.reason != "Conflict" {
            event.type_ = EventType::Normal;
        }
        events.push(event);
    }
}

/// Recipient-side events of one owner's offer: images newly offered, state changes, and
/// images no longer offered with why (`why_gone`, which only ever explains images this
/// namespace was offered before). `new` is `None` when the owner offers nothing any more.
/// Revoked access is told on the ShareAcceptance that had accepted the image when it still
/// exists (`deciding` finds it), otherwise on the ImageOffer.
pub fn offer_events(
    events: &mut Vec<EventSpec>,
    regarding: &Regarding,
    owner: &str,
    old: Option<&ImageOfferStatus>,
    new: Option<&ImageOfferStatus>,
    why_gone: &dyn Fn(&str) -> String,
    deciding: &dyn Fn(&str) -> Option<Regarding>,
) {
    let before: BTreeMap<&str, (ShareState, Option<&str>)> = old
        .iter()
        .flat_map(|s| &s.images)
        .map(|i| (&*i.name, (i.state, i.decided_by.as_deref())))
        .collect();
    // The engine lists an offer's images by name already, so this sorts next to nothing.
    let mut after: Vec<(&str, ShareState)> = Vec::with_capacity(new.map_or(0, |s| s.images.len()));
    after.extend(new.iter().flat_map(|s| &s.images).map(|i| (&*i.name, i.state)));
    sort_keeping_last(&mut after, |a, b| a.0.cmp(b.0));
    let listed_after = |name: &str| after.binary_search_by_key(&name, |(n, _)| n).is_ok();
    let mut offered = Vec::with_capacity(after.len());
    let mut changed: BTreeMap<ShareState, Vec<&str>> = BTreeMap::new();
    for (name, state) in &after {
        match before.get(name) {
            None => offered.push(*name),
            Some((prev, _)) if prev != state => changed.entry(*state).or_default().push(name),
            Some(_) => {}
        }
    }
    if !offered.is_empty() {
        events.push(EventSpec::new(
            regarding,
            EventType::Normal,
            EventReason::ImageOffered.as_str(),
            Action::Offer,
            note_with_list(&[owner, " offers: "], offered),
        ));
    }
    for (state, names) in changed {
        events.push(EventSpec::new(
            regarding,
            EventType::Normal,
            offer_state_reason(state).as_str(),
            Action::Decide,
            note_with_list(&["now ", state.as_str(), ": "], names),
        ));
    }
    // Images that are no longer listed were withdrawn or revoked; an image that is simply
    // beyond the 1,000-entry window is still offered, so only truly vanished ones count.
    let more = new.is_some_and(|s| s.more_images > 0);
    for (name, (state, decided_by)) in before.iter().filter(|(n, _)| !listed_after(n)) {
        let why = why_gone(name);
        if why.is_empty() && more {
            continue;
        }
        let note = format!("image {name} of {owner}: {why}");
        if *state == ShareState::Accepted {
            let on = decided_by.and_then(deciding).unwrap_or_else(|| regarding.clone());
            events.push(EventSpec::new(
                &on,
                EventType::Warning,
                EventReason::AccessRevoked.as_str(),
                Action::Revoke,
                note,
            ));
        } else {
            events.push(EventSpec::new(
                regarding,
                EventType::Normal,
                EventReason::OfferWithdrawn.as_str(),
                Action::Revoke,
                note,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::name_list;

    #[test]
    fn pair_lists_show_the_first_pairs_and_count_the_rest_as_name_lists_do() {
        let pairs = [("web", "b"), ("web", "c"), ("db", "b")];
        assert_eq!(pair_list(&pairs, 3), "web → b, web → c, db → b");
        assert_eq!(pair_list(&pairs, 2), "web → b, web → c and 1 more");
        let names: Vec<String> = pairs.iter().map(|(i, r)| format!("{i} → {r}")).collect();
        assert_eq!(pair_list(&pairs, 1), name_list(names.iter().map(String::as_str), 1));
    }
}
