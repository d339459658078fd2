//! daemonproxy: a daemontools-style process supervisor that proxies events
//! to controller scripts and carries out their commands.
//!
//! Ground floor: [`command`] (parse), [`line`] and [`reply`] (encode),
//! [`clock`], [`signame`], [`sys`], [`options`], [`query`] (filters) and
//! [`figures`] (/proc). Tables and mechanisms: [`service`], [`handle`] and
//! [`fdops`], [`controller`], [`spawn`], [`signal`], [`log`]; [`request`] (a
//! command line parsed and checked without state or I/O). The loop:
//! [`supervisor`] and [`dispatch`];
//! [`exit`] leaves it. The binary in `main.rs` only wires these together.
//! [`client`] is the other side: parsing events, for programs that drive
//! daemonproxy. The fleet layer — `procman` (LCM and the procman messages),
//! `bridge` and `sheriff`, under feature `fleet` — is for the
//! sheriff bridge and the sheriff CLI; the supervisor never uses it.
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "fleet")]
pub mod bridge;
pub mod client;
pub mod clock;
pub mod command;
pub mod controller;
pub mod dispatch;
pub mod exit;
pub mod fatal;
pub mod fdops;
pub mod figures;
pub mod handle;
pub mod line;
pub mod listener;
pub mod log;
pub mod options;
#[cfg(feature = "fleet")]
pub mod procman;
pub mod query;
pub mod reply;
pub mod request;
pub mod service;
#[cfg(feature = "fleet")]
pub mod sheriff;
pub mod signal;
pub mod signame;
pub mod spawn;
pub mod supervisor;
pub mod sys;
pub mod timer;
