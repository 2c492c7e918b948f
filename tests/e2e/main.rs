//! End-to-end tests against a real API server with the CRDs applied.
//!
//! They run only when `IMS_E2E_KUBECONFIG` names a kubeconfig (cluster-admin): otherwise each
//! test prints a notice and passes without touching anything. Each test starts the operator
//! in-process, works in namespaces of its own (`ims-e2e-…`), waits on conditions with
//! timeouts and deletes its namespaces at the end. Tests run one at a time (the operator
//! watches the whole cluster, so two instances would both act on every test).
//!
//!     kubectl apply -f crds/
//!     IMS_E2E_KUBECONFIG=$HOME/.kube/config cargo test --test e2e -- --test-threads=1

mod scenarios;
mod support;
