//! End-to-end tests against a real API server with the CRDs applied.
//!
//! They run only when `IMS_E2E_KUBECONFIG` names a kubeconfig (cluster-admin): otherwise each
//! test prints a notice and passes without touching anything. Once per test process the chart
//! is rendered (`helm template`, so `helm` must be on PATH) and everything but its workload is
//! applied into `ims-e2e-system`: the CRDs, the ServiceAccount, the ClusterRoles (the
//! operator's and the tenant roles aggregated into view/edit/admin), the leader-election Role
//! and the admission policies. The operator then runs under that ServiceAccount (a
//! TokenRequest token), never as cluster-admin: in-process, or as `ims-operator run` child
//! processes for leader election. Tenants are impersonated users holding stock roles.
//!
//! Each test works in namespaces of its own (`ims-e2e-…`), waits on conditions with timeouts
//! and deletes its namespaces at the end (also when it fails). Tests run one at a time (the
//! operator watches the whole cluster, so two instances would both act on every test).
//!
//!     IMS_E2E_KUBECONFIG=$HOME/.kube/config cargo test --test e2e -- --test-threads=1
//!
//! Optional settings:
//!
//! - `IMS_E2E_RESTART_APISERVER`: a shell command (run with `sh -c`) that stops the API server,
//!   keeps it down for the number of seconds given as its argument, starts it again with the
//!   same state (etcd keeps running) and returns once it is ready. Only with it does the
//!   restart test run (an outage beyond the lease's renew deadline, and a short one, under a
//!   leader-elected operator); otherwise that test prints a notice and passes. Outages of 15
//!   and 3 seconds are asked for.
//! - `IMS_E2E_TENANTS`: how many tenants the tenant-deletion test makes and deletes, once
//!   with the operator running and once without (default 20).

mod inbox;
mod plugin;
mod quota;
mod scenarios;
mod selectors;
mod support;
mod trust;
