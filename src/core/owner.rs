//! Owner-side evaluation: which images are admitted and Ready, which (image, recipient) pairs
//! are offered under the limits, and the state of each offered pair (README.md).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use foldhash::{HashMap, HashSet};
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    self, AcceptedSource, Decision, ImageShare, PrivateImage, RecipientCounts, ShareAcceptance, ShareAcceptanceSpec,
    ShareState,
};

use super::{
    limits::{TenantLimits, describe, has_room, region_of, tenant_limits},
    snapshot::{Entry, MachineState, Snapshot, VolumeState, World},
    vocabulary::{ImageReason, Refusal},
};

/// The verdict on one PrivateImage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageVerdict {
    pub ready: bool,
    pub reason: ImageReason,
    pub message: String,
    /// `spec.published` of the image judged: a published image is not shared.
    pub published: bool,
}

/// How specifically a ShareAcceptance decides an image: one that names the image beats one
/// that names the owner with all its images, which beats one that selects the owner by label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    OwnerSelector,
    Owner,
    Image,
}

impl Specificity {
    /// How `spec` covers `image` of an owner it names or selects; `None` when it does not.
    pub fn of(spec: &ShareAcceptanceSpec, image: &str) -> Option<Specificity> {
        if spec.owner_selector.is_some() {
            // The schema keeps images empty with a selector; one that is not covers nothing.
            return spec.images.is_empty().then_some(Specificity::OwnerSelector);
        }
        if spec.images.iter().any(|i| i == image) {
            Some(Specificity::Image)
        } else {
            spec.images.is_empty().then_some(Specificity::Owner)
        }
    }
}

/// What an inbox shows of a shared image besides its name (see [`OwnerEval::descriptions`]),
/// copied from the image once, so that the many inboxes listing it do not read it again.
#[derive(Clone, Debug)]
pub struct ImageDescription {
    pub display_name: Option<Arc<str>>,
    pub image_type: api::ImageType,
    pub os_type: Option<api::OsType>,
    pub os_version: Option<Arc<str>>,
    pub architecture: api::Architecture,
    pub disk_size_gib: i32,
    /// Where an accepted recipient finds the image.
    pub source: Arc<AcceptedSource>,
    /// The serialized size of the image's own strings in an inbox entry (its names, URL and
    /// claims), which bounds how many entries an ImageOffer lists.
    pub listed_bytes: usize,
    /// Which of the first [`REACH_BITS`] of the owner's live shares list the image, a bit each
    /// (as [`RecipientPairs::reached_by`] tells which reach a recipient).
    pub listed_by: u64,
}

/// The decision in effect for an offered pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Winner {
    pub acceptance: Arc<str>,
    pub decision: Decision,
    /// How specifically the winning acceptance covers the image.
    pub specificity: Specificity,
}

/// An offered pair's state and the acceptance that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairState {
    pub state: ShareState,
    pub winner: Option<Winner>,
    /// The winner would accept, but the recipient holds a ShareAcceptance the operator can not
    /// read (it might refuse): the pair keeps its recorded state instead of becoming Accepted.
    pub withheld: bool,
}

impl PairState {
    /// A pair as admitted, before any decision.
    const PENDING: PairState = PairState {
        state: ShareState::Pending,
        winner: None,
        withheld: false,
    };
}

/// The pairs offered to one recipient, by image name.
#[derive(Clone, Debug)]
pub struct RecipientPairs {
    pub recipient: Arc<str>,
    /// In image name order.
    pub pairs: Vec<(Arc<str>, PairState)>,
    /// Which of the first 64 of the owner's live shares (`OwnerEval::live_shares`) reach the
    /// recipient, a bit each: every inbox asks.
    pub reached_by: u64,
}

/// How many of an owner's live shares [`RecipientPairs::reached_by`] tells about.
pub const REACH_BITS: usize = 64;

impl RecipientPairs {
    /// The pair of `image`; `None` when it is not offered to this recipient.
    pub fn get(&self, image: &str) -> Option<&PairState> {
        let i = self.pairs.binary_search_by(|(name, _)| (**name).cmp(image)).ok()?;
        Some(&self.pairs[i].1)
    }

