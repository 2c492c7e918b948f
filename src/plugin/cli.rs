//! Command line of `kubectl ims` (README.md, "kubectl ims").

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # What other namespaces offer to this one, and in which state
  kubectl ims offers -n tenant-b

  # Accept one image of tenant-a, then reject every image tenant-a offers
  kubectl ims accept tenant-a centos-web -n tenant-b
  kubectl ims reject tenant-a -n tenant-b

  # Offer two images of tenant-a to tenant-b and tenant-c until the end of 2027
  kubectl ims share centos-web pg-data --to tenant-b,tenant-c --expires-at 2027-01-01T00:00:00Z -n tenant-a

  # Quota and recipients per image of tenant-a
  kubectl ims usage -n tenant-a

Exit codes: 0 ok, 1 unknown owner or image or invalid value, 2 bad usage, 3 permission denied,
4 other API error or API server unreachable.";

/// Private-image sharing between namespaces, as a recipient or an owner: see what other
/// namespaces offer to yours, accept, reject or remove it, share your own images and see how
/// much of your quota is used.
#[derive(Parser, Debug)]
#[command(name = "kubectl-ims", bin_name = "kubectl ims", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags kubectl users expect, accepted before or after the command.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The namespace to work in (default: the namespace of the kubeconfig context, else
    /// "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else the in-cluster
    /// service account).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: a table, or the objects read or applied as YAML or JSON.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List what other namespaces offer to this one (its ImageOffers): every image with its
    /// state, who decided it, its type, OS, disk size and when the offer ends.
    #[command(after_help = "\
Examples:
  kubectl ims offers -n tenant-b
  kubectl ims offers -A
  kubectl ims offers -n tenant-b -o yaml")]
    Offers(OffersArgs),
    /// Accept images an owner namespace offers: all of them, or the ones named.
    #[command(after_help = "\
Writes the ShareAcceptance OWNER (no IMAGE), OWNER-IMAGE (one) or OWNER-IMAGE1-IMAGE2-... (several,
sorted), so that a later reject or remove of the same images replaces this decision.

Examples:
  kubectl ims accept tenant-a -n tenant-b
  kubectl ims accept tenant-a centos-web pg-data -n tenant-b --wait 10")]
    Accept(DecideArgs),
    /// Reject images an owner namespace offers: all of them, or the ones named.
    #[command(after_help = "\
Writes the same ShareAcceptance as accept does for the same OWNER and IMAGEs, with the decision
Reject. A decision on a named image beats one on all images.

Examples:
  kubectl ims reject tenant-a -n tenant-b
  kubectl ims reject tenant-a pg-data -n tenant-b")]
    Reject(DecideArgs),
    /// Remove images after accepting them (access ends): all of them, or the ones named.
    #[command(after_help = "\
Writes the same ShareAcceptance as accept does for the same OWNER and IMAGEs, with the decision
Remove. To go back to Pending, delete that ShareAcceptance with kubectl delete shareacceptance.

Examples:
  kubectl ims remove tenant-a centos-web -n tenant-b")]
    Remove(DecideArgs),
    /// Offer images of this namespace to other namespaces (writes an ImageShare).
    #[command(after_help = "\
Writes the ImageShare NAME (default share-<first IMAGE>) by server-side apply: running it again
with the same name replaces the images, recipients, selector and expiry given before.

Examples:
  kubectl ims share centos-web --to tenant-b -n tenant-a
  kubectl ims share centos-web pg-data --to tenant-b,tenant-c --name base-images -n tenant-a
  kubectl ims share centos-web --selector 'team=a,tier in (x,y),!legacy' -n tenant-a
  kubectl ims share centos-web --to tenant-b --expires-at 2027-01-01T00:00:00Z -n tenant-a")]
    #[command(group(ArgGroup::new("recipients").required(true).multiple(true).args(["to", "selector"])))]
    Share(ShareArgs),
    /// Show this namespace's image quota (ImageQuota) and how many recipients each of its
    /// PrivateImages is offered to.
    #[command(after_help = "\
Examples:
  kubectl ims usage -n tenant-a")]
    Usage,
}

#[derive(Args, Debug)]
pub struct OffersArgs {
    /// List the offers of every namespace (needs the right to list ImageOffers cluster-wide).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The namespace that offers the images.
    pub owner: String,
    /// Images to decide on (names of the owner's PrivateImages); none: every image the owner
    /// offers, now and later.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Wait up to this many seconds for the operator to report the decision's effect.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Args, Debug)]
pub struct ShareArgs {
    /// PrivateImages of this namespace to offer (1-30).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Recipient namespaces (repeat the flag or separate them with commas).
    #[arg(long, value_name = "NAMESPACE", num_args = 1.., value_delimiter = ',')]
    pub to: Vec<String>,
    /// Offer to every namespace whose labels match, e.g. 'team=a,tier in (x,y),!legacy', besides
    /// any --to (spec.recipientSelector; needs a cluster whose ImageShare CRD has it).
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Name of the ImageShare (default: share-<first IMAGE>).
    #[arg(long)]
    pub name: Option<String>,
    /// When the offer ends (RFC 3339, e.g. 2027-01-01T00:00:00Z); afterwards nothing is offered.
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: Option<String>,
    /// Wait up to this many seconds for the operator to report what is offered.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from(["kubectl-ims", "-n", "b", "accept", "a", "web", "-o", "json"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("b"));
        assert_eq!(cli.global.output, Output::Json);
        let Command::Accept(args) = cli.command else {
            panic!("accept")
        };
        assert_eq!((args.owner.as_str(), args.images), ("a", vec!["web".to_string()]));
    }

    #[test]
    fn share_takes_recipients_as_a_list_and_needs_some() {
        let cli = Cli::try_parse_from(["kubectl-ims", "share", "web", "--to", "b,c", "--to", "d"]).unwrap();
        let Command::Share(args) = cli.command else {
            panic!("share")
        };
        assert_eq!(args.to, ["b", "c", "d"]);
        let e = Cli::try_parse_from(["kubectl-ims", "share", "web"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(Cli::try_parse_from(["kubectl-ims", "share", "web", "--selector", "team=a"]).is_ok());
    }
}
