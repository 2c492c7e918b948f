//! The names `kubectl ims` gives the objects it writes (README.md, "kubectl ims").
//!
//! A decision is written to a ShareAcceptance whose name follows from the owner and the images
//! it covers, so that deciding again on the same images rewrites the same object (its decision
//! replaced) instead of piling up acceptances that conflict:
//!
//! - every image of an owner: `OWNER`;
//! - one image: `OWNER-IMAGE`;
//! - several images: `OWNER-IMAGE1-IMAGE2-…`, the images sorted and each named once.
//!
//! Names are kept to DNS labels (at most 63 characters), so that they fit wherever Kubernetes
//! takes a name, a label value included: a longer one is cut to 54 characters and ends in `-`
//! and 8 hex digits of a hash of the owner and the image set. Names built by joining are ambiguous
//! (owner `team` with image `a` and owner `team-a` with all images both give `team-a`), so the
//! caller checks what an existing object of that name covers and, when it is something else,
//! uses [`hashed`], which only the same owner and image set produce.

/// The longest Kubernetes object name that is also a DNS label.
pub const MAX_NAME: usize = 63;

/// Characters kept of a readable name before the `-` and the hash.
const HASHED_PREFIX: usize = MAX_NAME - 1 - 8;

/// The owner and images a ShareAcceptance covers, in the order-free form that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub owner: String,
    /// Sorted, without repeats; empty means every image the owner offers.
    pub images: Vec<String>,
}

impl Covered {
    pub fn new(owner: &str, images: &[String]) -> Self {
        let mut images = images.to_vec();
        images.sort();
        images.dedup();
        Covered {
            owner: owner.to_string(),
            images,
        }
    }

    /// The text the hash is taken of: `owner/` and the images joined by `,`, which no owner or
    /// image name contains.
    fn key(&self) -> String {
        format!("{}/{}", self.owner, self.images.join(","))
    }

    fn readable(&self) -> String {
        std::iter::once(self.owner.as_str())
            .chain(self.images.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// The ShareAcceptance name for a decision on `covered` (see the module documentation).
pub fn acceptance(covered: &Covered) -> String {
    fit(&covered.readable(), &covered.key())
}

/// The name to use when [`acceptance`] is taken by a ShareAcceptance that covers something
/// else: the readable name cut short, then a hash that differs for every owner and image set.
pub fn hashed(covered: &Covered) -> String {
    with_hash(&covered.readable(), &covered.key())
}

/// The default ImageShare name: `share-<first image>`, hashed when that is too long.
pub fn share(images: &[String]) -> String {
    let first = images.first().map(String::as_str).unwrap_or_default();
    let name = format!("share-{first}");
    fit(&name, &name)
}

fn fit(name: &str, key: &str) -> String {
    if name.len() <= MAX_NAME {
        name.to_string()
    } else {
        with_hash(name, key)
    }
}

/// `name` cut to 54 characters, without a trailing `-` (`a--1f2e…` would read like a typo), then
/// `-` and the hash of `key`.
fn with_hash(name: &str, key: &str) -> String {
    // Names here are ASCII (DNS labels joined by '-'), so byte positions are characters.
    let cut = name.get(..HASHED_PREFIX).unwrap_or(name).trim_end_matches('-');
    format!("{cut}-{:08x}", fnv1a(key.as_bytes()))
}

/// 32-bit FNV-1a: a hash that never changes between builds, Rust versions or machines, unlike
/// std's `DefaultHasher`, so the same decision always finds the same object.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Whether `s` is a DNS-1123 label: what namespaces and the images an acceptance names must be.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= MAX_NAME
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(owner: &str, images: &[&str]) -> Covered {
        Covered::new(owner, &images.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_follow_the_owner_and_the_images() {
        assert_eq!(acceptance(&covered("tenant-a", &[])), "tenant-a");
        assert_eq!(acceptance(&covered("tenant-a", &["web"])), "tenant-a-web");
        assert_eq!(
            acceptance(&covered("tenant-a", &["web", "db", "web"])),
            "tenant-a-db-web"
        );
        // The order of the images does not matter: the same set is the same object.
        assert_eq!(
            acceptance(&covered("tenant-a", &["web", "db"])),
            acceptance(&covered("tenant-a", &["db", "web"]))
        );
    }

    #[test]
    fn long_names_are_cut_and_hashed_into_a_dns_label() {
        let owner = "o".repeat(40);
        let images = ["image-number-one", "image-number-two", "image-number-three"];
        let name = acceptance(&covered(&owner, &images));
        // The cut ends in '-' here, which is dropped.
        assert_eq!(
            name,
            format!(
                "{owner}-image-number-{:08x}",
                fnv1a(format!("{owner}/{}", "image-number-one,image-number-three,image-number-two").as_bytes())
            )
        );
        assert!(is_dns_label(&name), "{name}");
        assert!(name.starts_with(&owner), "{name}");
        // Another set with the same first 54 characters gets another name.
        let other = acceptance(&covered(
            &owner,
            &["image-number-one", "image-number-two", "image-number-four"],
        ));
        assert_ne!(name, other);
        assert!(is_dns_label(&other), "{other}");
        // A 63-character owner and a 63-character image.
        let longest = acceptance(&covered(&"a".repeat(63), &[&"b".repeat(63)]));
        assert!(is_dns_label(&longest) && longest.len() == MAX_NAME, "{longest}");
        // A cut that would end in '-' drops it.
        let dashed = acceptance(&covered(&format!("{}-{}", "a".repeat(53), "b".repeat(9)), &["c"]));
        assert!(is_dns_label(&dashed) && !dashed.contains("--"), "{dashed}");
    }

    #[test]
    fn the_hashed_name_tells_ambiguous_joins_apart() {
        // owner "team" image "a" and owner "team-a" all images both read "team-a".
        let one = covered("team", &["a"]);
        let all = covered("team-a", &[]);
        assert_eq!(acceptance(&one), acceptance(&all));
        assert_ne!(hashed(&one), hashed(&all));
        assert!(is_dns_label(&hashed(&one)) && hashed(&one).starts_with("team-a-"));
        // Stable across runs and builds: a fixed value.
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(hashed(&all), format!("team-a-{:08x}", fnv1a(b"team-a/")));
    }

    #[test]
    fn default_share_names() {
        assert_eq!(share(&["web".into(), "db".into()]), "share-web");
        let long = share(&["x".repeat(63)]);
        assert!(
            is_dns_label(&long) && long.len() == MAX_NAME && long.starts_with("share-xxx"),
            "{long}"
        );
    }

    #[test]
    fn dns_labels() {
        for good in ["a", "tenant-a", "0", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