    /// [`RecipientPairs::get`] with the evaluation's own name of the image (a key of
    /// [`OwnerEval::images`], which the pairs share): a few pairs are scanned by address first,
    /// by name only when that finds none.
    pub fn get_shared(&self, image: &Arc<str>) -> Option<&PairState> {
        let by_address = (self.pairs.len() <= 16)
            .then(|| self.pairs.iter().find(|(name, _)| Arc::ptr_eq(name, image)))
            .flatten()
            .map(|(_, pair)| pair);
        by_address.or_else(|| self.get(image))
    }
}

/// Offered pairs by recipient, then by image, both in name order. Built once per evaluation
/// and then only read, so sorted vectors: one allocation per recipient, searches and in-order
/// walks over contiguous memory (a map per recipient cost more to build, walk and drop).
#[derive(Clone, Debug, Default)]
pub struct OfferedPairs {
    recipients: Vec<RecipientPairs>,
    /// Where each recipient is in `recipients`: every recipient's statuses look up their own
    /// pairs of every owner that offers them something.
    index: HashMap<Arc<str>, usize>,
}

impl OfferedPairs {
    /// From every recipient's pairs, in recipient name order.
    fn new(recipients: Vec<RecipientPairs>) -> Self {
        let index = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| (r.recipient.clone(), i))
            .collect();
        OfferedPairs { recipients, index }
    }

    /// The pairs offered to `recipient`.
    pub fn get(&self, recipient: &str) -> Option<&RecipientPairs> {
        self.recipients.get(*self.index.get(recipient)?)
    }

    /// Every recipient's pairs, in recipient name order.
    pub fn iter(&self) -> std::slice::Iter<'_, RecipientPairs> {
        self.recipients.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }
}

/// Everything decided for one owner tenant. Names are shared with the snapshot's entries or
/// made once per evaluation, never per pair.
#[derive(Clone, Debug)]
pub struct OwnerEval {
    pub owner: Arc<str>,
    pub limits: TenantLimits,
    pub region: Option<String>,
    pub images: BTreeMap<Arc<str>, ImageVerdict>,
    /// Offered pairs by recipient: recipient -> image -> state and decision.
    pub by_recipient: OfferedPairs,
    /// How many offered pairs of each image are in each state.
    pub counts: BTreeMap<Arc<str>, RecipientCounts>,
    /// Images admitted under the shared-images limit.
    pub shared_images: BTreeSet<Arc<str>>,
    /// Each shared image with its descriptive strings, made once for every inbox that lists it.
    /// By image name.
    pub descriptions: Vec<(Arc<str>, ImageDescription)>,
    /// The state each pair has in the current ImageShare statuses, the operator's record
    /// (kept only while some recipient holds an unreadable acceptance, which needs it).
    pub recorded: BTreeMap<(String, String), ShareState>,
    /// Usage of the limits: admitted private images, and shared images (images with an
    /// offered pair, and slots held by objects the operator can not read).
    pub private_images_used: usize,
    pub shared_images_used: usize,
    /// The owner's ImageShares that have not expired, in name order (each inbox reads them).
    pub live_shares: Vec<Arc<ImageShare>>,
    /// The time this evaluation judged expiry against, and the expiry times it depends on.
    evaluated_at: Timestamp,
    expiries: Vec<Timestamp>,
}

impl OwnerEval {
    /// The state of an offered pair; `None` when it is not offered.
    pub fn pair(&self, image: &str, recipient: &str) -> Option<ShareState> {
        self.by_recipient.get(recipient)?.get(image).map(|p| p.state)
    }

    /// The description of a shared image.
    pub fn description(&self, image: &str) -> Option<&ImageDescription> {
        let i = self
            .descriptions
            .binary_search_by(|(name, _)| (**name).cmp(image))
            .ok()?;
        Some(&self.descriptions[i].1)
    }

    /// Why a pair listed by a share is not offered, in this order: the share expired, then
    /// [`OwnerEval::image_refusal`], then [`OwnerEval::recipient_refusal`], then, for a pair
    /// still not offered, this: the limit that refused it.
    pub fn limit_refusal(&self, image: &str) -> Refusal {
        // With a recipient limit of 0 no image can become a shared image: that limit, not the
        // shared-images one, is what refuses the pair.
        if self.shared_images.contains(image) || !has_room(self.limits.recipients_per_image, 0) {
            Refusal::RecipientLimitExceeded
        } else {
            Refusal::SharedImageLimitExceeded
        }
    }

