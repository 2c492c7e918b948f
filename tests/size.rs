//! Status size bounds (README, "The API": ImageShare): the largest legal ImageShare status — 30 images × 128
//! recipients with 63-character names, pairs in all four states, a condition with a maximal
//! message — serializes far below etcd's 1.5 MiB object limit (under 512 KiB). The status is
//! built by the engine itself, with every limit lifted.

mod common;

use common::*;
use ims_operator::{
    api::{Decision, ImageShareStatus, ShareAcceptanceStatus, ShareState},
    core::{World, conditions::MAX_MESSAGE},
};

const KIB: usize = 1024;
/// metav1.Condition allows messages of up to 32768 bytes.
const API_MAX_MESSAGE: usize = 32768;

/// A DNS label of exactly 63 characters starting with `prefix`.
fn name63(prefix: &str) -> String {
    let name = format!("{prefix}-{}", "x".repeat(63 - prefix.len() - 1));
    assert_eq!(name.len(), 63);
    name
}

fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).unwrap().len()
}

/// Owner `name63("owner")` shares 30 images with 128 recipients; recipient i decides
/// nothing / Accept / Reject / Remove by i % 4.
fn largest_share() -> (Scenario, Vec<String>, Vec<String>) {
    let owner = name63("owner");
    let images: Vec<String> = (0..30).map(|i| name63(&format!("image{i:02}"))).collect();
    let recipients: Vec<String> = (0..128).map(|i| name63(&format!("tenant{i:03}"))).collect();
    let mut s = Scenario::new(limits(-1, -1, -1), World::Cluster { kubevirt: true });
    s.namespaces(&[owner.as_str()]);
    for (i, img) in images.iter().enumerate() {
        let mut image = image(&owner, img, i as i64);
        image.spec.display_name = Some("d".repeat(128));
        image.spec.os_version = Some("v".repeat(128));
        s.image(image);
    }
    let image_refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let recipient_refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
    s.share(share(&owner, &name63("share"), &image_refs, &recipient_refs, 100));
    for (i, r) in recipients.iter().enumerate() {
        s.namespaces(&[r.as_str()]);
        let decision = match i % 4 {
            0 => continue,
            1 => Decision::Accept,
            2 => Decision::Reject,
            _ => Decision::Remove,
        };
        s.acceptance(acceptance(r, &name63("from"), &owner, &[], decision, 200));
    }
    (s, images, recipients)
}

#[test]
fn largest_image_share_status_is_under_512_kib() {
    let (s, images, _) = largest_share();
    let out = s.eval();
    let owner = name63("owner");
    let mut status: ImageShareStatus = out.share(&owner, &name63("share")).clone();
    assert_eq!(status.images.len(), 30);
    assert_eq!(status.offered, 30 * 128);
    for img in &status.images {
        assert!(images.contains(&img.name));
        let lens = [
            img.pending.len(),
            img.accepted.len(),
            img.rejected.len(),
            img.removed.len(),
        ];
        assert_eq!(lens, [32; 4], "all four lists are used for {}", img.name);
    }
    let engine_size = json_len(&status);
    let (_, _, message) = ready(&status.conditions);
    assert!(message.len() <= MAX_MESSAGE);

    // The worst a condition can carry: the API's maximal message and a long reason.
    status.conditions[0].message = "m".repeat(API_MAX_MESSAGE);
    status.conditions[0].reason = "R".repeat(1024).into();
    status.observed_generation = Some(i64::MAX);
    let size = json_len(&status);
    eprintln!(
        "largest ImageShare status: {} bytes as the engine writes it, {} bytes with a maximal condition",
        engine_size, size
    );
    assert!(size < 512 * KIB, "{size} bytes");
    // The whole object (spec lists the same names again) stays far below etcd's 1.5 MiB too.
    let share = s.get_share(&owner, &name63("share"));
    assert!(json_len(&share) + size < 512 * KIB);
}

