//! Istio's behaviour, as a cluster running it shows it: what each
//! version's charts render ([`charts`]), and istiod, the program behind
//! its Services ([`istiod`]), which injects, validates and keeps its
//! proxies ready; and how an installer leaves them on a cluster
//! ([`installer`]). It reads and writes clusters only through the API
//! server's own types ([`crate::kube`]).

pub mod charts;
pub mod installer;
pub mod istiod;
pub mod version;

#[cfg(test)]
mod injection_tests;