    /// Why no pair of `image` is offered whatever the recipient.
    pub fn image_refusal(&self, image: &str) -> Option<Refusal> {
        let Some(verdict) = self.images.get(image) else {
            return Some(Refusal::ImageNotFound);
        };
        if !verdict.ready {
            return Some(Refusal::ImageNotReady);
        }
        verdict.published.then_some(Refusal::ImagePublished)
    }

    /// Why no pair with `recipient` is offered whatever the image.
    pub fn recipient_refusal(&self, snap: &Snapshot, recipient: &str) -> Option<Refusal> {
        if recipient == &*self.owner {
            return Some(Refusal::RecipientIsOwner);
        }
        let Some(region) = region_of(snap, recipient) else {
            return Some(Refusal::RecipientNotFound);
        };
        (self.region.as_deref() != Some(region)).then_some(Refusal::RegionMismatch)
    }

    /// Whether this evaluation still holds at `now`: no share expired (or, with a clock set
    /// back, came back) in between.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        self.expiries.iter().all(|t| (*t <= self.evaluated_at) == (*t <= now))
    }
}

/// A share offers nothing once `expiresAt` <= now.
pub fn is_expired(snap: &Snapshot, share: &ImageShare) -> bool {
    share.spec.expires_at.as_ref().is_some_and(|t| t.0 <= snap.now)
}

/// Whether the current status records the image as admitted under the private-images limit.
fn image_admitted(image: &PrivateImage) -> bool {
    image
        .status
        .as_ref()
        .and_then(|s| api::ready_condition(&s.conditions))
        .is_some_and(|c| c.reason != ImageReason::QuotaExceeded.as_str())
}

/// Evaluates one owner tenant.
pub fn evaluate_owner(snap: &Snapshot, owner: &str) -> OwnerEval {
    let limits = tenant_limits(snap, owner);
    let region = region_of(snap, owner).map(str::to_string);
    let (images, private_images_used) = judge_images(snap, owner, &limits);
    let mut eval = OwnerEval {
        owner: owner.into(),
        limits,
        region,
        images,
        counts: BTreeMap::new(),
        by_recipient: OfferedPairs::default(),
        shared_images: BTreeSet::new(),
        descriptions: Vec::new(),
        recorded: BTreeMap::new(),
        private_images_used,
        shared_images_used: 0,
        live_shares: snap
            .shares_in(owner)
            .filter(|s| !is_expired(snap, &s.object))
            .map(|s| s.object.clone())
            .collect(),
        evaluated_at: snap.now,
        expiries: snap
            .shares_in(owner)
            .filter_map(|s| s.object.spec.expires_at.as_ref().map(|t| t.0))
            .collect(),
    };
    admit_pairs(snap, &mut eval);
    decide_states(snap, &mut eval);
    for (i, share) in eval.live_shares.iter().enumerate().take(REACH_BITS) {
        for recipient in share_recipients(snap, owner, share) {
            if let Some(&k) = eval.by_recipient.index.get(recipient) {
                eval.by_recipient.recipients[k].reached_by |= 1 << i;
            }
        }
    }
    for image in &eval.shared_images {
        if let Some(entry) = snap.image(owner, image) {
            let spec = &entry.object.spec;
            let claims = spec
                .source
                .server
                .as_ref()
                .map(|s| snap.machine_claims(owner, &s.name).to_vec())
                .unwrap_or_default();
            let listed_bytes = image.len()
                + spec.display_name.as_ref().map_or(0, String::len)
                + spec.os_version.as_ref().map_or(0, String::len)
                + spec.source.file.as_ref().map_or(0, |f| f.url.len())
                + spec
                    .source
                    .volume
                    .as_ref()
                    .map_or(0, |v| v.persistent_volume_claim.len())
                + spec.source.server.as_ref().map_or(0, |v| v.name.len())
                + claims.iter().map(|c| c.len() + 4).sum::<usize>();
            let description = ImageDescription {
                display_name: spec.display_name.as_deref().map(Arc::from),
                image_type: spec.image_type,
                os_type: spec.os_type,
                os_version: spec.os_version.as_deref().map(Arc::from),
                architecture: spec.architecture,
                disk_size_gib: spec.disk_size_gib,
                source: Arc::new(AcceptedSource {
                    namespace: owner.to_string(),
                    file: spec.source.file.as_ref().map(Into::into),
                    persistent_volume_claim: spec.source.volume.as_ref().map(|v| v.persistent_volume_claim.clone()),
                    virtual_machine: spec.source.server.as_ref().map(|s| s.name.clone()),
                    claims,
                }),
                listed_bytes,
                listed_by: eval
                    .live_shares
                    .iter()
                    .take(REACH_BITS)
                    .enumerate()
                    .filter(|(_, share)| share.spec.images.iter().any(|i| **i == **image))
                    .fold(0, |bits, (i, _)| bits | 1 << i),
            };
            // `shared_images` is in name order.
            eval.descriptions.push((image.clone(), description));
        }
    }
    eval
}

