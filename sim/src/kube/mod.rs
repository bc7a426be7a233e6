//! A Kubernetes API server, as far as kube-rs and kubectl need one: the
//! REST API over HTTP ([`api`]), objects stored as JSON with their
//! resourceVersions ([`state`]), the verbs ([`cluster`]), watches
//! ([`watch`]), admission webhooks ([`webhooks`]) and the workload
//! controller ([`controller`]).
//!
//! Nothing here knows Istio. What runs behind a cluster's Services (the
//! programs its admission webhooks call, what its pods' readiness follows)
//! is plugged in through [`webhooks::Programs`].

pub mod admission;
pub mod api;
pub mod apply;
pub mod cluster;
pub mod controller;
pub mod object;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod state;
pub mod status;
pub mod table;
pub mod validate;
pub mod watch;
pub mod webhooks;
pub mod written;
