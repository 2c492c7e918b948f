//! Command-line interface of the `ims-operator` binary.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// Private-image sharing between Kubernetes tenants: PrivateImages, ImageShares and
/// ShareAcceptances (the IMS image-sharing model).
#[derive(Parser, Debug)]
#[command(name = "ims-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as a YAML stream.
    Crd,
    /// Evaluate manifests offline with the controller's decision code and print the result.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Configuration file (region, limits, grantSubjects, kubevirt).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Region of namespaces without the ims.imageshare.io/region label; overrides the file.
    #[arg(long)]
    pub region: Option<String>,
    /// Take a coordination.k8s.io Lease so that only one replica writes.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ims-operator")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Address of the /livez, /readyz and /metrics endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log line format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Watch PersistentVolumeClaims and KubeVirt VirtualMachines and grant CDI clone rights for
    /// volume sources (also on with `kubevirt: true` in the config file). Without it, volume and
    /// server sources are SourceUnsupported.
    #[arg(long)]
    pub kubevirt: bool,
    /// Most tenant namespaces reconciled at the same time.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Changes to one namespace within this many milliseconds are reconciled once.
    #[arg(long, value_name = "MILLIS", default_value_t = 200)]
    pub debounce_ms: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Manifest files or folders (read recursively, in name order).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Configuration file (region, limits, grantSubjects, kubevirt), as the Helm chart renders it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Region of namespaces without the region label; overrides the file.
    #[arg(long)]
    pub region: Option<String>,
    /// Judge volume and server sources as `run --kubevirt` does (also on with `kubevirt: true`
    /// in the config file); without it they are SourceUnsupported, as in the cluster.
    #[arg(long)]
    pub kubevirt: bool,
    /// The time that share expiry is judged against (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Exit with status 3 when any object is not Ready.
    #[arg(long)]
    pub fail_on_not_ready: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Yaml,
}