/// The verdict on each image, and how many private-image slots are used.
fn judge_images(snap: &Snapshot, owner: &str, limits: &TenantLimits) -> (BTreeMap<Arc<str>, ImageVerdict>, usize) {
    let mut entries: Vec<&Entry<PrivateImage>> = snap.images_in(owner).collect();
    entries.sort_by(|a, b| a.age.cmp(&b.age));
    // An image the operator can not read never frees its slot: it counts unless its status
    // says it was refused.
    let unreadable_holding = snap
        .unreadable
        .images
        .get(owner)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|status| {
            status
                .as_ref()
                .and_then(|s| api::ready_condition(&s.conditions))
                .is_none_or(|c| c.reason != ImageReason::QuotaExceeded.as_str())
        })
        .count();
    let mut used = unreadable_holding + entries.iter().filter(|e| image_admitted(&e.object)).count();
    let mut verdicts = BTreeMap::new();
    for entry in entries {
        let image = &entry.object;
        let admitted = image_admitted(image) || {
            let room = has_room(limits.private_images, used);
            if room {
                used += 1;
            }
            room
        };
        let verdict = if admitted {
            judge_source(snap, owner, image)
        } else {
            ImageVerdict {
                ready: false,
                published: image.spec.published,
                reason: ImageReason::QuotaExceeded,
                message: format!(
                    "namespace {owner} already has {used} private images, the limit is {}; delete an image or ask an administrator to raise {}",
                    describe(limits.private_images),
                    super::limits::LIMIT_PRIVATE_IMAGES
                ),
            }
        };
        verdicts.insert(entry.name.clone(), verdict);
    }
    (verdicts, used)
}

