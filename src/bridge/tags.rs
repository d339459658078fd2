//! What the bridge keeps in daemonproxy: the service name it derives from a
//! procman command id, and the `service.tags` that hold every per-command
//! fact, so a restarted bridge resumes exactly (docs/fleet.md §4.1).
//!
//! Tags are TAB-separated words: `procman`, then `KEY=VALUE` words with the
//! values percent-encoded (`%` and every byte outside 0x21..0x7e):
//! `procman id=.. runid=N group=.. respawn=0|1 stopsig=N stoptime=MS exec=..`.

use crate::command::valid_name;

/// The first tag word of a service the bridge created.
pub const OWNER: &str = "procman";

/// A command definition as the bridge holds it (`cmd_t` of procman).
#[derive(Clone, Debug, PartialEq)]
pub struct Def {
    /// The command id (the sheriff's key).
    pub id: String,
    /// What to run (split per §4.6 at each start).
    pub exec: String,
    /// `/`-separated group path; "" = top level.
    pub group: String,
    /// Restart after an exit.
    pub auto_respawn: bool,
    /// Signal for a stop (1..64).
    pub stop_signal: i32,
    /// Seconds from the stop signal to SIGKILL.
    pub stop_time_allowed: f32,
}

impl Def {
    /// `stop_time_allowed` as whole milliseconds after the rules of §4.7
    /// (NaN or negative → 7 s, at most 3600 s).
    pub fn stop_ms(&self) -> u64 {
        let t = self.stop_time_allowed;
        let t = if t.is_nan() || t < 0.0 { 7.0 } else { t.min(3600.0) };
        (f64::from(t) * 1000.0).round() as u64
    }

    /// The stop signal after the rules of §4.7 (outside 1..64 → SIGINT).
    pub fn stop_sig(&self) -> i32 {
        if (1..=64).contains(&self.stop_signal) { self.stop_signal } else { libc::SIGINT }
    }
}

/// Percent-encode `b`: `%` and every byte outside 0x21..0x7e.
pub fn encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c == b'%' || !(0x21..=0x7e).contains(&c) {
            s.push_str(&format!("%{c:02X}"));
        } else {
            s.push(c as char);
        }
    }
    s
}

/// Undo [`encode`]; a malformed escape stays as written.
pub fn decode(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (s.get(i + 1).and_then(|&c| hex(c)), s.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The `service.tags` value for a command at `runid`.
pub fn format(def: &Def, runid: i32) -> String {
    format!(
        "{OWNER}\tid={}\trunid={runid}\tgroup={}\trespawn={}\tstopsig={}\tstoptime={}\texec={}",
        encode(def.id.as_bytes()),
        encode(def.group.as_bytes()),
        u8::from(def.auto_respawn),
        def.stop_signal,
        def.stop_ms(),
        encode(def.exec.as_bytes()),
    )
}

/// Parse tags written by [`format`]: the definition and the runid, or
/// `None` if the service is not the bridge's (or its tags are damaged).
pub fn parse(tags: &[u8]) -> Option<(Def, i32)> {
    let mut words = tags.split(|&c| c == b'\t' || c == b' ').filter(|w| !w.is_empty());
    if words.next()? != OWNER.as_bytes() {
        return None;
    }
    let mut def = Def {
        id: String::new(),
        exec: String::new(),
        group: String::new(),
        auto_respawn: false,
        stop_signal: libc::SIGINT,
        stop_time_allowed: 7.0,
    };
    let (mut id, mut runid) = (None, 0);
    let text = |v: &[u8]| String::from_utf8(decode(v)).ok();
    let num = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<i64>().ok();
    for w in words {
        let Some(eq) = w.iter().position(|&c| c == b'=') else { continue };
        let (k, v) = (&w[..eq], &w[eq + 1..]);
        match k {
            b"id" => id = text(v),
            b"runid" => runid = i32::try_from(num(v)?).ok()?,
            b"group" => def.group = text(v)?,
            b"respawn" => def.auto_respawn = v == b"1",
            b"stopsig" => def.stop_signal = i32::try_from(num(v)?).ok()?,
            b"stoptime" => def.stop_time_allowed = num(v)? as f32 / 1000.0,
            b"exec" => def.exec = text(v)?,
            _ => {} // written by a later version: ignored
        }
    }
    def.id = id.filter(|i| !i.is_empty())?;
    Some((def, runid))
}

/// FNV-1a, 32 bits.
pub fn fnv1a32(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &c| (h ^ u32::from(c)).wrapping_mul(0x0100_0193))
}

/// Why a command id cannot be a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// The id is empty.
    Empty,
    /// Longer than 255 bytes.
    TooLong,
    /// A byte below 0x20.
    ControlByte,
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdError::Empty => "empty command id",
            IdError::TooLong => "command id longer than 255 bytes",
            IdError::ControlByte => "command id contains a control character",
        })
    }
}

