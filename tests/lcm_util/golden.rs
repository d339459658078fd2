//! The golden cases of `tests/lcm_py/golden.py`, built from scratch in Rust:
//! the same values, so the same bytes.

use daemonproxy::procman::codec::{DecodeError, EncodeError};
use daemonproxy::procman::{CmdDesired, CmdStatus, CmdT, DeputyInfo, Discovery, Orders, Output};

/// One golden value of any type.
#[derive(Debug, PartialEq)]
pub enum Case {
    /// `cmd_t`
    Cmd(CmdT),
    /// `cmd_desired_t`
    Desired(CmdDesired),
    /// `cmd_status_t`
    Status(CmdStatus),
    /// `deputy_info_t`
    Info(DeputyInfo),
    /// `orders_t`
    Orders(Orders),
    /// `output_t`
    Output(Output),
    /// `discovery_t`
    Discovery(Discovery),
}

impl Case {
    /// Encodes the value (fingerprint first).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Case::Cmd(v) => v.to_bytes(),
            Case::Desired(v) => v.to_bytes(),
            Case::Status(v) => v.to_bytes(),
            Case::Info(v) => v.to_bytes(),
            Case::Orders(v) => v.to_bytes(),
            Case::Output(v) => v.to_bytes(),
            Case::Discovery(v) => v.to_bytes(),
        }
    }

    /// Decodes `data` as the same type as `self`.
    pub fn decode_like(&self, data: &[u8]) -> Result<(Case, usize), DecodeError> {
        Ok(match self {
            Case::Cmd(_) => CmdT::decode(data).map(|(v, n)| (Case::Cmd(v), n))?,
            Case::Desired(_) => CmdDesired::decode(data).map(|(v, n)| (Case::Desired(v), n))?,
            Case::Status(_) => CmdStatus::decode(data).map(|(v, n)| (Case::Status(v), n))?,
            Case::Info(_) => DeputyInfo::decode(data).map(|(v, n)| (Case::Info(v), n))?,
            Case::Orders(_) => Orders::decode(data).map(|(v, n)| (Case::Orders(v), n))?,
            Case::Output(_) => Output::decode(data).map(|(v, n)| (Case::Output(v), n))?,
            Case::Discovery(_) => Discovery::decode(data).map(|(v, n)| (Case::Discovery(v), n))?,
        })
    }

    /// The lcm-gen type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Case::Cmd(_) => "cmd_t",
            Case::Desired(_) => "cmd_desired_t",
            Case::Status(_) => "cmd_status_t",
            Case::Info(_) => "deputy_info_t",
            Case::Orders(_) => "orders_t",
            Case::Output(_) => "output_t",
            Case::Discovery(_) => "discovery_t",
        }
    }
}

fn cmd(id: &str, exec: &str, group: &str, respawn: bool, sig: i8, stop: f32) -> CmdT {
    CmdT {
        command_id: id.into(),
        exec_str: exec.into(),
        group: group.into(),
        auto_respawn: respawn,
        stop_signal: sig,
        stop_time_allowed: stop,
    }
}

fn status(cmd: CmdT, pid: i32, runid: i32, exit: i32, cpu: f32, vsize: i64, rss: i64) -> CmdStatus {
    CmdStatus {
        cmd,
        pid,
        actual_runid: runid,
        exit_code: exit,
        cpu_usage: cpu,
        mem_vsize_bytes: vsize,
        mem_rss_bytes: rss,
    }
}

fn desired(cmd: CmdT, desired_runid: i32, force_quit: bool) -> CmdDesired {
    CmdDesired { cmd, desired_runid, force_quit }
}

fn info(utime: i64, id: &str, cpu_load: f32, mem: [i64; 4], cmds: Vec<CmdStatus>) -> DeputyInfo {
    DeputyInfo {
        utime,
        deputy_id: id.into(),
        cpu_load,
        phys_mem_total_bytes: mem[0],
        phys_mem_free_bytes: mem[1],
        swap_total_bytes: mem[2],
        swap_free_bytes: mem[3],
        cmds,
    }
}

fn output(utime: i64, id: &str, ids: &[&str], text: &[&str]) -> Output {
    Output {
        utime,
        deputy_id: id.into(),
        command_ids: ids.iter().map(|s| s.to_string()).collect(),
        text: text.iter().map(|s| s.to_string()).collect(),
    }
}

fn cam() -> CmdT {
    cmd("cam", "camera --side left", "perception/cams", true, 15, 3.5)
}

fn odd() -> CmdT {
    cmd("\u{fc}n\u{ef}", "echo 'a b' \"$HOME\"", "", false, -128, 0.0)
}

/// More than 64 KB once encoded.
pub fn big_info() -> DeputyInfo {
    let cmds = (0..120)
        .map(|i| {
            let c = cmd(
                &format!("cmd-{i:03}"),
                &format!("run --n {i} {}", "x".repeat(500)),
                &format!("g/{}", i % 7),
                i % 2 == 0,
                2,
                7.0,
            );
            status(c, 1000 + i, i, (i % 4) << 8, 0.25, i as i64 * 4096, i as i64 * 1024)
        })
        .collect();
    info(1_700_000_000_000_000, "big-deputy", 0.5, [1 << 34, 1 << 33, 0, 0], cmds)
}

/// Every case, by golden file name.
pub fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("discovery_t-spec", Case::Discovery(Discovery { utime: 1, transmitter_id: "ab".into(), nonce: 2 })),
        (
            "orders_t-spec",
            Case::Orders(Orders {
                utime: 1,
                deputy_id: "d".into(),
                sheriff_id: "s".into(),
                cmds: vec![desired(cmd("x", "sleep 1", "g", false, 2, 7.0), 1, false)],
            }),
        ),
        ("output_t-spec", Case::Output(output(3, "d", &["x", ""], &["hi\n", "ok\n"]))),
        (
            "discovery_t-sheriff",
            Case::Discovery(Discovery {
                utime: 1_700_000_000_123_456,
                transmitter_id: "host:1234:1700000000000000".into(),
                nonce: 0,
            }),
        ),
        ("orders_t-empty", Case::Orders(Orders { utime: -1, ..Default::default() })),
        (
            "orders_t-two",
            Case::Orders(Orders {
                utime: 1_700_000_000_000_001,
                deputy_id: "robot".into(),
                sheriff_id: "base:77:1699999999000000".into(),
                cmds: vec![desired(cam(), i32::MAX, true), desired(odd(), 0, false)],
            }),
        ),
        (
            "deputy_info_t-two",
            Case::Info(info(
                1_700_000_000_000_002,
                "robot",
                -1.0,
                [17_179_869_184, 8_589_934_592, 0, 0],
                vec![
                    status(cam(), 4242, 7, 0, 0.125, 123_456_789, 4_096_000),
                    status(odd(), 0, i32::MIN, 768, 0.0, -1, 0),
                ],
            )),
        ),
        ("output_t-notices", Case::Output(output(5, "robot", &["", "cam"], &["Terminated\n", "line1\nline2\n"]))),
        ("output_t-empty", Case::Output(output(0, "robot", &[], &[]))),
        ("cmd_t-cam", Case::Cmd(cam())),
        ("cmd_desired_t-odd", Case::Desired(desired(odd(), -5, true))),
        ("cmd_status_t-cam", Case::Status(status(cam(), 1, 2, 3, 1.0, i64::MAX, i64::MIN))),
        ("deputy_info_t-big", Case::Info(big_info())),
    ]
}