fn judge_source(snap: &Snapshot, owner: &str, image: &PrivateImage) -> ImageVerdict {
    use ImageReason::*;
    let verdict = |ready, reason, message: String| ImageVerdict {
        ready,
        reason,
        message,
        published: image.spec.published,
    };
    let kubevirt = match snap.world {
        World::Cluster { kubevirt } => kubevirt,
        // simulate: the config file's `kubevirt` key (or `simulate --kubevirt`), as `run` reads it.
        World::Offline => snap.config.kubevirt,
    };
    let unsupported = || {
        verdict(
            false,
            SourceUnsupported,
            "volume and server sources need KubeVirt support: run the operator with --kubevirt, or kubevirt: true in its config file (Helm value kubevirt.enabled=true; simulate --kubevirt)".into(),
        )
    };
    let source = &image.spec.source;
    match (&source.file, &source.volume, &source.server) {
        (Some(file), None, None) if valid_file_url(&file.url) => {
            verdict(true, Available, ["image file ", file.url.as_str()].concat())
        }
        (Some(file), None, None) => verdict(
            false,
            InvalidSource,
            format!(
                "spec.source.file.url {:?} is not s3://bucket/object or https://host/path",
                file.url
            ),
        ),
        (None, Some(_), None) | (None, None, Some(_)) if !kubevirt => unsupported(),
        (None, Some(volume), None) => {
            let pvc = &volume.persistent_volume_claim;
            match (snap.volume(owner, pvc), snap.world) {
                (Some(VolumeState::Bound), _) | (None, World::Offline) => {
                    verdict(true, Available, format!("PersistentVolumeClaim {pvc} is Bound"))
                }
                (Some(VolumeState::NotBound), _) => verdict(
                    false,
                    SourceNotReady,
                    format!("PersistentVolumeClaim {pvc} is not Bound yet"),
                ),
                (None, _) => verdict(
                    false,
                    SourceNotFound,
                    format!("PersistentVolumeClaim {pvc} not found in namespace {owner}"),
                ),
            }
        }
        (None, None, Some(server)) => {
            let vm = &server.name;
            match (snap.machine(owner, vm), snap.world) {
                (Some(MachineState::Stopped), _) | (None, World::Offline) => {
                    verdict(true, Available, format!("VirtualMachine {vm} is stopped"))
                }
                (Some(MachineState::Running), _) => verdict(
                    false,
                    SourceNotReady,
                    format!("VirtualMachine {vm} is running; only a stopped machine can become an image"),
                ),
                (None, _) => verdict(
                    false,
                    SourceNotFound,
                    format!("VirtualMachine {vm} not found in namespace {owner}"),
                ),
            }
        }
        _ => verdict(
            false,
            InvalidSource,
            "spec.source must set exactly one of file, volume or server".into(),
        ),
    }
}

/// The URL rule of the schema, checked again because a stored object may predate the schema.
pub fn valid_file_url(url: &str) -> bool {
    let rest = url.strip_prefix("s3://").or_else(|| url.strip_prefix("https://"));
    match rest.and_then(|r| r.split_once('/')) {
        Some((host, path)) => !host.is_empty() && !path.is_empty() && !url.contains(' '),
        None => false,
    }
}

