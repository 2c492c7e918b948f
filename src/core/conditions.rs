//! `metav1.Condition` building with the time-insensitive rules of the README: the
//! `lastTransitionTime` moves only when `status` flips, so an unchanged verdict yields a status
//! equal to the current one and nothing is written.

use std::{borrow::Cow, fmt::Write as _};

use crate::api::Condition;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

/// Condition messages are capped well below the API's 32 KiB limit.
pub const MAX_MESSAGE: usize = 4096;

/// Builds a condition, keeping the previous `lastTransitionTime` unless the status flips.
pub fn condition(
    previous: &[Condition],
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: Cow::Borrowed(type_),
        status: Cow::Borrowed(status),
        reason: Cow::Borrowed(reason),
        message: truncate(message, MAX_MESSAGE),
        observed_generation,
        last_transition_time,
    }
}

/// The conditions of a status: its one `Ready` condition, built against the previous ones.
pub fn ready_conditions(
    previous: Option<&[Condition]>,
    ready: bool,
    reason: &'static str,
    message: String,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    vec![condition(
        previous.unwrap_or_default(),
        crate::api::READY,
        ready,
        reason,
        message,
        observed_generation,
        now,
    )]
}

/// Shortens text to at most `max` bytes on a char boundary, saying that it did.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    const MORE: &str = " …(truncated)";
    let mut cut = max - MORE.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(MORE);
    text
}

/// Joins names as `a, b and 3 more` once there are more than `max`.
pub fn name_list<'a>(names: impl IntoIterator<Item = &'a str>, max: usize) -> String {
    list_of(names, max, |out, name| out.push_str(name))
}

/// [`write_list`] into a new string.
pub fn list_of<T>(items: impl IntoIterator<Item = T>, max: usize, write: impl FnMut(&mut String, T)) -> String {
    let mut out = String::with_capacity(LIST_CAPACITY);
    write_list(&mut out, items, max, write);
    out
}

/// Room for a typical list, so that it is built without growing its buffer several times.
pub const LIST_CAPACITY: usize = 128;

/// Writes the first `max` items with `write`, joined by `, `, then `and N more` for the rest.
/// Messages and notes write their lists straight into their own buffer with it.
pub fn write_list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    max: usize,
    mut write: impl FnMut(&mut String, T),
) {
    let mut more = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= max {
            more += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        write(out, item);
    }
    if more > 0 {
        // Infallible: writing to a String.
        let _ = write!(out, " and {more} more");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let first = condition(&[], "Ready", true, "A", "m".into(), Some(1), at(10));
        assert_eq!(first.last_transition_time.0, at(10));
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "B",
            "other".into(),
            Some(2),
            at(20),
        );
        assert_eq!(
            same.last_transition_time.0,
            at(10),
            "reason/message changes keep the time"
        );
        let flipped = condition(&[same], "Ready", false, "B", "x".into(), Some(2), at(30));
        assert_eq!(flipped.last_transition_time.0, at(30));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let t = truncate("共享镜像".repeat(2000), 100);
        assert!(t.len() <= 100 && t.ends_with("(truncated)"));
        assert_eq!(name_list(["a", "b", "c"], 2), "a, b and 1 more");
    }
}
