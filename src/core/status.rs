//! Status builders: the desired status of each object from its owner's evaluation (README.md).
//! Each returns the status and whether it differs from the current one.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    DecisionReason, ImageOffer, ImageOfferStatus, ImageShare, ImageShareStatus, OfferedImage, PrivateImage,
    PrivateImageStatus, ReceivedImage, RefusedRecipients, ShareAcceptance, ShareAcceptanceStatus, ShareState,
    SharedImageStatus,
};

use super::{
    conditions::{LIST_CAPACITY, condition, name_list, ready_conditions, write_list},
    grants::{Grant, build_grant, push_grant_name},
    limits::describe,
    owner::{
        ImageDescription, OwnerEval, REACH_BITS, RecipientPairs, Specificity, Winner, is_expired, share_reaches,
        share_recipients,
    },
    snapshot::{Entry, Snapshot},
    vocabulary::{AcceptanceReason, AccessReason, Refusal, ShareReason},
};

/// The most images a ShareAcceptance or ImageOffer status lists (see README.md).
pub const MAX_LISTED_IMAGES: usize = 1000;
/// The serialized size the images an ImageOffer lists may take. 1,000 entries with the longest
/// allowed URLs and names would come to about 3 MB, twice what etcd stores in one object; the
/// list stops earlier then, and `moreImages` counts the rest.
pub const MAX_OFFER_BYTES: usize = 768 * 1024;
/// Serialized size of an offer entry besides its variable strings (keys, enums, counts).
const OFFER_ENTRY_OVERHEAD: usize = 320;

/// Condition of a PrivateImage with accepted recipients: whether its grant is in place.
pub const ACCESS_GRANTED: &str = "AccessGranted";

/// A desired status and whether it differs from the current one.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate<S> {
    pub name: Arc<str>,
    pub status: S,
    pub changed: bool,
}

pub fn image_status(snap: &Snapshot, own: &OwnerEval, entry: &Entry<PrivateImage>) -> StatusUpdate<PrivateImageStatus> {
    let image = &entry.object;
    let name = &entry.name;
    let previous = image.status.as_ref();
    let verdict = &own.images[name];
    let recipients = own.counts.get(name).cloned().unwrap_or_default();
    let generation = image.metadata.generation;
    let previous_conditions = previous.map(|s| s.conditions.as_slice());
    let mut conditions = ready_conditions(
        previous_conditions,
        verdict.ready,
        verdict.reason.as_str(),
        verdict.message.clone(),
        generation,
        snap.now,
    );
    if recipients.accepted > 0 {
        // Whether the accepted recipients can use it: the grant may be blocked.
        let (granted, reason, message) = match snap.grant_fault(&own.owner, name) {
            Some(fault) => (false, fault.reason, fault.message.clone()),
            None => (true, AccessReason::Granted, {
                let mut message = String::with_capacity(96 + name.len());
                message.push_str("Role and RoleBinding ");
                push_grant_name(&mut message, name);
                message.push_str(" let the ");
                message.push_str(itoa::Buffer::new().format(recipients.accepted));
                message.push_str(" accepted recipient(s) use the image");
                message
            }),
        };
        conditions.push(condition(
            previous_conditions.unwrap_or_default(),
            ACCESS_GRANTED,
            granted,
            reason.as_str(),
            message,
            generation,
            snap.now,
        ));
    }
    let status = PrivateImageStatus {
        observed_generation: generation,
        conditions,
        recipients,
    };
    let changed = previous != Some(&status);
    StatusUpdate {
        name: name.clone(),
        status,
        changed,
    }
}

