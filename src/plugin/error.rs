//! The failures of `kubectl ims` and their exit codes (README.md, "kubectl ims"): 1 for what
//! the user named or wrote wrong, 2 for bad usage (clap's own), 3 when the API server refused
//! a request (HTTP 403), 4 for any other API error or when the API server can not be reached.

use std::fmt;

/// Exit code of a user error: an owner, image or selector that is not there or not valid.
pub const EXIT_USER: u8 = 1;
/// Exit code of a usage error; clap exits with it on its own.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the API server refused a request (HTTP 403).
pub const EXIT_FORBIDDEN: u8 = 3;
/// Exit code of any other API error, or of an API server that can not be reached.
pub const EXIT_API: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Something the user named does not exist or is not valid.
    #[error("{0}")]
    User(String),
    /// The API server refused the request (HTTP 403).
    #[error("permission denied: the API server does not let you {request}: {message}")]
    Forbidden { request: String, message: String },
    /// Any other API error, or the API server could not be reached.
    #[error("{0}")]
    Api(String),
}

impl PluginError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PluginError::User(_) => EXIT_USER,
            PluginError::Forbidden { .. } => EXIT_FORBIDDEN,
            PluginError::Api(_) => EXIT_API,
        }
    }
}

/// One API request, described for the messages of its failures:
/// `get imageoffers.ims.imageshare.io "tenant-a" in namespace "tenant-b"`.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub verb: &'static str,
    /// `plural.group` of the resource.
    pub resource: String,
    /// None: all namespaces.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(name) = self.name {
            write!(f, " {name:?}")?;
        }
        match self.namespace {
            Some(ns) => write!(f, " in namespace {ns:?}"),
            None => write!(f, " in all namespaces"),
        }
    }
}

/// Whether a 404 says that the named object does not exist, rather than that the API server
/// does not serve the resource at all (CRDs not installed): only the former names the object.
pub fn is_missing_object(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.details.as_ref().is_some_and(|d| !d.name.is_empty()))
}

/// Translates a failed request into what the user is told, and how the process exits.
pub fn from_kube(e: kube::Error, request: &Request<'_>, server: &str) -> PluginError {
    let status = match e {
        kube::Error::Api(status) => status,
        other => {
            return PluginError::Api(format!(
                "could not {request}: the API server at {server} did not answer: {}",
                chain(&other)
            ));
        }
    };
    let message = &status.message;
    match status.code {
        403 => PluginError::Forbidden {
            request: request.to_string(),
            message: message.clone(),
        },
        401 => PluginError::Api(format!(
            "could not {request}: the API server at {server} did not accept the kubeconfig's credentials (401 Unauthorized): {message}"
        )),
        404 => PluginError::Api(format!(
            "could not {request}: the API server at {server} does not serve {}; are the ims-operator CRDs installed? ({message})",
            request.resource
        )),
        // A server-side apply that would take over fields another writer set (force=false).
        409 if request.verb == "apply" => PluginError::Api(format!(
            "could not {request}: {message}\nkubectl ims does not take over fields that another writer set: change them with the tool that set them, or delete the object"
        )),
        // The API server's validation refused what the user asked for (a bad name, a date).
        422 => PluginError::User(format!("the API server refused to {request}: {message}")),
        // A field the CRD does not declare: strict validation refuses it (400), or, for a
        // server-side apply, building the typed patch fails first (500).
        _ if lacks_recipient_selector(message) => PluginError::Api(format!(
            "could not {request}: this cluster's ImageShare CRD has no spec.recipientSelector yet; install the CRDs of an ims-operator that has it, or name the recipients with --to ({message})"
        )),
        code => PluginError::Api(format!(
            "could not {request}: {message} (HTTP {code}{}{})",
            if status.reason.is_empty() { "" } else { " " },
            status.reason
        )),
    }
}

fn lacks_recipient_selector(message: &str) -> bool {
    message.contains("unknown field \"spec.recipientSelector\"")
        || message.contains(".spec.recipientSelector: field not declared in schema")
}

/// An error and its causes on one line, as `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // Wrappers often repeat their cause in their own message.
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use serde_json::json;

    /// A Status as the API server sends it (StatusDetails has no constructor of its own).
    fn api_error(code: u16, reason: &str, message: &str, name: &str) -> kube::Error {
        let status: Status = serde_json::from_value(json!({
            "status": "Failure", "code": code, "reason": reason, "message": message,
            "details": {"name": name},
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    fn get_offer() -> Request<'static> {
        Request {
            verb: "get",
            resource: "imageoffers.ims.imageshare.io".into(),
            namespace: Some("tenant-b"),
            name: Some("tenant-a"),
        }
    }

    #[test]
    fn each_failure_has_its_exit_code_and_names_the_request() {
        let forbidden = from_kube(
            api_error(
                403,
                "Forbidden",
                "User \"bob\" cannot get resource \"imageoffers\"",
                "tenant-a",
            ),
            &get_offer(),
            "https://k",
        );
        assert_eq!(forbidden.exit_code(), EXIT_FORBIDDEN);
        assert_eq!(
            forbidden.to_string(),
            "permission denied: the API server does not let you get imageoffers.ims.imageshare.io \"tenant-a\" in namespace \"tenant-b\": User \"bob\" cannot get resource \"imageoffers\""
        );
        let invalid = from_kube(
            api_error(422, "Invalid", "spec.images[0]: Invalid value", ""),
            &get_offer(),
            "https://k",
        );
        assert_eq!(invalid.exit_code(), EXIT_USER);
        let no_crd = from_kube(
            api_error(404, "NotFound", "the server could not find the requested resource", ""),
            &get_offer(),
            "https://k",
        );
        assert_eq!(no_crd.exit_code(), EXIT_API);
        assert!(no_crd.to_string().contains("CRDs installed"), "{no_crd}");
        for message in [
            "failed to create typed patch object (a/s; ims.imageshare.io/v1alpha1, Kind=ImageShare): .spec.recipientSelector: field not declared in schema",
            "strict decoding error: unknown field \"spec.recipientSelector\"",
        ] {
            let old_crd = from_kube(api_error(500, "", message, ""), &get_offer(), "https://k");
            assert!(
                old_crd.to_string().contains("has no spec.recipientSelector yet"),
                "{old_crd}"
            );
            assert_eq!(old_crd.exit_code(), EXIT_API);
        }
        let all = Request {
            verb: "list",
            namespace: None,
            name: None,
            ..get_offer()
        };
        assert_eq!(all.to_string(), "list imageoffers.ims.imageshare.io in all namespaces");
    }

    #[test]
    fn a_missing_object_is_told_from_a_missing_resource() {
        assert!(is_missing_object(&api_error(404, "NotFound", "not found", "tenant-a")));
        assert!(!is_missing_object(&api_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
            ""
        )));
        assert!(!is_missing_object(&api_error(403, "Forbidden", "no", "tenant-a")));
    }
}
