//! `ims-operator simulate`: the controller's decision code run offline on manifests (see README.md).

mod table;

use std::{
    collections::{BTreeMap, HashSet},
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use serde_json::Value;

use crate::{
    api::{self, ImageShare, PrivateImage, ShareAcceptance, validation},
    cli::{OutputFormat, SimulateArgs},
    config::Config,
    core::{self, MachineInfo, NamespaceInfo, Snapshot, TenantOutcome, VolumeState, World},
};

/// Exit status when input documents had to be skipped.
pub const EXIT_BAD_INPUT: u8 = 1;
/// Exit status for unusable arguments or config.
pub const EXIT_USAGE: u8 = 2;
/// Exit status with `--fail-on-not-ready` when some object is not Ready.
pub const EXIT_NOT_READY: u8 = 3;

/// One accepted input document of our three kinds.
#[derive(Clone, Debug)]
struct Input {
    kind: Kind,
    namespace: String,
    name: String,
    document: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    PrivateImage,
    ImageShare,
    ShareAcceptance,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::PrivateImage => "PrivateImage",
            Kind::ImageShare => "ImageShare",
            Kind::ShareAcceptance => "ShareAcceptance",
        }
    }
}

/// The manifests read, and what was wrong with the ones that were skipped.
pub struct Loaded {
    snapshot: Snapshot,
    inputs: Vec<Input>,
    pub errors: Vec<String>,
}

/// What a simulation computed.
pub struct Report {
    pub outcomes: Vec<TenantOutcome>,
    objects: Vec<Input>,
    pub errors: Vec<String>,
}

/// Entry point of the subcommand.
pub fn main(args: SimulateArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => Config::default(),
    };
    if let Some(region) = &args.region {
        config.region = region.clone();
    }
    // As `run`: the flag or the config file's key.
    config.kubevirt |= args.kubevirt;
    let now = match &args.now {
        Some(text) => match text.parse::<Timestamp>() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: --now {text:?} is not an RFC 3339 time: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => Timestamp::now(),
    };
    let report = match simulate(&args.paths, config, now) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let text = match args.output {
        OutputFormat::Yaml => report.yaml(),
        OutputFormat::Table => report.table(),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`simulate … | head`) is not an error worth a panic.
    let _ = stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush());
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if !report.errors.is_empty() {
        ExitCode::from(EXIT_BAD_INPUT)
    } else if args.fail_on_not_ready && report.not_ready() > 0 {
        eprintln!("{} object(s) not Ready", report.not_ready());
        ExitCode::from(EXIT_NOT_READY)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads the manifests and evaluates them.
pub fn simulate(paths: &[PathBuf], config: Config, now: Timestamp) -> Result<Report, String> {
    let loaded = load(paths, config, now)?;
    Ok(loaded.evaluate())
}

/// Files of a path: itself, or a folder's YAML/JSON files recursively in name order.
fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Reads every document of the given paths into a snapshot.
pub fn load(paths: &[PathBuf], config: Config, now: Timestamp) -> Result<Loaded, String> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let snapshot = Snapshot::new(config, World::Offline, now).map_err(|e| e.to_string())?;
    let mut loaded = Loaded {
        snapshot,
        inputs: Vec::new(),
        errors: Vec::new(),
    };
    let mut seen = HashSet::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                loaded.errors.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        for (index, doc) in crate::yaml::documents(&text).into_iter().enumerate() {
            let location = format!("{}: document {}", file.display(), index + 1);
            if let Err(e) = doc.and_then(|value| loaded.add(value, &mut seen)) {
                loaded.errors.push(format!("{location}: {e}"));
            }
        }
    }
    Ok(loaded)
}

