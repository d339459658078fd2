//! The seven `procman_lcm` message types (docs/fleet.md §3.1) as plain Rust structs,
//! their tables (from which the fingerprints are computed), their codecs,
//! and the channel names of docs/fleet.md §3.2.
//!
//! Array counts (`ncmds`, `num_commands`) are not stored: they are the
//! lengths of the vectors, written on encode and checked on decode.

use super::codec::{DecodeError, EncodeError, Message, Reader, Writer};
use super::fingerprint::fingerprint;
use super::schema::{Dim, Field, Prim, StructDef, Type};

/// Deputy reports (`deputy_info_t`).
pub const PM_INFO: &str = "PM_INFO";
/// Sheriff orders (`orders_t`).
pub const PM_ORDERS: &str = "PM_ORDERS";
/// Console output of deputies' commands (`output_t`).
pub const PM_OUTPUT: &str = "PM_OUTPUT";
/// Discovery (`discovery_t`). Some documents misspell it `PM_DISOCVER`.
pub const PM_DISCOVER: &str = "PM_DISCOVER";

const fn prim(name: &'static str, p: Prim) -> Field {
    Field { name, ty: Type::Prim(p), dims: &[] }
}

const fn nested(name: &'static str, def: &'static StructDef) -> Field {
    Field { name, ty: Type::Struct(def), dims: &[] }
}

const PACKAGE: &str = "procman_lcm";

/// Table of `procman_lcm.cmd_t`.
pub static CMD_T: StructDef = StructDef {
    package: PACKAGE,
    name: "cmd_t",
    fields: &[
        prim("command_id", Prim::String),
        prim("exec_str", Prim::String),
        prim("group", Prim::String),
        prim("auto_respawn", Prim::Boolean),
        prim("stop_signal", Prim::Int8),
        prim("stop_time_allowed", Prim::Float),
    ],
};

/// Table of `procman_lcm.cmd_desired_t`.
pub static CMD_DESIRED_T: StructDef = StructDef {
    package: PACKAGE,
    name: "cmd_desired_t",
    fields: &[nested("cmd", &CMD_T), prim("desired_runid", Prim::Int32), prim("force_quit", Prim::Boolean)],
};

/// Table of `procman_lcm.cmd_status_t`.
pub static CMD_STATUS_T: StructDef = StructDef {
    package: PACKAGE,
    name: "cmd_status_t",
    fields: &[
        nested("cmd", &CMD_T),
        prim("pid", Prim::Int32),
        prim("actual_runid", Prim::Int32),
        prim("exit_code", Prim::Int32),
        prim("cpu_usage", Prim::Float),
        prim("mem_vsize_bytes", Prim::Int64),
        prim("mem_rss_bytes", Prim::Int64),
    ],
};

/// Table of `procman_lcm.deputy_info_t`.
pub static DEPUTY_INFO_T: StructDef = StructDef {
    package: PACKAGE,
    name: "deputy_info_t",
    fields: &[
        prim("utime", Prim::Int64),
        prim("deputy_id", Prim::String),
        prim("cpu_load", Prim::Float),
        prim("phys_mem_total_bytes", Prim::Int64),
        prim("phys_mem_free_bytes", Prim::Int64),
        prim("swap_total_bytes", Prim::Int64),
        prim("swap_free_bytes", Prim::Int64),
        prim("ncmds", Prim::Int32),
        Field { name: "cmds", ty: Type::Struct(&CMD_STATUS_T), dims: &[Dim::Var("ncmds")] },
    ],
};

/// Table of `procman_lcm.orders_t`.
pub static ORDERS_T: StructDef = StructDef {
    package: PACKAGE,
    name: "orders_t",
    fields: &[
        prim("utime", Prim::Int64),
        prim("deputy_id", Prim::String),
        prim("sheriff_id", Prim::String),
        prim("ncmds", Prim::Int32),
        Field { name: "cmds", ty: Type::Struct(&CMD_DESIRED_T), dims: &[Dim::Var("ncmds")] },
    ],
};

