//! `kubectl ims`: the kubectl plugin for tenants (README.md, "kubectl ims"). A recipient lists
//! its inbox (ImageOffers) and decides on it (ShareAcceptances); an owner shares images
//! (ImageShares) and reads its quota (ImageQuota). The binary `src/bin/kubectl-ims.rs` only
//! calls [`main`].
//!
//! Writes are server-side applies as the field manager `kubectl-ims` to objects with
//! deterministic names (names.rs), so that running a command again replaces what it applied
//! before instead of adding a second, conflicting object.

pub mod cli;
pub mod cluster;
pub mod error;
pub mod names;
pub mod render;
pub mod selector;

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use kube::{Resource, core::ApiResource};
use serde_json::{Value, json};

use self::{
    cli::{Cli, Command, DecideArgs, GlobalArgs, OffersArgs, Output, ShareArgs},
    cluster::{Cluster, decode},
    error::PluginError,
    names::Covered,
};
use crate::api::{
    API_VERSION, Decision, IMAGE_QUOTA_NAME, ImageOffer, ImageQuota, ImageShare, PrivateImage, ShareAcceptance,
};

/// Parses the command line (clap exits with 2 on bad usage, 0 for --help), runs the command
/// and exits with the code of its failure (error.rs).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: can not start the async runtime: {e}");
            return ExitCode::from(error::EXIT_API);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command. Checks that need no cluster (names, selector, date) come first, so
/// a mistyped command fails the same way with or without a reachable API server.
pub async fn run(cli: Cli) -> Result<(), PluginError> {
    let global = cli.global;
    match cli.command {
        Command::Offers(args) => offers(&Cluster::connect(&global).await?, &global, &args).await,
        Command::Accept(args) => decide(&global, Decision::Accept, &args).await,
        Command::Reject(args) => decide(&global, Decision::Reject, &args).await,
        Command::Remove(args) => decide(&global, Decision::Remove, &args).await,
        Command::Share(args) => share(&global, &args).await,
        Command::Usage => usage(&Cluster::connect(&global).await?, &global).await,
    }
}

/// Writes to stdout. A closed pipe (`kubectl ims offers | head -1`) is not an error: the
/// reader has what it wanted, and `print!` would panic on it.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

async fn offers(cluster: &Cluster, global: &GlobalArgs, args: &OffersArgs) -> Result<(), PluginError> {
    let namespace = (!args.all_namespaces).then_some(cluster.namespace.as_str());
    let items = cluster.list(&resource::<ImageOffer>(), namespace).await?;
    if global.output != Output::Table {
        emit(&render::objects(global.output, items, true));
        return Ok(());
    }
    let offers = items.iter().map(decode).collect::<Result<Vec<ImageOffer>, _>>()?;
    match render::offers(&offers, args.all_namespaces) {
        Some(table) => emit(&table),
        None if args.all_namespaces => eprintln!("No namespace is offered any image."),
        None => eprintln!(
            "No images are offered to namespace {}: no other namespace shares any with it.",
            cluster.namespace
        ),
    }
    Ok(())
}

/// `accept`, `reject` and `remove`: check the offer, then apply the decision.
async fn decide(global: &GlobalArgs, decision: Decision, args: &DecideArgs) -> Result<(), PluginError> {
    let owner = &args.owner;
    if !names::is_dns_label(owner) {
        return Err(PluginError::User(format!(
            "{owner:?} is not a namespace name, so it offers nothing"
        )));
    }
    let cluster = Cluster::connect(global).await?;
    let ns = cluster.namespace.as_str();
    let Some(offer) = cluster.get(&resource::<ImageOffer>(), ns, owner).await? else {
        return Err(PluginError::User(format!("{owner} offers nothing to namespace {ns}")));
    };
    let offer: ImageOffer = decode(&offer)?;
    let status = offer.status.unwrap_or_default();
    let covered = Covered::new(owner, &args.images);
    let unlisted: Vec<&String> = covered
        .images
        .iter()
        .filter(|image| !status.images.iter().any(|offered| *offered.name == **image))
        .collect();
    if !unlisted.is_empty() {
        let names = unlisted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        if status.more_images == 0 {
            let noun = if unlisted.len() == 1 { "image" } else { "images" };
            return Err(PluginError::User(format!("no {noun} {names} offered by {owner}")));
        }
        // The ImageOffer lists at most 1,000 images: beyond them, an image may be offered
        // without being listed, so only the operator can tell.
        eprintln!(
            "warning: {names} not among the images listed in {owner}'s offer ({} more are not listed); applying anyway",
            status.more_images
        );
    }

    let sacc = resource::<ShareAcceptance>();
    let name = acceptance_name(&cluster, &covered).await?;
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "ShareAcceptance",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"owner": owner, "images": covered.images, "decision": decision.as_str()},
    });
    let Some(applied) = apply_observed(&cluster, &sacc, &name, &body, args.wait, global.output).await? else {
        return Ok(());
    };
    let applied: ShareAcceptance = decode(&applied)?;
    emit(&render::acceptance(ns, decision, &covered, &applied));
    Ok(())
}

