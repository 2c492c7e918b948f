//! `simulate -o table`: what the controller would write, for people.

use crate::{
    api::ready_condition,
    columns::columns,
    core::{QuotaUpdate, TenantOutcome},
};

fn ready_cells(conditions: &[crate::api::Condition]) -> (String, String, String) {
    match ready_condition(conditions) {
        Some(c) => (c.status.to_string(), c.reason.to_string(), c.message.clone()),
        None => ("Unknown".into(), String::new(), String::new()),
    }
}

fn s(text: impl Into<String>) -> String {
    text.into()
}

/// Renders every section that has rows.
pub fn render(outcomes: &[TenantOutcome]) -> String {
    let mut out = String::new();

    let mut rows = vec![vec![
        s("NAMESPACE"),
        s("PRIVATE IMAGE"),
        s("READY"),
        s("REASON"),
        s("PENDING"),
        s("ACCEPTED"),
        s("REJECTED"),
        s("REMOVED"),
    ]];
    let mut notes = Vec::new();
    for o in outcomes {
        for u in &o.images {
            let (ready, reason, message) = ready_cells(&u.status.conditions);
            let r = &u.status.recipients;
            if ready != "True" {
                notes.push(format!("  {}/{}: {message}", o.namespace, u.name));
            }
            rows.push(vec![
                o.namespace.clone(),
                u.name.to_string(),
                ready,
                reason,
                r.pending.to_string(),
                r.accepted.to_string(),
                r.rejected.to_string(),
                r.removed.to_string(),
            ]);
        }
    }
    section(&mut out, rows, notes);

    let mut rows = vec![vec![
        s("NAMESPACE"),
        s("IMAGE SHARE"),
        s("OFFERED"),
        s("ACCEPTED"),
        s("READY"),
        s("REASON"),
    ]];
    let mut notes = Vec::new();
    for o in outcomes {
        for u in &o.shares {
            let (ready, reason, message) = ready_cells(&u.status.conditions);
            if ready != "True" {
                notes.push(format!("  {}/{}: {message}", o.namespace, u.name));
            }
            rows.push(vec![
                o.namespace.clone(),
                u.name.to_string(),
                u.status.offered.to_string(),
                u.status.accepted.to_string(),
                ready,
                reason,
            ]);
        }
    }
    section(&mut out, rows, notes);

    let mut rows = vec![vec![
        s("NAMESPACE"),
        s("IMAGE SHARE"),
        s("IMAGE"),
        s("RECIPIENT"),
        s("STATE"),
    ]];
    for o in outcomes {
        for u in &o.shares {
            for img in &u.status.images {
                for (state, list) in img.lists() {
                    for r in list {
                        rows.push(vec![
                            o.namespace.clone(),
                            u.name.to_string(),
                            img.name.clone(),
                            r.to_string(),
                            s(state.as_str()),
                        ]);
                    }
                }
            }
        }
    }
    section(&mut out, rows, Vec::new());

    let mut rows = vec![vec![
        s("NAMESPACE"),
        s("SHARE ACCEPTANCE"),
        s("READY"),
        s("REASON"),
        s("IMAGE"),
        s("STATE"),
        s("DECIDED BY"),
    ]];
    let mut notes = Vec::new();
    for o in outcomes {
        for u in &o.acceptances {
            let (ready, reason, message) = ready_cells(&u.status.conditions);
            if ready != "True" {
                notes.push(format!("  {}/{}: {message}", o.namespace, u.name));
            }
            if u.status.images.is_empty() {
                rows.push(vec![
                    o.namespace.clone(),
                    u.name.to_string(),
                    ready.clone(),
                    reason.clone(),
                    s("-"),
                    s("-"),
                    s("-"),
                ]);
            }
            for img in &u.status.images {
                let decided = match &img.decided_by {
                    Some(by) => format!("{by} ({})", img.reason.as_str()),
                    None => s(img.reason.as_str()),
                };
                rows.push(vec![
                    o.namespace.clone(),
                    u.name.to_string(),
                    ready.clone(),
                    reason.clone(),
                    img.name.to_string(),
                    s(img.state.as_str()),
                    decided,
                ]);
            }
            if u.status.more_images > 0 {
                notes.push(format!(
                    "  {}/{}: {} more images not listed",
                    o.namespace, u.name, u.status.more_images
                ));
            }
        }
    }
    section(&mut out, rows, notes);

    let mut rows = vec![vec![
        s("NAMESPACE"),
        s("IMAGE OFFER (OWNER)"),
        s("IMAGE"),
        s("STATE"),
        s("DECIDED BY"),
        s("TYPE"),
        s("OS"),
        s("DISK"),
    ]];
    let mut notes = Vec::new();
    for o in outcomes {
        for u in &o.offers {
            for img in &u.status.images {
                rows.push(vec![
                    o.namespace.clone(),
                    u.name.to_string(),
                    img.name.to_string(),
                    s(img.state.as_str()),
                    s(img.decided_by.as_deref().unwrap_or("-")),
                    format!("{:?}", img.image_type),
                    img.os_label(),
                    format!("{}Gi", img.disk_size_gib),
                ]);
            }
            if u.status.more_images > 0 {
                notes.push(format!(
                    "  {}/{}: {} more images not listed",
                    o.namespace, u.name, u.status.more_images
                ));
            }
        }
    }
    section(&mut out, rows, notes);

    let mut rows = vec![vec![
        s("NAMESPACE"),
        s("IMAGE QUOTA"),
        s("PRIVATE"),
        s("SHARED"),
        s("RECIPIENTS PER IMAGE"),
    ]];
    for o in outcomes {
        if let QuotaUpdate::Apply { status, .. } = &o.quota {
            let per_image = match status.hard.recipients_per_image {
                crate::config::UNLIMITED => s("unlimited"),
                n => n.to_string(),
            };
            rows.push(vec![
                o.namespace.clone(),
                s(crate::api::IMAGE_QUOTA_NAME),
                status.summary.private_images.clone(),
                status.summary.shared_images.clone(),
                per_image,
            ]);
        }
    }
    section(&mut out, rows, Vec::new());

    let mut rows = vec![vec![s("NAMESPACE"), s("GRANT (ROLE + ROLEBINDING)"), s("SUBJECTS")]];
    for o in outcomes {
        for g in o.grants.iter() {
            let subjects: Vec<String> = g
                .binding()
                .subjects
                .iter()
                .flatten()
                .map(|s| format!("{}:{}", s.kind, s.name))
                .collect();
            rows.push(vec![
                o.namespace.clone(),
                g.role().metadata.name.clone().unwrap_or_default(),
                subjects.join(", "),
            ]);
        }
    }
    section(&mut out, rows, Vec::new());

    let mut rows = vec![vec![s("EVENT ON"), s("TYPE"), s("REASON"), s("NOTE")]];
    for o in outcomes {
        for e in &o.events {
            let on = match &e.regarding.namespace {
                Some(ns) => format!("{} {ns}/{}", e.regarding.kind, e.regarding.name),
                None => format!("{} {}", e.regarding.kind, e.regarding.name),
            };
            rows.push(vec![on, s(e.type_.as_str()), s(e.reason), e.note.clone()]);
        }
    }
    section(&mut out, rows, Vec::new());
    if out.is_empty() {
        out.push_str("no PrivateImage, ImageShare or ShareAcceptance in the input\n");
    }
    out
}

fn section(out: &mut String, rows: Vec<Vec<String>>, notes: Vec<String>) {
    if rows.len() <= 1 {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&columns(&rows));
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
}
