//! `kubectl ims` end to end: the built `kubectl-ims` binary, run as tenants (users the admin's
//! kubeconfig impersonates, holding the stock roles into which the chart aggregates its tenant
//! roles) against the API server, with the operator running in-process. The owner shares, the
//! recipient lists its inbox, accepts (and gains access), rejects (and loses it), decides on all
//! images, and the owner reads its usage; an unknown owner or image, a tenant without rights, a
//! field another writer set and a selector are answered with their exit codes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use ims_operator::{
    api::{ImageOffer, ImageOfferStatus, ImageQuota, ImageShare, PrivateImage, ShareAcceptance, ShareState},
    config::Config,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::{Value, json};

use crate::{
    support::{Env, KUBECONFIG_ENV, TIMEOUT, TempDir, acceptance, api, env, image, share},
    trust::skip_without_aggregation,
};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ims");
/// Holds the stock `edit` role in the owner's namespace.
const OWNER_USER: &str = "olga";
/// Holds the stock `edit` role in the recipient's namespace.
const RECIPIENT_USER: &str = "rita";
/// Holds the stock `view` role in the recipient's namespace.
const VIEWER: &str = "victor";
/// Holds no role anywhere.
const STRANGER: &str = "mallory";

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(self, code: i32, what: &str) -> Self {
        assert_eq!(
            self.code, code,
            "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The table rows (header excluded), each split into its cells.
    fn rows(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }
}

/// Runs `kubectl-ims --kubeconfig KUBECONFIG ARGS...` on the blocking pool, so that the
/// operator on this test's runtime keeps working meanwhile (the commands may wait for it).
async fn ims(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG");
    let shown = format!("kubectl ims {}", args.join(" "));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the kubectl-ims binary runs");
    let run = Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("e2e: {shown} → {} in {:.1?}", run.code, started.elapsed());
    run
}

/// Runs a command until it exits with `code`: for a user's first command, while the API
/// server's RBAC cache catches up with the RoleBinding just made.
async fn ims_until(env: &Env, kubeconfig: &Path, args: &[&str], code: i32) -> Run {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let run = ims(kubeconfig, args).await;
        if run.code == code {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for `kubectl ims {}` in {} to exit {code}: {run:?}",
            args.join(" "),
            env.prefix
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The admin's kubeconfig (IMS_E2E_KUBECONFIG).
fn admin_kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os(KUBECONFIG_ENV).expect("set, since env() returned an Env"))
}

/// A kubeconfig that acts as `user` (the admin's credentials impersonating the user, with the
/// group every authenticated user has, like `kubectl --as USER --as-group system:authenticated`)
/// and whose contexts default to `namespace`. Written owner-only: it holds the admin's key.
fn user_kubeconfig(dir: &TempDir, user: &str, namespace: &str) -> PathBuf {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let text = std::fs::read_to_string(admin_kubeconfig()).expect("the admin kubeconfig");
    let mut config: Value = ims_operator::yaml::from_str(&text).expect("the admin kubeconfig is YAML");
    for entry in config["users"].as_array_mut().expect("users") {
        entry["user"]["as"] = user.into();
        entry["user"]["as-groups"] = json!(["system:authenticated"]);
    }
    for entry in config["contexts"].as_array_mut().expect("contexts") {
        entry["context"]["namespace"] = namespace.into();
    }
    let path = dir.0.join(format!("{user}.kubeconfig"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create the kubeconfig file");
    file.write_all(ims_operator::yaml::to_string(&config).as_bytes())
        .expect("write the kubeconfig");
    path
}

fn offered(s: &ImageOfferStatus, image: &str) -> Option<(ShareState, Option<String>)> {
    s.images
        .iter()
        .find(|i| &*i.name == image)
        .map(|i| (i.state, i.decided_by.as_deref().map(String::from)))
}

/// Waits until the ImageOffer of `owner` in `recipient` shows `image` in `state`, decided by
/// `by`.
async fn wait_offered(env: &Env, recipient: &str, owner: &str, image: &str, state: ShareState, by: Option<&str>) {
    let (image_name, by) = (image.to_string(), by.map(str::to_string));
    let what = format!("{image} {state} decided by {by:?}");
    env.wait_for::<ImageOffer, _>(recipient, owner, &what, move |o| {
        o.status
            .as_ref()
            .is_some_and(|s| offered(s, &image_name) == Some((state, by.clone())))
    })
    .await;
}

async fn acceptances(env: &Env, ns: &str) -> Vec<(String, String, Vec<String>, String)> {
    let list = api::<ShareAcceptance>(env, ns)
        .list(&ListParams::default())
        .await
        .expect("list ShareAcceptances");
    list.items
        .into_iter()
        .map(|a| {
            (
                a.name_any(),
                a.spec.owner.clone(),
                a.spec.images.clone(),
                a.spec.decision.as_str().to_string(),
            )
        })
        .collect()
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_a_recipient_decides_from_the_command_line() {
    let Some(env) = env("plugin").await else { return };
    let Some(mut env) = skip_without_aggregation(env, "kubectl ims").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.bind_cluster_role(&a, "edit", OWNER_USER).await;
    env.bind_cluster_role(&b, "edit", RECIPIENT_USER).await;
    let dir = TempDir::new("ims-e2e-plugin");
    let owner = user_kubeconfig(&dir, OWNER_USER, &a);
    // The recipient's commands rely on the context's namespace: no -n.
    let recipient = user_kubeconfig(&dir, RECIPIENT_USER, &b);
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    env.apply(image(&a, "db")).await;

    // The owner shares both images with the recipient.
    let run = ims_until(&env, &owner, &["share", "web", "db", "--to", &b, "-n", &a], 0).await;
    assert!(
        run.stdout.starts_with(&format!(
            "imageshare/share-web applied in namespace {a}: web, db to {b}\n"
        )),
        "{run:?}"
    );
    let shared = api::<ImageShare>(&env, &a)
        .get("share-web")
        .await
        .expect("the ImageShare");
    assert_eq!(
        (shared.spec.images.clone(), shared.spec.recipients.clone()),
        (strings(&["web", "db"]), vec![b.clone()])
    );
    let managers: Vec<&str> = shared
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert!(
        managers.contains(&"kubectl-ims"),
        "written by the plugin's field manager: {managers:?}"
    );
    wait_offered(&env, &b, &a, "db", ShareState::Pending, None).await;
    wait_offered(&env, &b, &a, "web", ShareState::Pending, None).await;

    // The recipient's inbox.
    let run = ims_until(&env, &recipient, &["offers"], 0).await;
    eprintln!("e2e: kubectl ims offers:\n{}", run.stdout);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["OWNER", "IMAGE", "STATE", "DECIDED-BY", "TYPE", "OS", "DISK", "EXPIRES"],
        "{run:?}"
    );
    assert_eq!(
        run.rows(),
        [
            strings(&[&a, "db", "Pending", "-", "SystemDisk", "Linux", "40Gi", "never"]),
            strings(&[&a, "web", "Pending", "-", "SystemDisk", "Linux", "40Gi", "never"]),
        ],
        "{run:?}"
    );
    let run = ims(&recipient, &["offers", "-o", "json"])
        .await
        .expect(0, "offers -o json");
    let listed: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(listed["kind"], "List");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["items"][0]["kind"], "ImageOffer");
    assert_eq!(listed["items"][0]["spec"]["owner"], json!(a));
    assert!(listed["items"][0]["metadata"].get("managedFields").is_none());

    // Accept one image: it becomes Accepted and the recipient may read it.
    assert!(!env.can_get_image(&a, "web", &b).await);
    let started = Instant::now();
    let run = ims(&recipient, &["accept", &a, "web", "--wait", "30"])
        .await
        .expect(0, "accept");
    assert_eq!(
        run.stdout,
        format!(
            "shareacceptance/{a}-web applied in namespace {b}: Accept image web of {a}\n\
             IMAGE  STATE     DECIDED-BY\n\
             web    Accepted  {a}-web\n"
        ),
        "{run:?}"
    );
    let web_acceptance = format!("{a}-web");
    wait_offered(&env, &b, &a, "web", ShareState::Accepted, Some(&web_acceptance)).await;
    env.eventually("the recipient may get the accepted image", || async {
        env.can_get_image(&a, "web", &b).await
    })
    .await;
    eprintln!("e2e: accept → can-i get yes after {:.1?}", started.elapsed());
    let run = ims(&recipient, &["offers"]).await.expect(0, "offers after accept");
    assert_eq!(
        run.rows()[1],
        strings(&[
            &a,
            "web",
            "Accepted",
            &web_acceptance,
            "SystemDisk",
            "Linux",
            "40Gi",
            "never"
        ]),
        "{run:?}"
    );

    // Reject it: the same ShareAcceptance, its decision replaced; access ends.
    let run = ims(&recipient, &["reject", &a, "web", "--wait", "30"])
        .await
        .expect(0, "reject");
    assert!(
        run.stdout.contains(&format!(": Reject image web of {a}\n"))
            && run.stdout.contains(&format!("web    Rejected  {web_acceptance}\n")),
        "{run:?}"
    );
    wait_offered(&env, &b, &a, "web", ShareState::Rejected, Some(&web_acceptance)).await;
    env.eventually("the recipient may no longer get the rejected image", || async {
        !env.can_get_image(&a, "web", &b).await
    })
    .await;
    assert_eq!(
        acceptances(&env, &b).await,
        [(web_acceptance.clone(), a.clone(), strings(&["web"]), "Reject".into())]
    );

    // Accept all, then reject all: one more object, named after the owner; the named decision
    // on web still beats it.
    ims(&recipient, &["accept", &a]).await.expect(0, "accept all");
    let run = ims(&recipient, &["reject", &a, "-o", "yaml", "--wait", "30"])
        .await
        .expect(0, "reject all");
    let applied: Value = ims_operator::yaml::from_str(&run.stdout).expect("YAML");
    assert_eq!(applied["kind"], "ShareAcceptance");
    assert_eq!(applied["spec"]["decision"], "Reject");
    assert_eq!(
        acceptances(&env, &b).await,
        [
            (a.clone(), a.clone(), Vec::new(), "Reject".into()),
            (web_acceptance.clone(), a.clone(), strings(&["web"]), "Reject".into()),
        ]
    );
    wait_offered(&env, &b, &a, "db", ShareState::Rejected, Some(&a)).await;
    wait_offered(&env, &b, &a, "web", ShareState::Rejected, Some(&web_acceptance)).await;

    // The owner's usage, once the operator has counted both rejections.
    for name in ["web", "db"] {
        env.wait_for::<PrivateImage, _>(&a, name, "one recipient, Rejected", |i| {
            i.status.as_ref().is_some_and(|s| s.recipients.rejected == 1)
        })
        .await;
    }
    env.wait_for::<ImageQuota, _>(&a, "ims", "2 private, 2 shared images", |q| {
        q.status
            .as_ref()
            .is_some_and(|s| (s.used.private_images, s.used.shared_images) == (2, 2))
    })
    .await;
    let run = ims(&owner, &["usage", "-n", &a]).await.expect(0, "usage");
    eprintln!("e2e: kubectl ims usage:\n{}", run.stdout);
    let lines: Vec<Vec<&str>> = run.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["PRIVATE", "SHARED", "RECIPIENTS-PER-IMAGE"], "{run:?}");
    assert_eq!(lines[1], ["2/10", "2/30", "128"], "{run:?}");
    assert!(lines[2].is_empty(), "{run:?}");
    assert_eq!(
        lines[3],
        [
            "IMAGE",
            "READY",
            "REASON",
            "RECIPIENTS",
            "PENDING",
            "ACCEPTED",
            "REJECTED",
            "REMOVED"
        ]
    );
    assert_eq!(
        lines[4],
        ["db", "True", "Available", "1/128", "0", "0", "1", "0"],
        "{run:?}"
    );
    assert_eq!(
        lines[5],
        ["web", "True", "Available", "1/128", "0", "0", "1", "0"],
        "{run:?}"
    );
    let run = ims(&owner, &["usage", "-n", &a, "-o", "yaml"])
        .await
        .expect(0, "usage -o yaml");
    let listed: Value = ims_operator::yaml::from_str(&run.stdout).expect("YAML");
    let kinds: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ImageQuota", "PrivateImage", "PrivateImage"]);
    env.cleanup().await;
}

/// Whether the cluster's ImageShare CRD has spec.recipientSelector (the plugin writes it
/// either way; the API server refuses it where the CRD lacks it).
async fn crd_has_recipient_selector(env: &Env) -> bool {
    let crd = Api::<CustomResourceDefinition>::all(env.client.clone())
        .get("imageshares.ims.imageshare.io")
        .await
        .expect("the ImageShare CRD");
    let crd = serde_json::to_value(crd).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| !v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["recipientSelector"].is_null())
}