/// Admits candidate pairs under the shared-images and recipients-per-image limits: what the
/// current statuses list stays admitted; new items follow oldest first (README, "Limits and
/// regions"). Pairs recorded by objects the operator can not read keep their slots
/// without being offered.
fn admit_pairs(snap: &Snapshot, eval: &mut OwnerEval) {
    if snap.is_leaving(&eval.owner) {
        return;
    }
    let mut shares: Vec<&Entry<ImageShare>> = snap.shares_in(&eval.owner).collect();
    shares.sort_by(|a, b| a.age.cmp(&b.age));

    // The recorded states are needed only to hold pairs of recipients with an unreadable
    // acceptance; most worlds have none, so they are not copied then.
    let record_states = !snap.unreadable().acceptances.is_empty();
    let mut admitted: HashSet<(&str, &str)> = HashSet::default();
    for share in &shares {
        for img in share.object.status.iter().flat_map(|s| &s.images) {
            for (state, list) in img.lists() {
                for r in list {
                    admitted.insert((img.name.as_str(), &**r));
                    if record_states {
                        eval.recorded.insert((img.name.clone(), r.to_string()), state);
                    }
                }
            }
        }
    }

    // Slots held by what can not be read: every pair an unreadable share recorded, and the
    // recorded pairs of unreadable images. Without a readable record of an unreadable share,
    // what it holds is unknown, and nothing new is admitted.
    let unreadable = snap.unreadable();
    let mut held: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut frozen = false;
    for status in unreadable.shares.get(&*eval.owner).into_iter().flat_map(|m| m.values()) {
        match status {
            Some(status) => {
                // Only pairs hold slots: an image listed without recipients holds none.
                for img in &status.images {
                    for r in img.recipients() {
                        held.entry(&img.name).or_default().insert(r);
                    }
                }
            }
            None => frozen = true,
        }
    }
    if let Some(images) = unreadable.images.get(&*eval.owner) {
        for (image, recipient) in &admitted {
            if images.contains_key(*image) {
                held.entry(image).or_default().insert(recipient);
            }
        }
    }

    // Candidate pairs: listed by a share that has not expired, image and recipient not refused.
    // Images and recipients are numbered as they are met, so that the bookkeeping per pair
    // below hashes, compares and sorts integers rather than names.
    let share_recipients: Vec<Vec<&str>> = shares
        .iter()
        .map(|s| share_recipients(snap, &eval.owner, &s.object))
        .collect();
    // Sized for the listed names and pairs, which bound them: no table grows on the way.
    let listed_images: usize = shares.iter().map(|s| s.object.spec.images.len()).sum();
    let listed_recipients: usize = share_recipients.iter().map(Vec::len).sum();
    let listed_pairs: usize = shares
        .iter()
        .zip(&share_recipients)
        .map(|(s, r)| s.object.spec.images.len() * r.len())
        .sum();
    let mut images: Vec<&str> = Vec::with_capacity(listed_images);
    let mut image_numbers: HashMap<&str, usize> = HashMap::with_capacity_and_hasher(listed_images, Default::default());
    let mut recipients: Vec<&str> = Vec::with_capacity(listed_recipients);
    let mut recipient_numbers: HashMap<&str, usize> =
        HashMap::with_capacity_and_hasher(listed_recipients, Default::default());
    // By image number: its candidate recipients' numbers, in the order they were met.
    let mut candidates: Vec<Vec<usize>> = Vec::with_capacity(listed_images);
    let mut seen: HashSet<(usize, usize)> = HashSet::with_capacity_and_hasher(listed_pairs, Default::default());
    for (share, listed) in shares.iter().zip(&share_recipients) {
        if is_expired(snap, &share.object) {
            continue;
        }
        let valid: Vec<usize> = listed
            .iter()
            .copied()
            .filter(|r| eval.recipient_refusal(snap, r).is_none())
            .map(|r| {
                *recipient_numbers.entry(r).or_insert_with(|| {
                    recipients.push(r);
                    recipients.len() - 1
                })
            })
            .collect();
        if valid.is_empty() {
            continue;
        }
        for image in &share.object.spec.images {
            if eval.image_refusal(image).is_some() {
                continue;
            }
            let number = *image_numbers.entry(image).or_insert_with(|| {
                images.push(image);
                candidates.push(Vec::with_capacity(valid.len()));
                images.len() - 1
            });
            for &recipient in &valid {
                if seen.insert((number, recipient)) {
                    candidates[number].push(recipient);
                }
            }
        }
    }
    // Admission order: an image by the oldest share that lists it (expired or not, whether or
    // not its recipients there are refused), then that share's `spec.images` order; a recipient
    // of an image by the oldest share that lists the pair, then its recipients' order.
    // Refusals of images and recipients do not depend on the share, so only expired shares can
    // put a pair earlier than the loop above found it.
    let mut image_rank: Vec<Option<(usize, usize)>> = vec![None; images.len()];
    for (s, share) in shares.iter().enumerate() {
        for (i, image) in share.object.spec.images.iter().enumerate() {
            if let Some(&number) = image_numbers.get(image.as_str()) {
                image_rank[number].get_or_insert((s, i));
            }
        }
    }
    let mut image_order: Vec<usize> = (0..images.len()).collect();
    image_order.sort_by_key(|&number| image_rank[number]);
    if shares.iter().any(|s| is_expired(snap, &s.object)) {
        let mut pair_rank: HashMap<(usize, usize), (usize, usize)> = HashMap::default();
        for (s, (share, listed)) in shares.iter().zip(&share_recipients).enumerate() {
            for image in &share.object.spec.images {
                let Some(&number) = image_numbers.get(image.as_str()) else {
                    continue;
                };
                for (j, r) in listed.iter().enumerate() {
                    if let Some(&recipient) = recipient_numbers.get(r) {
                        pair_rank.entry((number, recipient)).or_insert((s, j));
                    }
                }
            }
        }
        for (number, list) in candidates.iter_mut().enumerate() {
            list.sort_by_key(|&recipient| pair_rank.get(&(number, recipient)).copied());
        }
    }

    let limits = &eval.limits;
    // Sticky: an image with an admitted pair keeps its slot while it is still shared, also when
    // the owner swapped the recipients it had for others.
    let recorded_images: BTreeSet<&str> = admitted.iter().map(|(image, _)| *image).collect();
    let mut counted_images: BTreeSet<&str> = images
        .iter()
        .copied()
        .filter(|img| recorded_images.contains(img))
        .collect();
    counted_images.extend(held.keys().copied());
    let mut used_images = counted_images.len();
    // By recipient number: the numbers of the images offered to it.
    let mut offered_to: Vec<Vec<usize>> = vec![Vec::new(); recipients.len()];
    let mut image_names: Vec<Option<Arc<str>>> = vec![None; images.len()];
    let mut chosen: Vec<usize> = Vec::new();
    for number in image_order {
        let image = images[number];
        if !counted_images.contains(image) {
            // An image that could get no recipient would not be a shared image.
            if frozen || !has_room(limits.shared_images, used_images) || !has_room(limits.recipients_per_image, 0) {
                continue;
            }
            used_images += 1;
        }
        // Candidate images passed `image_refusal`, so they have a verdict and its shared name.
        let Some((image_name, _)) = eval.images.get_key_value(image) else {
            continue;
        };
        eval.shared_images.insert(image_name.clone());
        image_names[number] = Some(image_name.clone());
        // Recipients using the image: those held by what can not be read, and those chosen.
        let held_here = held.get(image);
        let mut using = held_here.map_or(0, BTreeSet::len);
        let not_held = |recipient: usize| held_here.is_none_or(|h| !h.contains(recipients[recipient]));
        let is_admitted = |recipient: usize| admitted.contains(&(image, recipients[recipient]));
        chosen.clear();
        for &r in candidates[number].iter().filter(|&&r| is_admitted(r)) {
            using += usize::from(not_held(r));
            chosen.push(r);
        }
        for &r in &candidates[number] {
            if !is_admitted(r) && !frozen && has_room(limits.recipients_per_image, using) {
                using += usize::from(not_held(r));
                chosen.push(r);
            }
        }
        for &r in &chosen {
            // Most recipients are offered several of the images: room for all at once.
            let list = &mut offered_to[r];
            if list.capacity() == 0 {
                list.reserve_exact(images.len());
            }
            list.push(number);
        }
    }
    // Recipients and each one's images in name order: names sorted once, pairs by number.
    let mut image_name_rank = vec![0; images.len()];
    let mut by_name: Vec<usize> = (0..images.len()).collect();
    by_name.sort_unstable_by_key(|&number| images[number]);
    for (rank, number) in by_name.into_iter().enumerate() {
        image_name_rank[number] = rank;
    }
    let mut recipients_by_name: Vec<usize> = (0..recipients.len()).collect();
    recipients_by_name.sort_unstable_by_key(|&r| recipients[r]);
    let mut offered = Vec::with_capacity(recipients.len());
    for r in recipients_by_name {
        let numbers = &mut offered_to[r];
        if numbers.is_empty() {
            continue;
        }
        numbers.sort_unstable_by_key(|&number| image_name_rank[number]);
        offered.push(RecipientPairs {
            reached_by: 0,
            recipient: Arc::from(recipients[r]),
            pairs: numbers
                .iter()
                .filter_map(|&number| Some((image_names[number].clone()?, PairState::PENDING)))
                .collect(),
        });
    }
    eval.by_recipient = OfferedPairs::new(offered);
    eval.shared_images_used = used_images;
}