/// Table of `procman_lcm.output_t`.
pub static OUTPUT_T: StructDef = StructDef {
    package: PACKAGE,
    name: "output_t",
    fields: &[
        prim("utime", Prim::Int64),
        prim("deputy_id", Prim::String),
        prim("num_commands", Prim::Int16),
        Field { name: "command_ids", ty: Type::Prim(Prim::String), dims: &[Dim::Var("num_commands")] },
        Field { name: "text", ty: Type::Prim(Prim::String), dims: &[Dim::Var("num_commands")] },
    ],
};

/// Table of `procman_lcm.discovery_t`.
pub static DISCOVERY_T: StructDef = StructDef {
    package: PACKAGE,
    name: "discovery_t",
    fields: &[prim("utime", Prim::Int64), prim("transmitter_id", Prim::String), prim("nonce", Prim::Int64)],
};

/// Every `procman_lcm` table, nested types first.
pub static ALL: [&StructDef; 7] =
    [&CMD_T, &CMD_DESIRED_T, &CMD_STATUS_T, &DEPUTY_INFO_T, &ORDERS_T, &OUTPUT_T, &DISCOVERY_T];

/// A command's definition (`cmd_t`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmdT {
    /// Unique key; config files forbid '/'.
    pub command_id: String,
    /// The command line (split per docs/fleet.md §4.6, no shell).
    pub exec_str: String,
    /// '/'-separated group path; "" = top level.
    pub group: String,
    /// Restart the command when it exits.
    pub auto_respawn: bool,
    /// The signal that stops it.
    pub stop_signal: i8,
    /// Seconds from the stop signal to SIGKILL.
    pub stop_time_allowed: f32,
}

impl CmdT {
    /// The stop signal a sheriff uses when none is configured (SIGINT).
    pub const DEFAULT_STOP_SIGNAL: i8 = 2;
    /// The stop time a sheriff uses when none is configured, in seconds.
    pub const DEFAULT_STOP_TIME_ALLOWED: f32 = 7.0;
}

/// A command as a sheriff wants it (`cmd_desired_t`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmdDesired {
    /// The definition.
    pub cmd: CmdT,
    /// The run the sheriff wants; 0 = no opinion.
    pub desired_runid: i32,
    /// Stop it (and keep it stopped).
    pub force_quit: bool,
}

/// A command as a deputy holds it (`cmd_status_t`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmdStatus {
    /// The definition.
    pub cmd: CmdT,
    /// > 0 while running, else 0.
    pub pid: i32,
    /// The run the deputy last started.
    pub actual_runid: i32,
    /// The raw wait status of the last run.
    pub exit_code: i32,
    /// Fraction of the whole machine, 0 to 1.
    pub cpu_usage: f32,
    /// Virtual memory size in bytes.
    pub mem_vsize_bytes: i64,
    /// Resident set size in bytes.
    pub mem_rss_bytes: i64,
}

/// A deputy's whole actual state (`deputy_info_t`, on [`PM_INFO`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeputyInfo {
    /// Sender wall clock, µs since the epoch.
    pub utime: i64,
    /// The deputy's id.
    pub deputy_id: String,
    /// Host load, 0 to 1; -1 = not measured yet.
    pub cpu_load: f32,
    /// Physical memory in bytes.
    pub phys_mem_total_bytes: i64,
    /// Available physical memory in bytes.
    pub phys_mem_free_bytes: i64,
    /// Swap in bytes.
    pub swap_total_bytes: i64,
    /// Free swap in bytes.
    pub swap_free_bytes: i64,
    /// Every command (`ncmds` is its length).
    pub cmds: Vec<CmdStatus>,
}

/// One deputy's whole desired state (`orders_t`, on [`PM_ORDERS`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Orders {
    /// Sender wall clock, µs since the epoch.
    pub utime: i64,
    /// The target deputy; every other deputy ignores the message.
    pub deputy_id: String,
    /// `"<hostname>:<pid>:<start utime>"`.
    pub sheriff_id: String,
    /// Every command the deputy should hold (`ncmds` is its length).
    pub cmds: Vec<CmdDesired>,
}

