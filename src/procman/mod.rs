//! The fleet layer shared by the sheriff bridge and the sheriff CLI: the
//! `procman_lcm` message types and their codec, the LCM transport (udpm and
//! tcpq, written by hand from the wire facts of `docs/fleet.md` §2), an
//! embedded tcpq hub, and the PMA1 message authentication of §6.3.
//!
//! Floors: [`schema`] (type tables), [`fingerprint`], [`codec`] and
//! [`types`]; [`url`], [`datagram`] and [`frame`] (wire forms without I/O);
//! [`udpm`], [`tcpq`] and [`hub`] (sockets); [`lcm`] (one transport facade
//! for a poll loop); [`auth`].
//!
//! A deputy's loop, in outline (errors elided):
//!
//! ```text
//! let url = Url::from_env_or(opt_lcm_url)?;            // log it (§6.4)
//! let mut lcm = Lcm::new(&url)?;
//! poll.registry().register(&mut lcm, LCM, Interest::READABLE | Interest::WRITABLE)?;
//! lcm.subscribe(PM_ORDERS)?;
//! // each round: poll timeout <= lcm.next_deadline(); then, on an LCM event or at the deadline:
//! while let Some(r) = lcm.recv() {
//!     if r.channel == PM_ORDERS {
//!         let (orders, verdict) = verifier.check::<Orders>(&r.channel, &r.data)?;  // or Orders::decode
//!         if auth_mode.admits(&verdict) { /* reconcile */ }
//!     }
//! }
//! // sending: encode, sign in place, publish
//! let mut buf = Vec::new();
//! info.encode(&mut buf)?;
//! if auth_mode.signs() { signer.append(PM_INFO, &mut buf, 0); }
//! lcm.publish(PM_INFO, &buf)?;   // a failure loses one periodic message: count it, go on
//! ```

pub mod auth;
pub mod codec;
pub mod datagram;
pub mod fingerprint;
pub mod frame;
pub mod hub;
pub mod lcm;
pub mod outbuf;
pub mod schema;
pub mod tcpq;
pub mod types;
pub mod udpm;
pub mod url;
pub mod value;

pub use codec::{DecodeError, EncodeError, Message};
pub use lcm::{Lcm, Received};
pub use types::{
    CmdDesired, CmdStatus, CmdT, DeputyInfo, Discovery, Orders, Output, PM_DISCOVER, PM_INFO, PM_ORDERS, PM_OUTPUT,
    Sent,
};
pub use url::Url;