impl Loaded {
    fn add(&mut self, mut value: Value, seen: &mut HashSet<(String, String, String)>) -> Result<(), String> {
        if value.is_null() {
            return Ok(()); // an empty document, e.g. after a trailing `---`
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind == "List" {
            let items = value.get_mut("items").map(Value::take).unwrap_or(Value::Null);
            let mut problems = Vec::new();
            for (i, item) in items.as_array().into_iter().flatten().enumerate() {
                if let Err(e) = self.add(item.clone(), seen) {
                    problems.push(format!("items[{i}]: {e}"));
                }
            }
            return if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            };
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(format!("{kind}: metadata.name: Required value"));
        }
        // Printed back as given; only the evaluated copy gets the namespace it would get.
        let document = value.clone();
        if value.pointer("/metadata/namespace").is_none() && kind != "Namespace" {
            value["metadata"]["namespace"] = Value::String("default".into());
        }
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !seen.insert((format!("{api_version}/{kind}"), namespace.clone(), name.clone())) {
            return Err(format!(
                "{kind} {namespace}/{name} is given twice; the later one is skipped"
            ));
        }
        let our_kind = match (api_version.as_str(), kind.as_str()) {
            (api::API_VERSION, "PrivateImage") => Kind::PrivateImage,
            (api::API_VERSION, "ImageShare") => Kind::ImageShare,
            (api::API_VERSION, "ShareAcceptance") => Kind::ShareAcceptance,
            ("v1", "Namespace") => {
                let ns: Namespace = serde_json::from_value(value).map_err(|e| format!("Namespace {name}: {e}"))?;
                self.snapshot
                    .upsert_namespace(&name, NamespaceInfo::from_namespace(&ns));
                return Ok(());
            }
            ("v1", "PersistentVolumeClaim") => {
                let bound = match value.pointer("/status/phase").and_then(Value::as_str) {
                    None | Some("Bound") => VolumeState::Bound,
                    Some(_) => VolumeState::NotBound,
                };
                self.snapshot.set_volume(&namespace, &name, Some(bound));
                return Ok(());
            }
            (v, "VirtualMachine") if v.starts_with("kubevirt.io/") => {
                self.snapshot
                    .set_machine(&namespace, &name, Some(MachineInfo::of_virtual_machine(&value)));
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "unsupported kind {kind:?} (apiVersion {api_version:?}); simulate reads PrivateImage, ImageShare and ShareAcceptance ({}), v1 Namespace, v1 PersistentVolumeClaim and kubevirt.io VirtualMachine",
                    api::API_VERSION
                ));
            }
        };
        // The API server gives a created object generation 1; statuses report it as
        // observedGeneration.
        if value.pointer("/metadata/generation").is_none() {
            value["metadata"]["generation"] = Value::from(1);
        }
        let schema = validation::schema_of(our_kind.as_str()).ok_or("no schema for kind")?;
        validation::validate(&schema, &value, None).map_err(|violations| {
            let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            format!(
                "{} {namespace}/{name} is invalid: {}",
                our_kind.as_str(),
                list.join("; ")
            )
        })?;
        let parse_error = |e: serde_json::Error| format!("{} {namespace}/{name}: {e}", our_kind.as_str());
        match our_kind {
            Kind::PrivateImage => {
                let obj: PrivateImage = serde_json::from_value(value.clone()).map_err(parse_error)?;
                self.snapshot.upsert_image(Arc::new(obj));
            }
            Kind::ImageShare => {
                let obj: ImageShare = serde_json::from_value(value.clone()).map_err(parse_error)?;
                self.snapshot.upsert_share(Arc::new(obj));
            }
            Kind::ShareAcceptance => {
                let obj: ShareAcceptance = serde_json::from_value(value.clone()).map_err(parse_error)?;
                self.snapshot.upsert_acceptance(Arc::new(obj));
            }
        }
        self.inputs.push(Input {
            kind: our_kind,
            namespace,
            name,
            document,
        });
        Ok(())
    }

    /// Runs the engine over everything loaded.
    pub fn evaluate(self) -> Report {
        let outcomes = core::evaluate_all(&self.snapshot);
        Report {
            outcomes,
            objects: self.inputs,
            errors: self.errors,
        }
    }
}

/// Key of a computed status.
type StatusKey = (Kind, String, String);

impl Report {
    fn statuses(&self) -> BTreeMap<StatusKey, (Value, bool)> {
        let mut map = BTreeMap::new();
        for o in &self.outcomes {
            let ns = &o.namespace;
            for u in &o.images {
                let ready = ready_of(&u.status.conditions);
                map.insert(
                    (Kind::PrivateImage, ns.clone(), u.name.to_string()),
                    (to_value(&u.status), ready),
                );
            }
            for u in &o.shares {
                let ready = ready_of(&u.status.conditions);
                map.insert(
                    (Kind::ImageShare, ns.clone(), u.name.to_string()),
                    (to_value(&u.status), ready),
                );
            }
            for u in &o.acceptances {
                let ready = ready_of(&u.status.conditions);
                map.insert(
                    (Kind::ShareAcceptance, ns.clone(), u.name.to_string()),
                    (to_value(&u.status), ready),
                );
            }
        }
        map
    }

    /// Number of objects whose Ready condition is not True.
    pub fn not_ready(&self) -> usize {
        self.statuses().values().filter(|(_, ready)| !ready).count()
    }

    /// Every input object of the three kinds, in input order, with the status it would get;
    /// then the ImageOffers and ImageQuotas the operator would keep.
    pub fn yaml(&self) -> String {
        let statuses = self.statuses();
        let docs: Vec<Value> = self
            .objects
            .iter()
            .map(|input| {
                let mut doc = input.document.clone();
                if let Some((status, _)) = statuses.get(&(input.kind, input.namespace.clone(), input.name.clone())) {
                    doc["status"] = status.clone();
                }
                doc
            })
            .chain(self.offers())
            .chain(self.quotas())
            .collect();
        crate::yaml::stream(&docs)
    }

    /// The ImageOffers the operator would keep, by recipient namespace and owner.
    fn offers(&self) -> impl Iterator<Item = Value> + '_ {
        self.outcomes.iter().flat_map(|o| {
            o.offers
                .iter()
                .map(|u| to_value(&api::ImageOffer::of(&o.namespace, &u.name, u.status.clone())))
        })
    }

    /// The ImageQuotas the operator would keep, by namespace, after the input objects.
    fn quotas(&self) -> impl Iterator<Item = Value> + '_ {
        self.outcomes.iter().filter_map(|o| match &o.quota {
            core::QuotaUpdate::Apply { status, .. } => {
                Some(to_value(&api::ImageQuota::of(&o.namespace, status.clone())))
            }
            core::QuotaUpdate::Unchanged | core::QuotaUpdate::Delete => None,
        })
    }

    /// A human-readable summary.
    pub fn table(&self) -> String {
        table::render(&self.outcomes)
    }
}

fn ready_of(conditions: &[crate::api::Condition]) -> bool {
    api::ready_condition(conditions).is_some_and(|c| c.status == "True")
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("statuses serialize to JSON")
}