/// Console output (`output_t`, on [`PM_OUTPUT`]). `command_ids` and `text`
/// are parallel arrays and must have the same length (`num_commands`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Publish time, µs since the epoch.
    pub utime: i64,
    /// The sending deputy.
    pub deputy_id: String,
    /// One id per entry; "" = the deputy itself.
    pub command_ids: Vec<String>,
    /// The text of each entry.
    pub text: Vec<String>,
}

/// Discovery (`discovery_t`, on [`PM_DISCOVER`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    /// Sender wall clock, µs since the epoch.
    pub utime: i64,
    /// The sender's deputy or sheriff id.
    pub transmitter_id: String,
    /// A deputy's random non-zero value; 0 from a sheriff.
    pub nonce: i64,
}

impl Message for CmdT {
    const DEF: &'static StructDef = &CMD_T;
    const FINGERPRINT: u64 = fingerprint(&CMD_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.string("command_id", &self.command_id)?;
        w.string("exec_str", &self.exec_str)?;
        w.string("group", &self.group)?;
        w.boolean(self.auto_respawn);
        w.i8(self.stop_signal);
        w.f32(self.stop_time_allowed);
        Ok(())
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CmdT {
            command_id: r.string("command_id")?,
            exec_str: r.string("exec_str")?,
            group: r.string("group")?,
            auto_respawn: r.boolean("auto_respawn")?,
            stop_signal: r.i8("stop_signal")?,
            stop_time_allowed: r.f32("stop_time_allowed")?,
        })
    }
}

impl Message for CmdDesired {
    const DEF: &'static StructDef = &CMD_DESIRED_T;
    const FINGERPRINT: u64 = fingerprint(&CMD_DESIRED_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.cmd.encode_members(w)?;
        w.i32(self.desired_runid);
        w.boolean(self.force_quit);
        Ok(())
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CmdDesired {
            cmd: CmdT::decode_members(r)?,
            desired_runid: r.i32("desired_runid")?,
            force_quit: r.boolean("force_quit")?,
        })
    }
}

impl Message for CmdStatus {
    const DEF: &'static StructDef = &CMD_STATUS_T;
    const FINGERPRINT: u64 = fingerprint(&CMD_STATUS_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.cmd.encode_members(w)?;
        w.i32(self.pid);
        w.i32(self.actual_runid);
        w.i32(self.exit_code);
        w.f32(self.cpu_usage);
        w.i64(self.mem_vsize_bytes);
        w.i64(self.mem_rss_bytes);
        Ok(())
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CmdStatus {
            cmd: CmdT::decode_members(r)?,
            pid: r.i32("pid")?,
            actual_runid: r.i32("actual_runid")?,
            exit_code: r.i32("exit_code")?,
            cpu_usage: r.f32("cpu_usage")?,
            mem_vsize_bytes: r.i64("mem_vsize_bytes")?,
            mem_rss_bytes: r.i64("mem_rss_bytes")?,
        })
    }
}

/// Writes an `int32_t` count for `items` and then each element.
fn encode_structs<T: Message>(w: &mut Writer<'_>, field: &'static str, items: &[T]) -> Result<(), EncodeError> {
    w.check_count(field, items.len())?;
    w.i32(items.len() as i32);
    items.iter().try_for_each(|c| c.encode_members(w))
}

/// Reads an `int32_t` count (as the member `count`) and that many elements.
fn decode_structs<T: Message>(r: &mut Reader<'_>, count: &'static str) -> Result<Vec<T>, DecodeError> {
    let n = r.i32(count)?;
    let n = r.check_count(count, n.into())?;
    r.array(n, T::decode_members)
}

