//! The operator's vocabulary: every kind it reports on and every condition and event reason
//! and action, each defined once here (docs/reasons.md lists them for users). The strings
//! are the variants' names.

/// Namespace annotation overriding the private-images limit of one tenant.
pub const LIMIT_PRIVATE_IMAGES: &str = "ims.imageshare.io/limit.private-images";
/// Namespace annotation overriding the shared-images limit of one tenant.
pub const LIMIT_SHARED_IMAGES: &str = "ims.imageshare.io/limit.shared-images";
/// Namespace annotation overriding the recipients-per-image limit of one tenant.
pub const LIMIT_RECIPIENTS_PER_IMAGE: &str = "ims.imageshare.io/limit.recipients-per-image";
/// The three limit annotations.
pub const LIMIT_ANNOTATIONS: [&str; 3] = [LIMIT_PRIVATE_IMAGES, LIMIT_SHARED_IMAGES, LIMIT_RECIPIENTS_PER_IMAGE];
/// Namespace label naming its region.
pub const REGION_LABEL: &str = "ims.imageshare.io/region";

/// Defines an enum whose variants are written as their names.
macro_rules! vocabulary {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant),)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// The kinds of object an Event or a write failure can regard.
    pub enum Kind {
        PrivateImage,
        ImageShare,
        ShareAcceptance,
        ImageOffer,
        ImageQuota,
        Namespace,
        Role,
        RoleBinding,
    }
}

impl Kind {
    /// The kind of this name.
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// The apiVersion objects of this kind are served at.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace => "v1",
            Kind::Role | Kind::RoleBinding => "rbac.authorization.k8s.io/v1",
            _ => crate::api::API_VERSION,
        }
    }
}

vocabulary! {
    /// Reasons of a PrivateImage's Ready condition.
    pub enum ImageReason {
        Available,
        QuotaExceeded,
        InvalidSource,
        SourceNotFound,
        SourceNotReady,
        SourceUnsupported,
    }
}

vocabulary! {
    /// Why a listed (image, recipient) pair is not offered, in the precedence order of the
    /// docs: when pairs fail for different reasons, the first is the ImageShare's Ready reason.
    pub enum Refusal {
        Expired,
        ImageNotFound,
        ImageNotReady,
        ImagePublished,
        RecipientIsOwner,
        RecipientNotFound,
        RegionMismatch,
        SharedImageLimitExceeded,
        RecipientLimitExceeded,
    }
}

/// Reason of an ImageShare's Ready condition: every pair offered, or the first refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareReason {
    AllOffered,
    Refused(Refusal),
}

impl ShareReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareReason::AllOffered => "AllOffered",
            ShareReason::Refused(r) => r.as_str(),
        }
    }
}

vocabulary! {
    /// Reasons of a ShareAcceptance's Ready condition.
    pub enum AcceptanceReason {
        Applied,
        NothingOffered,
        Conflict,
    }
}

vocabulary! {
    /// Reasons of a PrivateImage's AccessGranted condition (present while recipients accepted
    /// it): the grant is in place, or why it is not.
    pub enum AccessReason {
        Granted,
        /// A Role or RoleBinding with the grant's name exists and was not made by the
        /// operator; it is never overwritten.
        GrantNameTaken,
        /// The API server refused the write (an admission policy, a quota, a conflict, …).
        GrantWriteFailed,
    }
}

vocabulary! {
    /// Reasons of Events that do not repeat a condition's reason.
    pub enum EventReason {
        /// ImageShare: pairs became offered.
        Offered,
        /// ImageShare: listed pairs newly refused.
        Refused,
        /// ImageShare: pairs went back to Pending (their decision was deleted).
        Pending,
        RecipientAccepted,
        RecipientRejected,
        RecipientRemoved,
        /// ImageShare or ImageOffer: pairs no longer offered.
        OfferWithdrawn,
        /// ImageOffer: images newly offered to this namespace.
        ImageOffered,
        /// ImageOffer: offered images whose state changed.
        Accepted,
        Rejected,
        Removed,
        /// ImageOffer or the deciding ShareAcceptance: an accepted image is no longer usable.
        AccessRevoked,
        /// Namespace: a limit annotation that does not parse.
        InvalidLimitAnnotation,
        /// The API server refused one of the operator's writes.
        WriteFailed,
        /// An object that does not decode.
        UnreadableObject,
    }
}

vocabulary! {
    /// What the operator was doing when an Event was recorded (`action`).
    pub enum Action {
        Admit,
        Share,
        Offer,
        Decide,
        Revoke,
        Grant,
        Configure,
        Write,
        Decode,
    }
}

/// The state-change Event reason of an offered image, as the recipient sees it.
pub fn offer_state_reason(state: crate::api::ShareState) -> EventReason {
    use crate::api::ShareState::*;
    match state {
        Pending => EventReason::Pending,
        Accepted => EventReason::Accepted,
        Rejected => EventReason::Rejected,
        Removed => EventReason::Removed,
    }
}

/// The state-change Event reason of a pair, as the owner sees it.
pub fn share_state_reason(state: crate::api::ShareState) -> EventReason {
    use crate::api::ShareState::*;
    match state {
        Pending => EventReason::Pending,
        Accepted => EventReason::RecipientAccepted,
        Rejected => EventReason::RecipientRejected,
        Removed => EventReason::RecipientRemoved,
    }
}
