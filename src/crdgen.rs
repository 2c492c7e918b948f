//! `ims-operator crd` and the files in `crds/`.

use kube::ResourceExt;

/// Each CRD as (file name in `crds/`, YAML document).
pub fn crd_files() -> Vec<(String, String)> {
    crate::api::crds()
        .into_iter()
        .map(|crd| {
            let yaml = crate::yaml::to_string(&crd);
            (format!("{}.yaml", crd.name_any()), yaml)
        })
        .collect()
}

/// All CRDs as one YAML stream, as `ims-operator crd` prints it.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect()
}
