//! The sheriff bridge: daemonproxy as a procman deputy over LCM
//! (docs/fleet.md §4). The bridge is an ordinary controller of
//! daemonproxy; it keeps no process state that `statedump` and the
//! services' tags cannot rebuild.
//!
//! Floors: [`exec`] (splitting `exec_str`, judging `--allow-exec`),
//! [`tags`] (names and tags), [`procfs`] (figures from /proc), [`bounded`]
//! (tables that senders can grow); [`deputy`] (the decisions, no I/O);
//! [`run`] (the I/O loop that carries them out).

pub mod bounded;
pub mod deputy;
pub mod exec;
pub mod procfs;
pub mod run;
pub mod tags;