#[tokio::test]
async fn b_mistakes_and_refusals_exit_with_their_codes() {
    let Some(env) = env("pluginerrors").await else { return };
    let Some(mut env) = skip_without_aggregation(env, "kubectl ims errors").await else {
        return;
    };
    let a = env.create_namespace("a", json!({}), json!({})).await;
    let b = env.create_namespace("b", json!({}), json!({})).await;
    env.bind_cluster_role(&b, "edit", RECIPIENT_USER).await;
    env.bind_cluster_role(&b, "view", VIEWER).await;
    let dir = TempDir::new("ims-e2e-plugin-errors");
    let recipient = user_kubeconfig(&dir, RECIPIENT_USER, &b);
    let viewer = user_kubeconfig(&dir, VIEWER, &b);
    let stranger = user_kubeconfig(&dir, STRANGER, &b);
    let admin = admin_kubeconfig();
    env.start_operator(Config::default()).await;
    env.apply(image(&a, "web")).await;
    env.apply(share(&a, "s", &["web"], &[&b])).await;
    wait_offered(&env, &b, &a, "web", ShareState::Pending, None).await;

    // An owner that offers nothing, and an image the owner does not offer: exit 1, nothing
    // written.
    let ghost = env.ns("ghost");
    let run = ims_until(&env, &recipient, &["accept", &ghost], 1).await;
    assert_eq!(
        run.stderr,
        format!("error: {ghost} offers nothing to namespace {b}\n"),
        "{run:?}"
    );
    let run = ims(&recipient, &["accept", &a, "web", "nope"])
        .await
        .expect(1, "an image not offered");
    assert_eq!(run.stderr, format!("error: no image nope offered by {a}\n"), "{run:?}");
    assert!(acceptances(&env, &b).await.is_empty(), "nothing applied");

    // No rights at all: exit 3, naming the request refused.
    let run = ims(&stranger, &["offers"])
        .await
        .expect(3, "a stranger lists the inbox");
    eprintln!("e2e: {}", run.stderr.trim_end());
    assert!(
        run.stderr.starts_with(&format!(
            "error: permission denied: the API server does not let you list imageoffers.ims.imageshare.io in namespace \"{b}\": "
        )) && run.stderr.contains(STRANGER),
        "{run:?}"
    );
    let run = ims(&stranger, &["accept", &a, "web"])
        .await
        .expect(3, "a stranger accepts");
    assert!(
        run.stderr.contains(&format!(
            "does not let you get imageoffers.ims.imageshare.io \"{a}\" in namespace \"{b}\""
        )),
        "{run:?}"
    );
    // A viewer reads the inbox but may not decide: the write is what is refused.
    let run = ims_until(&env, &viewer, &["accept", &a, "web"], 3).await;
    assert!(
        run.stderr.contains(&format!(
            "does not let you apply shareacceptances.ims.imageshare.io \"{a}-web\" in namespace \"{b}\""
        )),
        "{run:?}"
    );
    ims(&viewer, &["offers"]).await.expect(0, "a viewer reads the inbox");
    // A tenant of one namespace may not list every namespace's inbox; the admin may.
    let run = ims(&recipient, &["offers", "-A"])
        .await
        .expect(3, "a tenant lists all inboxes");
    assert!(
        run.stderr
            .contains("does not let you list imageoffers.ims.imageshare.io in all namespaces"),
        "{run:?}"
    );
    let run = ims(&admin, &["offers", "-A"])
        .await
        .expect(0, "the admin lists all inboxes");
    assert!(run.stdout.starts_with("NAMESPACE  "), "{run:?}");
    assert!(
        run.rows().contains(&strings(&[
            &b,
            &a,
            "web",
            "Pending",
            "-",
            "SystemDisk",
            "Linux",
            "40Gi",
            "never"
        ])),
        "{run:?}"
    );

    // A decision another writer set is not taken over: exit 4, the conflict explained.
    env.apply(acceptance(&b, &format!("{a}-web"), &a, &["web"], "Reject"))
        .await;
    let run = ims(&recipient, &["accept", &a, "web"]).await.expect(4, "a conflict");
    eprintln!("e2e: {}", run.stderr.trim_end());
    assert!(
        run.stderr.contains(&format!(
            "could not apply shareacceptances.ims.imageshare.io \"{a}-web\" in namespace \"{b}\""
        )) && run.stderr.contains(".spec.decision")
            && run
                .stderr
                .contains("kubectl ims does not take over fields that another writer set"),
        "{run:?}"
    );
    assert_eq!(
        acceptances(&env, &b).await,
        [(format!("{a}-web"), a.clone(), strings(&["web"]), "Reject".into())],
        "unchanged"
    );

    // A recipient selector alone (no --to): stored where the CRD has the field, and the
    // matching namespace is offered the image; refused (not dropped) where the CRD lacks it.
    let c = env
        .create_namespace("c", json!({"team": "x", "tier": "a"}), json!({}))
        .await;
    let args = [
        "share",
        "web",
        "--selector",
        "team=x,tier in (a,b),!legacy",
        "--name",
        "by-label",
        "-n",
        &a,
    ];
    let shares = api::<ImageShare>(&env, &a);
    if crd_has_recipient_selector(&env).await {
        ims(&admin, &args).await.expect(0, "share with a selector");
        let stored = serde_json::to_value(shares.get("by-label").await.expect("the ImageShare")).unwrap();
        assert_eq!(
            stored["spec"]["recipientSelector"],
            json!({"matchLabels": {"team": "x"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"}]})
        );
        wait_offered(&env, &c, &a, "web", ShareState::Pending, None).await;
    } else {
        let run = ims(&admin, &args)
            .await
            .expect(4, "share with a selector the CRD lacks");
        eprintln!("e2e: {}", run.stderr.trim_end());
        assert!(run.stderr.contains("has no spec.recipientSelector yet"), "{run:?}");
        assert!(shares.get_opt("by-label").await.unwrap().is_none(), "nothing stored");
    }
    env.cleanup().await;
}