/// Pairs a share lists but that are not offered: reason -> image -> recipients, each with its
/// place (the image's place in the share's list, then the recipient's).
type RefusedPairs<'a> = BTreeMap<Refusal, BTreeMap<&'a str, Vec<((usize, usize), &'a str)>>>;

/// The status of an ImageShare, and its Ready reason.
pub fn share_status(
    snap: &Snapshot,
    own: &OwnerEval,
    entry: &Entry<ImageShare>,
) -> (StatusUpdate<ImageShareStatus>, &'static str) {
    let share = &entry.object;
    let mut images = Vec::with_capacity(share.spec.images.len());
    let mut refused: RefusedPairs = BTreeMap::new();
    let (mut offered, mut accepted) = (0, 0);
    let recipients = share_recipients(snap, &own.owner, share);
    // What does not depend on the image, once per recipient: its refusal, and the pairs
    // offered to it under its shared name (the order of the refusals: `limit_refusal`). In
    // name order, so each image's lists come out sorted.
    let mut by_recipient: Vec<_> = recipients
        .iter()
        .enumerate()
        .map(|(place, &r)| (place, r, own.recipient_refusal(snap, r), own.by_recipient.get(r)))
        .collect();
    by_recipient.sort_by(|a, b| a.1.cmp(b.1));
    let expired = is_expired(snap, share);
    let mut verdicts = Vec::with_capacity(by_recipient.len());
    for (pass, image) in share.spec.images.iter().enumerate() {
        // The evaluation's name of the image, which its pairs share (none: not an image).
        let shared_name = own.images.get_key_value(image.as_str()).map(|(name, _)| name);
        let image_refusal = if expired {
            Some(Refusal::Expired)
        } else {
            own.image_refusal(image)
        };
        verdicts.clear();
        let mut counts = [0usize; 4];
        for &(place, recipient, recipient_refusal, offered_to) in &by_recipient {
            let pair = offered_to
                .zip(shared_name)
                .and_then(|(offered, name)| Some((&offered.recipient, offered.get_shared(name)?.state)));
            let verdict = match (image_refusal.or(recipient_refusal), pair) {
                (Some(reason), _) => Err((place, recipient, reason)),
                (None, Some(pair)) => Ok(pair),
                (None, None) => Err((place, recipient, own.limit_refusal(image))),
            };
            if let Ok((_, state)) = verdict {
                counts[state as usize] += 1;
            }
            verdicts.push(verdict);
        }
        let mut entry = SharedImageStatus {
            name: image.clone(),
            pending: Vec::with_capacity(counts[ShareState::Pending as usize]),
            accepted: Vec::with_capacity(counts[ShareState::Accepted as usize]),
            rejected: Vec::with_capacity(counts[ShareState::Rejected as usize]),
            removed: Vec::with_capacity(counts[ShareState::Removed as usize]),
            ..Default::default()
        };
        let mut refused_here: BTreeMap<Refusal, Vec<String>> = BTreeMap::new();
        for verdict in verdicts.drain(..) {
            match verdict {
                Err((place, recipient, reason)) => {
                    refused
                        .entry(reason)
                        .or_default()
                        .entry(image)
                        .or_default()
                        .push(((pass, place), recipient));
                    refused_here.entry(reason).or_default().push(recipient.to_string());
                }
                Ok((name, state)) => {
                    offered += 1;
                    let list = match state {
                        ShareState::Pending => &mut entry.pending,
                        ShareState::Accepted => {
                            accepted += 1;
                            &mut entry.accepted
                        }
                        ShareState::Rejected => &mut entry.rejected,
                        ShareState::Removed => &mut entry.removed,
                    };
                    list.push(name.clone());
                }
            }
        }
        entry.refused = refused_here
            .into_iter()
            .map(|(reason, mut recipients)| {
                recipients.sort();
                RefusedRecipients {
                    reason: reason.as_str().into(),
                    recipients,
                }
            })
            .collect();
        images.push(entry);
    }
    let (ready, reason, message) = match refused.keys().next() {
        None => (
            true,
            ShareReason::AllOffered,
            format!("{offered} (image, recipient) pairs offered"),
        ),
        Some(first) => (
            false,
            ShareReason::Refused(*first),
            refusal_message(share, own, &refused),
        ),
    };
    let previous = share.status.as_ref();
    let generation = share.metadata.generation;
    let status = ImageShareStatus {
        observed_generation: generation,
        conditions: ready_conditions(
            previous.map(|s| s.conditions.as_slice()),
            ready,
            reason.as_str(),
            message,
            generation,
            snap.now,
        ),
        images,
        offered,
        accepted,
    };
    let changed = previous != Some(&status);
    let update = StatusUpdate {
        name: entry.name.clone(),
        status,
        changed,
    };
    (update, reason.as_str())
}

fn refusal_message(share: &ImageShare, own: &OwnerEval, refused: &RefusedPairs) -> String {
    let mut parts = Vec::new();
    for (reason, by_image) in refused {
        let detail = match reason {
            Refusal::Expired => format!(
                "the share expired at {}",
                share
                    .spec
                    .expires_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            ),
            Refusal::SharedImageLimitExceeded => {
                format!("limit {} shared images per tenant", describe(own.limits.shared_images))
            }
            Refusal::RecipientLimitExceeded => {
                format!(
                    "limit {} recipients per image",
                    describe(own.limits.recipients_per_image)
                )
            }
            _ => String::new(),
        };
        let pairs: Vec<String> = by_image
            .iter()
            .map(|(image, recipients)| {
                // In the share's order of images, then of recipients.
                let mut recipients = recipients.clone();
                recipients.sort_by_key(|(place, _)| *place);
                format!("{image} → {}", name_list(recipients.iter().map(|(_, r)| *r), 10))
            })
            .collect();
        let pairs = name_list(pairs.iter().map(String::as_str), 10);
        if detail.is_empty() {
            parts.push(format!("{}: {pairs}", reason.as_str()));
        } else {
            parts.push(format!("{} ({detail}): {pairs}", reason.as_str()));
        }
    }
    format!("not offered: {}", parts.join("; "))
}

/// The grants an owner's accepted pairs need.
pub fn grants(snap: &Snapshot, own: &OwnerEval) -> Vec<Grant> {
    // image -> its accepted recipients, in name order as `by_recipient` is.
    let mut accepted: BTreeMap<&str, Vec<Arc<str>>> = BTreeMap::new();
    for offered in own.by_recipient.iter() {
        for (image, pair) in &offered.pairs {
            if pair.state == ShareState::Accepted {
                accepted.entry(image).or_default().push(offered.recipient.clone());
            }
        }
    }
    accepted
        .into_iter()
        .filter_map(|(image, recipients)| {
            let entry = snap.image(&own.owner, image)?;
            Some(build_grant(snap, &entry.object, &recipients))
        })
        .collect()
}

/// The status of a ShareAcceptance, and its Ready reason. `owners` are the evaluations of the
/// owner it names, or of every owner its ownerSelector matches (by name).
pub fn acceptance_status(
    snap: &Snapshot,
    owners: &[Arc<OwnerEval>],
    entry: &Entry<ShareAcceptance>,
) -> (StatusUpdate<ShareAcceptanceStatus>, &'static str) {
    let acceptance = &entry.object;
    let namespace = acceptance.metadata.namespace.as_deref().unwrap_or_default();
    let name = &entry.name;
    let spec = &acceptance.spec;
    let previous = acceptance.status.as_ref();
    let by_selector = spec.owner_selector.is_some();

    let mut covered = 0usize;
    // (owner by selector, image, the overriding winner): only the first ones are written out.
    let mut conflicts: Vec<(Option<&str>, &str, &Winner)> = Vec::new();
    // Usually one owner: looked up twice rather than collected.
    let offered = || {
        owners
            .iter()
            .filter_map(|o| Some((&**o, o.by_recipient.get(namespace)?)))
    };
    let offered_here: usize = offered().map(|(_, to_me)| to_me.pairs.len()).sum();
    let mut images = Vec::with_capacity(offered_here.min(MAX_LISTED_IMAGES));
    for (owner, to_me) in offered() {
        let owner_name: Option<Arc<str>> = by_selector.then(|| owner.owner.clone());
        for (image, pair) in &to_me.pairs {
            let Some(mine) = Specificity::of(spec, image) else {
                continue;
            };
            covered += 1;
            let (reason, decided_by) = match &pair.winner {
                _ if pair.withheld => (DecisionReason::UnreadableAcceptance, None),
                Some(w) if w.specificity > mine && w.acceptance != *name => {
                    let reason = match w.specificity {
                        Specificity::Image => DecisionReason::NamedAcceptance,
                        _ => DecisionReason::OwnerAcceptance,
                    };
                    (reason, Some(w.acceptance.clone()))
                }
                Some(w) if w.decision != spec.decision && w.acceptance != *name => {
                    // An acceptance by selector covers several owners' images.
                    conflicts.push((by_selector.then_some(&*owner.owner), image, w));
                    (DecisionReason::Conflict, Some(w.acceptance.clone()))
                }
                _ => (DecisionReason::ThisAcceptance, None),
            };
            if images.len() < MAX_LISTED_IMAGES {
                images.push(ReceivedImage {
                    name: image.clone(),
                    owner: owner_name.clone(),
                    state: pair.state,
                    reason,
                    decided_by,
                });
            }
        }
    }
    let more_images = (covered - images.len()) as i32;
    let offered_by = if by_selector {
        "the owners its ownerSelector matches"
    } else {
        spec.owner.as_str()
    };
    let (ready, reason, message) = if !conflicts.is_empty() {
        let mut message = String::with_capacity(LIST_CAPACITY * 2);
        message.push_str("overridden by an equally specific decision: ");
        write_list(&mut message, conflicts, 10, |out, (owner, image, winner)| {
            if let Some(owner) = owner {
                out.push_str(owner);
                out.push('/');
            }
            for part in [
                image,
                ": ",
                winner.decision.as_str(),
                " of ShareAcceptance ",
                &winner.acceptance,
                " overrides ",
                spec.decision.as_str(),
            ] {
                out.push_str(part);
            }
        });
        (false, AcceptanceReason::Conflict, message)
    } else if covered > 0 {
        const WORDS: &str = " covers  image(s) offered by ";
        let size = spec.decision.as_str().len() + WORDS.len() + 20 + offered_by.len();
        let mut message = String::with_capacity(size);
        message.push_str(spec.decision.as_str());
        message.push_str(" covers ");
        message.push_str(itoa::Buffer::new().format(covered));
        message.push_str(" image(s) offered by ");
        message.push_str(offered_by);
        (true, AcceptanceReason::Applied, message)
    } else if !by_selector && spec.owner == namespace {
        (
            false,
            AcceptanceReason::NothingOffered,
            "spec.owner is this namespace; a tenant can not share images with itself".into(),
        )
    } else if by_selector {
        (
            false,
            AcceptanceReason::NothingOffered,
            format!("no owner its ownerSelector matches offers images to namespace {namespace}"),
        )
    } else if spec.images.is_empty() {
        (
            false,
            AcceptanceReason::NothingOffered,
            format!("{offered_by} offers no images to namespace {namespace}"),
        )
    } else {
        (
            false,
            AcceptanceReason::NothingOffered,
            format!(
                "{offered_by} offers none of {} to namespace {namespace}",
                name_list(spec.images.iter().map(String::as_str), 10)
            ),
        )
    };
    let generation = acceptance.metadata.generation;
    let status = ShareAcceptanceStatus {
        observed_generation: generation,
        conditions: ready_conditions(
            previous.map(|s| s.conditions.as_slice()),
            ready,
            reason.as_str(),
            message,
            generation,
            snap.now,
        ),
        images,
        more_images,
    };
    let changed = previous != Some(&status);
    let update = StatusUpdate {
        name: name.clone(),
        status,
        changed,
    };
    (update, reason.as_str())
}

/// The inbox entry of `owner` in `recipient`: `None` when the owner offers it nothing (the
/// ImageOffer must not exist).
pub fn offer_status(
    snap: &Snapshot,
    owner: &OwnerEval,
    recipient: &str,
    current: Option<&ImageOffer>,
) -> Option<StatusUpdate<ImageOfferStatus>> {
    let to_me = owner.by_recipient.get(recipient)?;
    let offered = &to_me.pairs;
    let mut status = ImageOfferStatus {
        images: Vec::with_capacity(offered.len().min(MAX_LISTED_IMAGES)),
        ..Default::default()
    };
    let mut listed_bytes = 0usize;
    let mut described = owner.descriptions.iter();
    for (image, pair) in offered {
        match pair.state {
            ShareState::Pending => status.pending += 1,
            ShareState::Accepted => status.accepted += 1,
            ShareState::Rejected => status.rejected += 1,
            ShareState::Removed => status.removed += 1,
        }
        // Every offered image is a shared image, which the evaluation describes. Both lists
        // are in name order and share the names: walked in step, a lookup only should they not.
        let walked = described.find(|(name, _)| Arc::ptr_eq(name, image)).map(|(_, d)| d);
        let Some(description) = walked.or_else(|| owner.description(image)) else {
            continue;
        };
        let entry_bytes = OFFER_ENTRY_OVERHEAD
            + description.listed_bytes
            + owner.owner.len()
            + pair.winner.as_ref().map_or(0, |w| w.acceptance.len());
        if status.images.len() >= MAX_LISTED_IMAGES || listed_bytes + entry_bytes > MAX_OFFER_BYTES {
            listed_bytes = MAX_OFFER_BYTES;
            status.more_images += 1;
            continue;
        }
        listed_bytes += entry_bytes;
        let source = (pair.state == ShareState::Accepted).then(|| description.source.clone());
        status.images.push(OfferedImage {
            name: image.clone(),
            state: pair.state,
            decided_by: pair
                .winner
                .as_ref()
                .filter(|_| !pair.withheld)
                .map(|w| w.acceptance.clone()),
            display_name: description.display_name.clone(),
            image_type: description.image_type,
            os_type: description.os_type,
            os_version: description.os_version.clone(),
            architecture: description.architecture,
            disk_size_gib: description.disk_size_gib,
            expires_at: offer_ends(snap, owner, to_me, description, image),
            source,
        });
    }
    let changed = current.and_then(|o| o.status.as_ref()) != Some(&status);
    Some(StatusUpdate {
        name: owner.owner.clone(),
        status,
        changed,
    })
}

/// When an image stops being offered to a recipient: the latest end among the live shares that
/// list the image and reach the recipient; `None` when one of them does not end.
fn offer_ends(
    snap: &Snapshot,
    owner: &OwnerEval,
    to_me: &RecipientPairs,
    description: &ImageDescription,
    image: &str,
) -> Option<Time> {
    let mut latest: Option<&Time> = None;
    for (i, share) in owner.live_shares.iter().enumerate() {
        let offers_it = if i < REACH_BITS {
            to_me.reached_by & description.listed_by & (1 << i) != 0
        } else {
            share.spec.images.iter().any(|n| n == image) && share_reaches(snap, &owner.owner, share, &to_me.recipient)
        };
        if !offers_it {
            continue;
        }
        let ends = share.spec.expires_at.as_ref()?;
        if latest.is_none_or(|l| l.0 < ends.0) {
            latest = Some(ends);
        }
    }
    latest.cloned()
}