/// The service name for command `id`: `pm.<id>` if that is a valid name,
/// else `pm.<first 18 bytes, others → _>.<8 hex of FNV-1a-32(id)>`.
pub fn service_name(id: &str) -> Result<String, IdError> {
    let b = id.as_bytes();
    if b.is_empty() {
        return Err(IdError::Empty);
    }
    if b.len() > 255 {
        return Err(IdError::TooLong);
    }
    if b.iter().any(|&c| c < 0x20) {
        return Err(IdError::ControlByte);
    }
    let plain = format!("pm.{id}");
    if valid_name(plain.as_bytes()) {
        return Ok(plain);
    }
    let keep = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
    let head: String = b.iter().take(18).map(|&c| if keep(c) { c as char } else { '_' }).collect();
    Ok(format!("pm.{head}.{:08x}", fnv1a32(b)))
}

/// The handle that carries a service's output (the pty the bridge reads):
/// `<service>.out` if that fits the 31-byte name rule, else
/// `pm.<8 hex of FNV-1a-32(service)>.out`.
pub fn output_handle(service: &str) -> String {
    let plain = format!("{service}.out");
    if valid_name(plain.as_bytes()) { plain } else { format!("pm.{:08x}.out", fnv1a32(service.as_bytes())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Def {
        Def {
            id: "cam left/1".into(),
            exec: "MAP=${HOME}/m mapper --x 100%".into(),
            group: "perception/mapping".into(),
            auto_respawn: true,
            stop_signal: 15,
            stop_time_allowed: 3.5,
        }
    }

    #[test]
    fn tags_round_trip() {
        let t = format(&def(), 42);
        assert_eq!(
            t,
            "procman\tid=cam%20left/1\trunid=42\tgroup=perception/mapping\trespawn=1\tstopsig=15\tstoptime=3500\t\
             exec=MAP=${HOME}/m%20mapper%20--x%20100%25"
        );
        assert_eq!(parse(t.as_bytes()), Some((def(), 42)));
        // spaces as separators are read too, unknown keys are ignored
        assert_eq!(parse(b"procman id=x runid=3 future=1").map(|(d, r)| (d.id, r)), Some(("x".into(), 3)));
        assert_eq!(parse(b"user=bob\tid=x"), None);
        assert_eq!(parse(b"procman\trunid=1"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(decode(b"a%2"), b"a%2".to_vec());
        assert_eq!(decode(encode("é\t%".as_bytes()).as_bytes()), "é\t%".as_bytes().to_vec());
    }

    #[test]
    fn names() {
        assert_eq!(service_name("camera-left").unwrap(), "pm.camera-left");
        let long = service_name("a-very-long-command-id-for-the-camera").unwrap();
        assert!(long.starts_with("pm.a-very-long-comman.") && long.len() == 30, "{long}");
        assert!(valid_name(long.as_bytes()));
        let odd = service_name("x y/z").unwrap();
        assert_eq!(odd, format!("pm.x_y_z.{:08x}", fnv1a32(b"x y/z")));
        assert_eq!(service_name(""), Err(IdError::Empty));
        assert_eq!(service_name(&"x".repeat(256)), Err(IdError::TooLong));
        assert_eq!(service_name("a\nb"), Err(IdError::ControlByte));
        assert_eq!(output_handle("pm.cam"), "pm.cam.out");
        let h = output_handle(&long);
        assert!(valid_name(h.as_bytes()) && h.ends_with(".out"), "{h}");
        // the published FNV-1a-32 of "a"
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
    }

    #[test]
    fn stop_rules() {
        let mut d = def();
        d.stop_time_allowed = f32::NAN;
        assert_eq!(d.stop_ms(), 7000);
        d.stop_time_allowed = -1.0;
        assert_eq!(d.stop_ms(), 7000);
        d.stop_time_allowed = 1e9;
        assert_eq!(d.stop_ms(), 3_600_000);
        d.stop_signal = 0;
        assert_eq!(d.stop_sig(), 2);
        d.stop_signal = 65;
        assert_eq!(d.stop_sig(), 2);
    }
}
