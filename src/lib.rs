//! ims-operator: private-image sharing between Kubernetes tenants (see README.md and docs/security.md).

pub mod api;
pub mod cli;
pub mod columns;
pub mod config;
pub mod controller;
pub mod core;
pub mod crdgen;
pub mod plugin;
pub mod simulate;
pub mod yaml;