/// The winning decision for one image among a recipient's acceptances of one owner: the most
/// specific (see [`Specificity`]) wins; between equals the strongest decision wins (Remove >
/// Reject > Accept), the oldest breaking ties.
pub fn winner<'a>(acceptances: &[&'a Entry<ShareAcceptance>], image: &str) -> Option<Winner> {
    let mut best: Option<(&'a Entry<ShareAcceptance>, Specificity)> = None;
    for entry in acceptances {
        let spec = &entry.object.spec;
        let Some(specificity) = Specificity::of(spec, image) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((b, b_specificity)) => {
                (specificity, spec.decision, std::cmp::Reverse(&entry.age))
                    > (b_specificity, b.object.spec.decision, std::cmp::Reverse(&b.age))
            }
        };
        if better {
            best = Some((entry, specificity));
        }
    }
    best.map(|(e, specificity)| Winner {
        acceptance: e.name.clone(),
        decision: e.object.spec.decision,
        specificity,
    })
}

/// The most recipients one ImageShare reaches, listed and selected together (the status lists
/// are bounded by it).
pub const MAX_SHARE_RECIPIENTS: usize = 128;

/// Whether a share lists or selects `recipient` (see [`share_recipients`]).
pub fn share_reaches(snap: &Snapshot, owner: &str, share: &ImageShare, recipient: &str) -> bool {
    share.spec.recipients.iter().any(|r| r == recipient)
        || (share.spec.recipient_selector.is_some() && share_recipients(snap, owner, share).contains(&recipient))
}

