//! `kubectl ims` as a user runs it, without a cluster: its help, and the exit codes of bad
//! usage (2), of bad values it refuses before contacting any API server (1), of an unreadable
//! kubeconfig (1) and of an API server that can not be reached (4). tests/e2e/plugin.rs runs it
//! against a real API server.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ims");

/// Runs the plugin with a KUBECONFIG that does not exist, so that nothing here can reach a
/// cluster of the machine by accident.
fn ims(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubectl-ims-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_lists_the_commands_with_examples() {
    let out = ims(&["--help"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for expected in [
        "Usage: kubectl ims [OPTIONS] <COMMAND>",
        "offers",
        "accept",
        "reject",
        "remove",
        "share",
        "usage",
        "--namespace",
        "--context",
        "--kubeconfig",
        "--output",
        "Examples:",
        "kubectl ims accept tenant-a centos-web -n tenant-b",
        "Exit codes:",
    ] {
        assert!(help.contains(expected), "{expected:?} missing from:\n{help}");
    }
    for (command, example) in [
        ("offers", "kubectl ims offers -A"),
        ("accept", "OWNER-IMAGE"),
        ("reject", "kubectl ims reject tenant-a pg-data -n tenant-b"),
        ("remove", "kubectl ims remove tenant-a centos-web -n tenant-b"),
        ("share", "--selector 'team=a,tier in (x,y),!legacy'"),
        ("usage", "kubectl ims usage -n tenant-a"),
    ] {
        let out = ims(&[command, "--help"]);
        assert_eq!(code(&out), 0);
        let help = text(&out.stdout);
        assert!(help.contains(example), "{command} --help lacks {example:?}:\n{help}");
        assert!(
            help.contains("Global options:"),
            "{command} --help lacks the global flags:\n{help}"
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["share", "web"][..],
        &["frobnicate"],
        &["accept"],
        &["offers", "-o", "xml"],
        &["share", "web", "--to", "b", "--wait", "soon"],
    ] {
        let out = ims(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("try '--help'"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = ims(&["share", "web"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Usage: kubectl ims share <--to <NAMESPACE>...|--selector <SELECTOR>> <IMAGE>..."),
        "{stderr}"
    );
}

#[test]
fn bad_values_exit_1_before_any_request() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["share", "web", "--selector", "team=a,tier in (x"],
            "error: bad selector \"team=a,tier in (x\": missing ')' after the values of 'tier in'",
        ),
        (&["share", "web", "--selector", ""], "would select every namespace"),
        (&["share", "web", "--selector", "replicas>2"], "in/notin"),
        (
            &["share", "web", "--to", "b", "--expires-at", "next year"],
            "--expires-at \"next year\" is not an RFC 3339 time",
        ),
        (&["share", "Web", "--to", "b"], "\"Web\" is not a PrivateImage name"),
        (&["accept", "Tenant_A", "web"], "\"Tenant_A\" is not a namespace name"),
    ];
    for (args, message) in cases {
        let out = ims(args);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {message:?} not in {stderr}");
        assert!(
            !stderr.contains("kubeconfig"),
            "refused before reading a kubeconfig: {stderr}"
        );
    }
}

#[test]
fn an_unreadable_kubeconfig_exits_1() {
    let out = ims(&["offers"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--kubeconfig or set KUBECONFIG"),
        "{}",
        text(&out.stderr)
    );
    let out = ims(&["--kubeconfig", "/nonexistent/config", "usage"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("can not read the kubeconfig /nonexistent/config"),
        "{}",
        text(&out.stderr)
    );
}

fn write_kubeconfig(dir: &Path, server: &str) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: not-a-token}}
contexts:
- name: gone
  context: {{cluster: gone, user: u, namespace: tenant-b}}
- name: other
  context: {{cluster: gone, user: u}}
current-context: gone
"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn an_unreachable_api_server_exits_4_and_names_the_request() {
    let dir = scratch("unreachable");
    // Nothing listens on port 1 of the loopback address: the connection is refused at once.
    let kubeconfig = write_kubeconfig(&dir, "https://127.0.0.1:1");
    let out = ims(&["--kubeconfig", &kubeconfig, "offers"]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 4, "{stderr}");
    // The namespace comes from the context.
    assert!(
        stderr.contains("could not list imageoffers.ims.imageshare.io in namespace \"tenant-b\"")
            && stderr.contains("https://127.0.0.1:1"),
        "{stderr}"
    );
    let out = ims(&[
        "--kubeconfig",
        &kubeconfig,
        "--context",
        "other",
        "accept",
        "tenant-a",
        "web",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 4, "{stderr}");
    // Without a namespace in the context: "default".
    assert!(
        stderr.contains("could not get imageoffers.ims.imageshare.io \"tenant-a\" in namespace \"default\""),
        "{stderr}"
    );
    let out = ims(&["--kubeconfig", &kubeconfig, "--context", "missing", "usage"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("missing"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

/// Through kubectl itself, where it is installed: the binary on PATH is found as a plugin.
#[test]
fn kubectl_finds_the_plugin_on_path() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("skipping: kubectl is not on PATH");
        return;
    }
    let dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let listed = Command::new("kubectl")
        .args(["plugin", "list", "--name-only"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        text(&listed.stdout).lines().any(|l| l.trim() == "kubectl-ims"),
        "{}",
        text(&listed.stdout)
    );
    let out = Command::new("kubectl")
        .args(["ims", "--help"])
        .env("PATH", &path)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Usage: kubectl ims"));
    let out = Command::new("kubectl")
        .args(["ims", "share", "web", "--selector", "a in ("])
        .env("PATH", &path)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert_eq!(
        code(&out),
        1,
        "kubectl passes the plugin's exit code on: {}",
        text(&out.stderr)
    );
}
