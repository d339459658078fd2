//! Shared harness for the LCM tests: the project's `.venv` with the real
//! LCM library (`lcm==1.5.3` from PyPI), a line-driven Python peer using it
//! (`tests/lcm_py/peer.py`), hex helpers, running a test inside a fresh
//! network namespace, and the golden cases built in Rust.
//!
//! The venv comes from `DAEMONPROXY_LCM_VENV` (set by `make test`) or
//! `./.venv`; without it these tests fail, saying how to make it.

#![allow(dead_code)]

pub mod golden;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long any one reply from a peer may take.
pub const REPLY: Duration = Duration::from_secs(20);

/// The top of the source tree.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's directory; panics with instructions if it is missing.
pub fn venv() -> PathBuf {
    let dir = match std::env::var_os("DAEMONPROXY_LCM_VENV") {
        Some(d) => PathBuf::from(d),
        None => root().join(".venv"),
    };
    let python = dir.join("bin/python");
    let ok = python.exists()
        && Command::new(&python).args(["-c", "import lcm"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(
        ok,
        "the LCM test venv is missing or broken at {}: run `make venv` (or `make test`), which does \
         `python3 -m venv .venv && .venv/bin/pip install lcm==1.5.3`",
        dir.display()
    );
    dir
}

/// The venv's Python.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// A Python script under `tests/lcm_py/`.
pub fn script(name: &str) -> PathBuf {
    root().join("tests/lcm_py").join(name)
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes from hex (whitespace ignored); panics on bad input (test data only).
pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// A `tests/lcm_py/peer.py` process: one command in, one reply line out.
pub struct Peer {
    child: Child,
    /// `None` only while dropping (closing it lets the peer exit by itself).
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Peer {
    /// Starts a peer (not yet attached to any URL).
    pub fn start() -> Peer {
        Peer::start_in(None)
    }

    /// Starts a peer inside the named network namespace (`ip netns exec`).
    pub fn start_in(netns: Option<&str>) -> Peer {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(python());
                c
            }
            None => Command::new(python()),
        };
        let mut child = command
            .arg(script("peer.py"))
            .current_dir(root().join("tests/lcm_py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start peer.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, stdin: Some(stdin), lines }
    }

    /// Starts a peer on `url`.
    pub fn on(url: &str) -> Peer {
        let mut p = Peer::start();
        p.ok(&format!("url {url}"));
        p
    }

    /// Sends one command and returns its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("peer stdin");
        writeln!(stdin, "{line}").expect("write to peer");
        stdin.flush().expect("flush peer");
        self.lines.recv_timeout(REPLY).unwrap_or_else(|_| {
            let head: String = line.chars().take(60).collect();
            panic!("peer gave no reply to '{head}' within {REPLY:?}")
        })
    }

    /// Sends a command that must answer `ok`.
    pub fn ok(&mut self, line: &str) {
        let r = self.cmd(line);
        assert_eq!(r, "ok", "peer reply to '{}'", line.chars().take(60).collect::<String>());
    }

    /// Subscribes, then publishes a marker on `channel` and waits for it:
    /// over tcpq the hub has then read the subscription (a hub handles one
    /// connection's frames in order), so later messages from others reach us.
    pub fn subscribe_synced(&mut self, channel: &str) {
        self.ok(&format!("sub {channel}"));
        self.publish(channel, b"sync");
        let deadline = Instant::now() + REPLY;
        while self.recv_on(channel, 10_000) != b"sync" {
            assert!(Instant::now() < deadline, "no sync marker on {channel}");
        }
    }

    /// Publishes `data` on `channel` through the real library.
    pub fn publish(&mut self, channel: &str, data: &[u8]) {
        self.ok(&format!("pub {channel} {}", hex(data)));
    }

    /// Waits up to `ms` for a message: `Some((channel, data))` or `None`.
    pub fn recv(&mut self, ms: u64) -> Option<(String, Vec<u8>)> {
        let r = self.cmd(&format!("recv {ms}"));
        if r == "timeout" {
            return None;
        }
        let mut w = r.splitn(3, ' ');
        assert_eq!(w.next(), Some("msg"), "peer: {r}");
        let channel = w.next().expect("channel").to_string();
        Some((channel, unhex(w.next().unwrap_or(""))))
    }

    /// Waits for a message on `channel`, skipping others; panics after `ms`.
    pub fn recv_on(&mut self, channel: &str, ms: u64) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
            assert!(left > 0, "no message on {channel} within {ms} ms");
            if let Some((c, d)) = self.recv(left)
                && c == channel
            {
                return d;
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // End of input ends the peer, which then removes its generated
        // types (tests/lcm_py/pmtypes.py); SIGKILL only if it lingers.
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the calling test's body inside a fresh network namespace with a
/// multicast-capable loopback (docs/fleet.md §7). Returns true in the child, where
/// the body runs; in the parent it re-executes this test binary for just
/// `test` inside `unshare -n`, asserts it passed, and returns false.
pub fn in_netns(test: &str) -> bool {
    if std::env::var_os("DAEMONPROXY_IN_NETNS").is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let setup =
        "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec \"$0\" \"$@\"";
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", setup])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("DAEMONPROXY_IN_NETNS", "1")
        .env("DAEMONPROXY_LCM_VENV", venv())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare (util-linux); these tests need root for network namespaces");
    // The child's output is shown only if it fails, so its own harness
    // lines do not pile up in the parent's report.
    let collect = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = collect(child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let err = collect(child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    assert!(
        status.success(),
        "{test} failed inside its network namespace ({status}; killed after 120 s if signalled):\n{out}\n{err}"
    );
    false
}

/// Reads a golden file `tests/golden/NAME.hex`.
pub fn golden_file(name: &str) -> Vec<u8> {
    let path = root().join("tests/golden").join(format!("{name}.hex"));
    unhex(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The names of all committed golden files, sorted.
pub fn golden_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".hex").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Our endpoint under test, driven by its own `mio::Poll` the way a
/// program's loop would drive it (edge-triggered, drained to `None`).
pub struct Ours {
    /// The endpoint.
    pub lcm: daemonproxy::procman::Lcm,
    poll: mio::Poll,
    events: mio::Events,
}

impl Ours {
    /// Opens `url` and registers the endpoint with a fresh poll.
    pub fn open(url: &str) -> Ours {
        use daemonproxy::procman::{Lcm, Url};
        let mut lcm = Lcm::new(&Url::parse(url).expect("url")).expect("open LCM endpoint");
        let poll = mio::Poll::new().expect("poll");
        poll.registry()
            .register(&mut lcm, mio::Token(0), mio::Interest::READABLE | mio::Interest::WRITABLE)
            .expect("register");
        Ours { lcm, poll, events: mio::Events::with_capacity(16) }
    }

    /// Receives until `want` accepts a message; panics after `timeout`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&daemonproxy::procman::Received) -> bool,
    ) -> daemonproxy::procman::Received {
        self.try_wait_for(timeout, &mut want).unwrap_or_else(|| panic!("no wanted message within {timeout:?}"))
    }

    /// Receives until `want` accepts a message, or `None` after `timeout`.
    pub fn try_wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&daemonproxy::procman::Received) -> bool,
    ) -> Option<daemonproxy::procman::Received> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(r) = self.lcm.recv() {
                if want(&r) {
                    return Some(r);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let mut wait = deadline - now;
            if let Some(d) = self.lcm.next_deadline() {
                wait = wait.min(d.saturating_duration_since(now));
            }
            self.poll.poll(&mut self.events, Some(wait.max(Duration::from_millis(1)))).expect("poll");
        }
    }

    /// Subscribes and waits until the subscription is in effect (see
    /// [`Peer::subscribe_synced`]); over tcpq, until connected first.
    pub fn subscribe_synced(&mut self, channel: &str) {
        self.lcm.subscribe(channel).expect("subscribe");
        self.wait_connected(REPLY);
        self.lcm.publish(channel, b"sync").expect("publish sync marker");
        self.wait_for(REPLY, |r| r.channel == channel && r.data == b"sync");
    }

    /// Waits for a message on `channel`.
    pub fn recv_on(&mut self, channel: &str, timeout: Duration) -> daemonproxy::procman::Received {
        self.wait_for(timeout, |r| r.channel == channel)
    }

    /// Drives the endpoint until it is connected (tcpq); panics after `timeout`.
    pub fn wait_connected(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.lcm.connected() {
            assert!(Instant::now() < deadline, "not connected within {timeout:?}");
            let _ = self.try_wait_for(Duration::from_millis(20), |_| false);
        }
    }
}