/// The name of the ShareAcceptance for `covered` (names.rs): the readable one, unless an
/// object of that name covers another owner or image set (names built by joining can
/// coincide), then the hashed one. Deciding again on the same owner and images finds the same
/// object either way.
async fn acceptance_name(cluster: &Cluster, covered: &Covered) -> Result<String, PluginError> {
    let sacc = resource::<ShareAcceptance>();
    let ns = cluster.namespace.as_str();
    let mut taken = Vec::new();
    for name in [names::acceptance(covered), names::hashed(covered)] {
        let Some(existing) = cluster.get(&sacc, ns, &name).await? else {
            return Ok(name);
        };
        let existing: ShareAcceptance = decode(&existing)?;
        if Covered::new(&existing.spec.owner, &existing.spec.images) == *covered {
            return Ok(name);
        }
        taken.push(name);
    }
    Err(PluginError::User(format!(
        "the ShareAcceptances {} in namespace {ns} decide on other images; write one of another name with kubectl apply",
        taken.join(" and ")
    )))
}

/// Applies `body` to the namespace, waits up to `wait` seconds for the operator to observe it,
/// and prints it as YAML or JSON when asked; returns it when a table is to be printed.
async fn apply_observed(
    cluster: &Cluster,
    resource: &ApiResource,
    name: &str,
    body: &Value,
    wait: u64,
    output: Output,
) -> Result<Option<Value>, PluginError> {
    let mut applied = cluster.apply(resource, &cluster.namespace, name, body).await?;
    if wait > 0 {
        applied = wait_observed(cluster, resource, name, applied, wait).await?;
    }
    if output != Output::Table {
        emit(&render::objects(output, vec![applied], false));
        return Ok(None);
    }
    Ok(Some(applied))
}

/// Polls the object until the operator's status names its current generation, or `seconds`
/// have passed; returns the last version read.
async fn wait_observed(
    cluster: &Cluster,
    resource: &ApiResource,
    name: &str,
    mut object: Value,
    seconds: u64,
) -> Result<Value, PluginError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let observed = |o: &Value| {
        let generation = &o["metadata"]["generation"];
        !generation.is_null() && o["status"]["observedGeneration"] == *generation
    };
    while !observed(&object) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match cluster.get(resource, &cluster.namespace, name).await? {
            Some(latest) => object = latest,
            None => {
                return Err(PluginError::Api(format!(
                    "{name} was deleted in namespace {} while waiting for the operator",
                    cluster.namespace
                )));
            }
        }
    }
    Ok(object)
}

async fn share(global: &GlobalArgs, args: &ShareArgs) -> Result<(), PluginError> {
    for image in &args.images {
        if !names::is_dns_label(image) {
            return Err(PluginError::User(format!(
                "{image:?} is not a PrivateImage name (a DNS label: lowercase letters, digits and '-')"
            )));
        }
    }
    for recipient in &args.to {
        if !names::is_dns_label(recipient) {
            return Err(PluginError::User(format!("{recipient:?} is not a namespace name")));
        }
    }
    let selector = match &args.selector {
        Some(text) => Some(selector::parse(text).map_err(|e| PluginError::User(e.to_string()))?),
        None => None,
    };
    let expires_at = match &args.expires_at {
        Some(text) => {
            let at: jiff::Timestamp = text.parse().map_err(|e| {
                PluginError::User(format!(
                    "--expires-at {text:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z: {e}"
                ))
            })?;
            if at <= jiff::Timestamp::now() {
                eprintln!("warning: --expires-at {at} has passed: the share offers nothing");
            }
            Some(at.to_string())
        }
        None => None,
    };
    let mut images = args.images.clone();
    dedup_in_order(&mut images);
    let mut recipients = args.to.clone();
    dedup_in_order(&mut recipients);
    let name = args.name.clone().unwrap_or_else(|| names::share(&images));

    let cluster = Cluster::connect(global).await?;
    let ns = cluster.namespace.as_str();
    // spec.recipientSelector is written as JSON: the Rust type of the spec may not have the
    // field yet, and the API server (strict validation) refuses it where the CRD lacks it.
    let mut spec = json!({"images": images});
    if !recipients.is_empty() {
        spec["recipients"] = json!(recipients);
    }
    if let Some(selector) = &selector {
        spec["recipientSelector"] = serde_json::to_value(selector).expect("a LabelSelector serializes");
    }
    if let Some(at) = &expires_at {
        spec["expiresAt"] = json!(at);
    }
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "ImageShare",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    let ishare = resource::<ImageShare>();
    let Some(applied) = apply_observed(&cluster, &ishare, &name, &body, args.wait, global.output).await? else {
        return Ok(());
    };
    let plan = render::SharePlan {
        images: &images,
        recipients: &recipients,
        selector: args.selector.as_deref(),
        expires_at: expires_at.as_deref(),
    };
    let applied: ImageShare = decode(&applied)?;
    emit(&render::share(ns, &plan, &applied));
    Ok(())
}

/// Keeps the first of repeated names: the API server refuses duplicates in these lists.
fn dedup_in_order(names: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
}

async fn usage(cluster: &Cluster, global: &GlobalArgs) -> Result<(), PluginError> {
    let ns = cluster.namespace.as_str();
    let quota = cluster.get(&resource::<ImageQuota>(), ns, IMAGE_QUOTA_NAME).await?;
    let images = cluster.list(&resource::<PrivateImage>(), Some(ns)).await?;
    if global.output != Output::Table {
        let objects = quota.into_iter().chain(images).collect();
        emit(&render::objects(global.output, objects, true));
        return Ok(());
    }
    let quota: Option<ImageQuota> = quota.as_ref().map(decode).transpose()?;
    let images = images.iter().map(decode).collect::<Result<Vec<PrivateImage>, _>>()?;
    if quota.is_none() {
        eprintln!(
            "Namespace {ns} has no ImageQuota: the operator keeps one only where there is a PrivateImage, an ImageShare or a limit annotation."
        );
    }
    emit(&render::usage(ns, quota.as_ref(), &images));
    Ok(())
}