#[test]
fn pairs_that_are_not_offered_keep_the_status_bounded() {
    // The same share with every pair refused: the message is capped, the state lists are
    // empty and the refused lists name each pair once, like the state lists would.
    let (mut s, _, _) = largest_share();
    let owner = name63("owner");
    let mut share = s.get_share(&owner, &name63("share"));
    share.spec.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(from_now(-1)));
    s.share(share);
    let out = s.eval();
    let status = out.share(&owner, &name63("share"));
    assert_eq!(status.offered, 0);
    let (_, reason, message) = ready(&status.conditions);
    assert_eq!(reason, "Expired");
    assert!(message.len() <= MAX_MESSAGE, "{}", message.len());
    let refused: usize = status
        .images
        .iter()
        .flat_map(|i| &i.refused)
        .map(|g| g.recipients.len())
        .sum();
    assert_eq!(refused, 30 * 128);
    assert!(json_len(status) < 512 * KIB, "{} bytes", json_len(status));
}

#[test]
fn largest_received_list_with_these_names() {
    // A recipient of the largest share lists 30 images; its status stays small.
    let (s, _, recipients) = largest_share();
    let out = s.eval();
    let status: &ShareAcceptanceStatus = out.acceptance(&recipients[1], &name63("from"));
    assert_eq!(status.images.len(), 30);
    assert!(status.images.iter().all(|i| i.state == ShareState::Accepted));
    assert!(json_len(status) < 64 * KIB);
}

/// etcd's default request size limit.
const ETCD_LIMIT: usize = 1536 * KIB;

#[test]
fn largest_share_acceptance_status_fits_in_etcd() {
    // The "shared with me" list holds up to 1,000 entries (README, "The API": ImageOffer), each with the image's
    // displayName (≤128), osVersion (≤128), decidedBy (a ShareAcceptance name, ≤253) and, while
    // Accepted, source.file.url (≤2048). At those lengths 1,000 entries would not fit, so the
    // list stops at its byte budget and moreImages counts the rest.
    let owner = name63("owner");
    let recipient = name63("recipient");
    let acceptance_name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(acceptance_name.len(), 253);
    let mut s = Scenario::new(limits(-1, -1, -1), World::Cluster { kubevirt: true });
    s.namespaces(&[owner.as_str(), recipient.as_str()]);
    let names: Vec<String> = (0..1000).map(|i| name63(&format!("image{i:04}"))).collect();
    for (i, n) in names.iter().enumerate() {
        let mut img = image(&owner, n, i as i64);
        img.spec.display_name = Some("d".repeat(128));
        img.spec.os_version = Some("v".repeat(128));
        let url = format!("s3://bucket/{}", "u".repeat(2048 - "s3://bucket/".len()));
        img.spec.source.file.as_mut().unwrap().url = url;
        s.image(img);
    }
    for (k, chunk) in names.chunks(30).enumerate() {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        s.share(share(&owner, &format!("s{k:02}"), &chunk, &[recipient.as_str()], 2000));
    }
    s.acceptance(acceptance(
        &recipient,
        &acceptance_name,
        &owner,
        &[],
        Decision::Accept,
        3000,
    ));
    let out = s.eval();
    let status = out.offer(&recipient, &owner).expect("an inbox entry");
    assert!(status.images.len() < 1000, "the byte budget cut the list");
    assert_eq!(
        status.images.len() + status.more_images as usize,
        1000,
        "moreImages counts the rest"
    );
    let listed: Vec<&str> = status.images.iter().map(|i| &*i.name).collect();
    assert_eq!(
        listed,
        names[..listed.len()].iter().map(String::as_str).collect::<Vec<_>>(),
        "first by name"
    );
    let size = json_len(status);
    eprintln!("largest ImageOffer status: {size} bytes ({} KiB)", size / KIB);
    assert!(size < ETCD_LIMIT, "{size} bytes");
    assert!(
        size <= ims_operator::core::status::MAX_OFFER_BYTES + 8 * KIB,
        "the estimate is close: {size} bytes"
    );
    // The acceptance lists its 1000 decisions, small without the descriptions.
    let acceptance = out.acceptance(&recipient, &acceptance_name);
    assert_eq!(acceptance.images.len(), 1000);
    assert!(json_len(acceptance) < 256 * KIB);
}