impl Message for DeputyInfo {
    const DEF: &'static StructDef = &DEPUTY_INFO_T;
    const FINGERPRINT: u64 = fingerprint(&DEPUTY_INFO_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.i64(self.utime);
        w.string("deputy_id", &self.deputy_id)?;
        w.f32(self.cpu_load);
        w.i64(self.phys_mem_total_bytes);
        w.i64(self.phys_mem_free_bytes);
        w.i64(self.swap_total_bytes);
        w.i64(self.swap_free_bytes);
        encode_structs(w, "cmds", &self.cmds)
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(DeputyInfo {
            utime: r.i64("utime")?,
            deputy_id: r.string("deputy_id")?,
            cpu_load: r.f32("cpu_load")?,
            phys_mem_total_bytes: r.i64("phys_mem_total_bytes")?,
            phys_mem_free_bytes: r.i64("phys_mem_free_bytes")?,
            swap_total_bytes: r.i64("swap_total_bytes")?,
            swap_free_bytes: r.i64("swap_free_bytes")?,
            cmds: decode_structs(r, "ncmds")?,
        })
    }
}

impl Message for Orders {
    const DEF: &'static StructDef = &ORDERS_T;
    const FINGERPRINT: u64 = fingerprint(&ORDERS_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.i64(self.utime);
        w.string("deputy_id", &self.deputy_id)?;
        w.string("sheriff_id", &self.sheriff_id)?;
        encode_structs(w, "cmds", &self.cmds)
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Orders {
            utime: r.i64("utime")?,
            deputy_id: r.string("deputy_id")?,
            sheriff_id: r.string("sheriff_id")?,
            cmds: decode_structs(r, "ncmds")?,
        })
    }
}

impl Message for Output {
    const DEF: &'static StructDef = &OUTPUT_T;
    const FINGERPRINT: u64 = fingerprint(&OUTPUT_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let n = self.command_ids.len();
        if self.text.len() != n {
            return Err(EncodeError::CountMismatch { field: "text" });
        }
        w.check_count("command_ids", n)?;
        w.i64(self.utime);
        w.string("deputy_id", &self.deputy_id)?;
        w.i16(n as i16);
        self.command_ids.iter().try_for_each(|s| w.string("command_ids", s))?;
        self.text.iter().try_for_each(|s| w.string("text", s))
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let utime = r.i64("utime")?;
        let deputy_id = r.string("deputy_id")?;
        let n = r.i16("num_commands")?;
        let n = r.check_count("num_commands", n.into())?;
        let command_ids = r.array(n, |r| r.string("command_ids"))?;
        let text = r.array(n, |r| r.string("text"))?;
        Ok(Output { utime, deputy_id, command_ids, text })
    }
}

impl Message for Discovery {
    const DEF: &'static StructDef = &DISCOVERY_T;
    const FINGERPRINT: u64 = fingerprint(&DISCOVERY_T);

    fn encode_members(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.i64(self.utime);
        w.string("transmitter_id", &self.transmitter_id)?;
        w.i64(self.nonce);
        Ok(())
    }

    fn decode_members(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Discovery { utime: r.i64("utime")?, transmitter_id: r.string("transmitter_id")?, nonce: r.i64("nonce")? })
    }
}

/// The inherent `FINGERPRINT`, `encode` and `decode` of each type, so callers
/// need not import [`Message`].
macro_rules! inherent_codec {
    ($($t:ty),*) => {$(
        impl $t {
            /// This type's fingerprint (the first eight bytes of a message).
            pub const FINGERPRINT: u64 = <$t as Message>::FINGERPRINT;

            /// Appends the encoded message (fingerprint first) to `out`.
            /// Refuses values outside the limits of docs/fleet.md §6.4 (strings over
            /// 64 KiB or with a NUL, over 10000 array elements, messages over
            /// 1 MiB) and unequal parallel arrays; `out` is then unchanged.
            pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
                Message::encode(self, out)
            }

            /// Decodes a message from the start of `data`, returning it and
            /// the bytes it took; trailing bytes are ignored (docs/fleet.md §2.4).
            pub fn decode(data: &[u8]) -> Result<(Self, usize), DecodeError> {
                <$t as Message>::decode(data)
            }

            /// The encoded message in a new buffer.
            pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
                let mut out = Vec::new();
                Message::encode(self, &mut out)?;
                Ok(out)
            }
        }
    )*};
}

inherent_codec!(CmdT, CmdDesired, CmdStatus, DeputyInfo, Orders, Output, Discovery);

