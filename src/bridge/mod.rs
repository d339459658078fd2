//! The sheriff bridge: daemonproxy as a procman deputy over LCM
//! (sheriff-bridge.md §4). The bridge is an ordinary controller of
//! daemonproxy; it keeps no process state that `statedump` and the
//! services' tags cannot rebuild.
//!
//! Floors: [`exec`] (splitting `exec_str`), [`tags`] (names and tags),
//! [`procfs`] (figures from /proc); [`deputy`] (the decisions, no I/O);
//! [`run`] (the I/O loop that carries them out).

pub mod deputy;
pub mod exec;
pub mod procfs;
pub mod run;
pub mod tags;
