//! The sheriff (`daemonproxy-sheriff`): holds the desired state of every
//! command on every deputy, sends the orders, shows status and runs
//! scripts (sheriff-bridge.md §5). It reaches daemonproxy only through
//! deputies (bridges) on LCM.
//!
//! Floors: [`model`] (the fleet and the decisions, no I/O), [`view`]
//! (selections and tables); [`engine`] (the sheriff on LCM).

pub mod engine;
pub mod model;
pub mod view;