/// What the authentication of docs/fleet.md §6.3 needs from a top-level message: who
/// sent it and its wall-clock time.
pub trait Sent: Message {
    /// The sender: `sheriff_id` for orders, `deputy_id` for info and output,
    /// `transmitter_id` for discovery.
    fn sender(&self) -> &str;
    /// The message's `utime` (µs since the epoch).
    fn utime(&self) -> i64;
}

impl Sent for DeputyInfo {
    fn sender(&self) -> &str {
        &self.deputy_id
    }
    fn utime(&self) -> i64 {
        self.utime
    }
}

impl Sent for Orders {
    fn sender(&self) -> &str {
        &self.sheriff_id
    }
    fn utime(&self) -> i64 {
        self.utime
    }
}

impl Sent for Output {
    fn sender(&self) -> &str {
        &self.deputy_id
    }
    fn utime(&self) -> i64 {
        self.utime
    }
}

impl Sent for Discovery {
    fn sender(&self) -> &str {
        &self.transmitter_id
    }
    fn utime(&self) -> i64 {
        self.utime
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procman::value::Value;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn orders() -> Orders {
        Orders {
            utime: 1,
            deputy_id: "d".into(),
            sheriff_id: "s".into(),
            cmds: vec![CmdDesired {
                cmd: CmdT {
                    command_id: "x".into(),
                    exec_str: "sleep 1".into(),
                    group: "g".into(),
                    auto_respawn: false,
                    stop_signal: 2,
                    stop_time_allowed: 7.0,
                },
                desired_runid: 1,
                force_quit: false,
            }],
        }
    }

    /// Checks `m` against its golden bytes: encode, decode (with trailing
    /// bytes), and the table walker agreeing on the layout.
    fn golden<T: Message + PartialEq + std::fmt::Debug>(m: &T, bytes: &str) {
        let want = hex(bytes);
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        assert_eq!(out, want);
        out.extend_from_slice(&[0xaa; 48]);
        let (back, used) = T::decode(&out).unwrap();
        assert_eq!((&back, used), (m, want.len()));
        let (v, used) = Value::decode(T::DEF, &out).unwrap();
        assert_eq!(used, want.len());
        let mut again = Vec::new();
        v.encode(T::DEF, &mut again).unwrap();
        assert_eq!(again, want);
    }

    /// Spec §2.4's three golden vectors from the real library.
    #[test]
    fn spec_golden_discovery() {
        let d = Discovery { utime: 1, transmitter_id: "ab".into(), nonce: 2 };
        golden(&d, "b1c83182bed74b95 0000000000000001 00000003 616200 0000000000000002");
    }

    #[test]
    fn spec_golden_orders() {
        golden(
            &orders(),
            "d343f45b171ab855 0000000000000001 00000002 6400 00000002 7300 00000001
             00000002 7800 00000008 736c6565702031 00 00000002 6700 00 02 40e00000 00000001 00",
        );
    }

    #[test]
    fn spec_golden_output() {
        let o = Output {
            utime: 3,
            deputy_id: "d".into(),
            command_ids: vec!["x".into(), String::new()],
            text: vec!["hi\n".into(), "ok\n".into()],
        };
        golden(
            &o,
            "8efa5caf5da01eb3 0000000000000003 00000002 6400 0002 00000002 7800 00000001 00 00000004 68690a00 00000004 6f6b0a00",
        );
    }

    #[test]
    fn fingerprints_are_the_wire_values() {
        assert_eq!(DeputyInfo::FINGERPRINT, 0x8876aeb040efd01f);
        assert_eq!(Orders::FINGERPRINT, 0xd343f45b171ab855);
        assert_eq!(Output::FINGERPRINT, 0x8efa5caf5da01eb3);
        assert_eq!(Discovery::FINGERPRINT, 0xb1c83182bed74b95);
    }

    #[test]
    fn wrong_fingerprint_is_refused() {
        let bytes = orders().to_bytes().unwrap();
        assert_eq!(
            DeputyInfo::decode(&bytes),
            Err(DecodeError::Fingerprint { expected: DeputyInfo::FINGERPRINT, found: Orders::FINGERPRINT })
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let info = DeputyInfo {
            utime: -5,
            deputy_id: "host".into(),
            cpu_load: -1.0,
            cmds: vec![CmdStatus { pid: 42, ..Default::default() }; 3],
            ..Default::default()
        };
        let bytes = info.to_bytes().unwrap();
        for n in 0..bytes.len() {
            assert!(matches!(DeputyInfo::decode(&bytes[..n]), Err(DecodeError::Truncated { .. })), "{n}");
        }
        assert_eq!(DeputyInfo::decode(&bytes), Ok((info, bytes.len())));
    }

    #[test]
    fn hostile_counts_are_refused() {
        let mut bytes = orders().to_bytes().unwrap();
        let at = 8 + 8 + 6 + 6; // fingerprint, utime, "d", "s"
        for (count, value) in [([0xff, 0xff, 0xff, 0xff], -1), ([0, 0, 0x27, 0x11], 10_001)] {
            bytes[at..at + 4].copy_from_slice(&count);
            assert_eq!(Orders::decode(&bytes), Err(DecodeError::Count { field: "ncmds", value }));
        }
        // A plausible count with too few bytes behind it allocates nothing big.
        bytes[at..at + 4].copy_from_slice(&[0, 0, 0x27, 0x10]);
        assert!(matches!(Orders::decode(&bytes), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn output_arrays_must_be_parallel() {
        let o = Output { command_ids: vec!["a".into()], ..Default::default() };
        let mut out = Vec::new();
        assert_eq!(o.encode(&mut out), Err(EncodeError::CountMismatch { field: "text" }));
        assert!(out.is_empty());
        let many = Output {
            command_ids: vec![String::new(); 10_001],
            text: vec![String::new(); 10_001],
            utime: 0,
            deputy_id: String::new(),
        };
        assert_eq!(many.encode(&mut out), Err(EncodeError::Count { field: "command_ids" }));
        let neg = hex("8efa5caf5da01eb3 0000000000000003 00000001 00 ffff");
        assert_eq!(Output::decode(&neg), Err(DecodeError::Count { field: "num_commands", value: -1 }));
    }

    #[test]
    fn nested_types_have_their_own_fingerprints() {
        assert_eq!(CmdT::FINGERPRINT, 0x2277f449a855d330);
        let c = CmdStatus { cmd: CmdT { command_id: "a".into(), ..Default::default() }, pid: 7, ..Default::default() };
        let bytes = c.to_bytes().unwrap();
        assert_eq!(bytes[..8], 0xa8e0208786cf86e3u64.to_be_bytes());
        assert_eq!(CmdStatus::decode(&bytes), Ok((c, bytes.len())));
    }

    /// A small deterministic generator (xorshift64*), for mutation tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Hostile input never panics: valid messages with bytes overwritten,
    /// cut short, or lengths set to extremes, decoded as every type.
    #[test]
    fn mutated_messages_never_panic() {
        let info = DeputyInfo {
            deputy_id: "host".into(),
            cmds: vec![CmdStatus { cmd: orders().cmds[0].cmd.clone(), pid: 1, ..Default::default() }; 2],
            ..Default::default()
        };
        let o = Output {
            command_ids: vec!["a".into(), "".into()],
            text: vec!["x\n".into(), "y".into()],
            ..Default::default()
        };
        let seeds = [info.to_bytes().unwrap(), orders().to_bytes().unwrap(), o.to_bytes().unwrap()];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let mut m = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len());
                m[at] = match rng.below(4) {
                    0 => 0xff,
                    1 => 0x7f,
                    2 => 0,
                    _ => rng.next() as u8,
                };
            }
            m.truncate(m.len() - rng.below(m.len() / 4 + 1));
            decoded += usize::from(DeputyInfo::decode(&m).is_ok());
            decoded += usize::from(Orders::decode(&m).is_ok());
            decoded += usize::from(Output::decode(&m).is_ok());
            let _ = Discovery::decode(&m);
            for def in ALL {
                let _ = Value::decode(def, &m);
            }
        }
        assert!(decoded > 0, "some mutations stay valid (the test exercises both paths)");
    }
}
