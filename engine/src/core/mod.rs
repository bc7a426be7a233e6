//! The pure core: plans, events, `fold` and `decide`. No I/O, no clock, no
//! tokio: time and ids come in as arguments.

pub mod backoff;
pub mod decide;
pub mod event;
pub mod payload;
pub mod plan;
pub mod state;

#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod testkit;