/// The recipients of a share: those it lists, in spec order, then the namespaces its
/// recipientSelector selects, by name, without the owner and namespaces of another region
/// (those are skipped, not refused); at most [`MAX_SHARE_RECIPIENTS`].
pub fn share_recipients<'a>(snap: &'a Snapshot, owner: &str, share: &'a ImageShare) -> Vec<&'a str> {
    let mut out: Vec<&str> = share.spec.recipients.iter().map(String::as_str).collect();
    if share.spec.recipient_selector.is_some() {
        let region = region_of(snap, owner);
        for ns in snap.selected_by(owner, share) {
            if out.len() >= MAX_SHARE_RECIPIENTS {
                break;
            }
            if region_of(snap, ns) == region && !share.spec.recipients.iter().any(|r| r == ns) {
                out.push(ns);
            }
        }
    }
    out
}

/// Orders names; the evaluation's shared names are equal at the same address, unread.
fn cmp_shared(a: &Arc<str>, b: &Arc<str>) -> std::cmp::Ordering {
    if Arc::ptr_eq(a, b) {
        std::cmp::Ordering::Equal
    } else {
        a.cmp(b)
    }
}

/// Decides the state of every offered pair, then counts the states of each image's pairs.
fn decide_states(snap: &Snapshot, eval: &mut OwnerEval) {
    // Both in recipient name order: walked side by side rather than looked up per recipient.
    let mut naming = snap.acceptances_naming(&eval.owner).peekable();
    for RecipientPairs { recipient, pairs, .. } in &mut eval.by_recipient.recipients {
        while naming.next_if(|(r, _)| *r < &**recipient).is_some() {}
        let named = naming.next_if(|(r, _)| *r == &**recipient).map(|(_, named)| named);
        let acceptances: Vec<&Entry<ShareAcceptance>> = named
            .into_iter()
            .flatten()
            .chain(snap.selecting_acceptances(recipient, &eval.owner))
            .collect();
        let blind = snap.has_unreadable_acceptance(recipient);
        if acceptances.is_empty() && !blind {
            continue;
        }
        for (image, pair) in pairs.iter_mut() {
            if let Some(w) = winner(&acceptances, image) {
                pair.state = w.decision.state();
                pair.winner = Some(w);
            }
            if blind && pair.state == ShareState::Accepted {
                // Fail closed: an unreadable acceptance of this namespace may refuse the pair.
                let recorded = eval.recorded.get(&(image.to_string(), recipient.to_string())).copied();
                if recorded != Some(ShareState::Accepted) {
                    pair.state = recorded.unwrap_or(ShareState::Pending);
                    pair.withheld = true;
                }
            }
        }
    }
    // Every offered image is a shared image: counted in a list by name, then made the map in
    // one go.
    let mut counts: Vec<(Arc<str>, RecipientCounts)> = eval
        .shared_images
        .iter()
        .map(|image| (image.clone(), RecipientCounts::default()))
        .collect();
    for offered in eval.by_recipient.iter() {
        for (image, pair) in &offered.pairs {
            let Ok(i) = counts.binary_search_by(|(name, _)| cmp_shared(name, image)) else {
                continue;
            };
            let counts = &mut counts[i].1;
            match pair.state {
                ShareState::Pending => counts.pending += 1,
                ShareState::Accepted => counts.accepted += 1,
                ShareState::Rejected => counts.rejected += 1,
                ShareState::Removed => counts.removed += 1,
            }
        }
    }
    eval.counts = counts
        .into_iter()
        .filter(|(_, c)| c.pending + c.accepted + c.rejected + c.removed > 0)
        .collect();
}
