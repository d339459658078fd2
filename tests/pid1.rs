//! daemonproxy as PID 1 (docs/protocol.md §8, issue 4): the real binary runs as
//! the init of a fresh PID namespace (`unshare --pid --fork --kill-child
//! --mount-proc`), and the tests check what an init must do: reap every
//! orphan, survive the counted signals and the loss of every controller,
//! refuse `terminate` without an exit program, exec the exit program in
//! place (also on a fatal signal), stop a container cleanly, and end the
//! namespace through the power-off helper.
//!
//! Signals come from this (the parent) namespace, sent to the host pid of
//! the namespace's PID 1. Where the kernel refuses a PID namespace
//! (`unshare` fails with EPERM, e.g. not root) every test here fails and
//! says so: a test that could not run never counts as passed.

mod util;
use util::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;

/// The wrapper that makes the daemon PID 1 of a new namespace, with its own
/// /proc; `--kill-child` takes the namespace down with `unshare`.
const UNSHARE: [&str; 5] = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"];

/// The power-off helper of docs/protocol.md E8.
const POWEROFF: &str = env!("CARGO_BIN_EXE_daemonproxy-poweroff");

// ---------------------------------------------------------------------------
// Namespace helpers

/// `Some(reason)` when this kernel or container refuses PID namespaces
/// (EPERM); probed once. Any other failure of `unshare` is a test failure.
fn namespaces_denied() -> Option<String> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let out = Command::new(UNSHARE[0])
                .args(&UNSHARE[1..])
                .arg("true")
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", UNSHARE[0]));
            if out.status.success() {
                return None;
            }
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if err.contains("Operation not permitted") {
                return Some(format!("PID namespaces are not permitted here ({err})"));
            }
            panic!("`{} true` failed ({}): {err}", UNSHARE.join(" "), describe(&out.status));
        })
        .clone()
}

/// Returns from the test, with a message, when namespaces are refused.
macro_rules! need_namespaces {
    () => {
        if let Some(why) = namespaces_denied() {
            panic!("this test needs PID namespaces and could not run: {why} (run the suite as root)");
        }
    };
}

/// The value of a `/proc/PID/status` field (`NSpid`, `SigCgt`, ...).
fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// The pid of a host process inside its innermost PID namespace.
fn ns_pid_of(host: i32) -> Option<i32> {
    status_field(host, "NSpid")?.split_whitespace().last()?.parse().ok()
}

/// Whether signal `sig` is set in the `/proc/PID/status` mask `key`.
fn mask_has(host: i32, key: &str, sig: i32) -> bool {
    status_field(host, key).and_then(|m| u64::from_str_radix(&m, 16).ok()).is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim_end().to_string())
        .unwrap_or_default()
}

/// The host pid of the namespace's PID 1: the child of `unshare` (pid
/// `wrapper`), once it has become daemonproxy (its pid there is 1).
fn ns_init(wrapper: i32) -> i32 {
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_string();
    let mut init = 0;
    let found = wait_until(T, || match children(wrapper).first() {
        Some(&c) if ns_pid_of(c) == Some(1) && comm(c) == "daemonproxy" => {
            init = c;
            true
        }
        _ => false,
    });
    let kids: Vec<String> =
        children(wrapper).into_iter().map(|c| format!("{c} {:?} {:?}", ns_pid_of(c), comm(c))).collect();
    assert!(found, "no daemonproxy with pid 1 under unshare (pid {wrapper}) within {T:?}; children: {kids:?}");
    init
}

/// The host pid of namespace pid `ns_pid`, a direct child of PID 1 (host pid
/// `init`), as services are.
fn host_pid(init: i32, ns_pid: i32) -> i32 {
    children(init)
        .into_iter()
        .find(|&c| ns_pid_of(c) == Some(ns_pid))
        .unwrap_or_else(|| panic!("no child of PID 1 has namespace pid {ns_pid}"))
}

/// Whether a status is "ended by SIGNAL" as `unshare` reports its child's
/// death by that signal: util-linux re-raises the signal on itself (a shell
/// shows 128+N); an exit code of 128+N is accepted as the same report.
fn ended_by(st: &ExitStatus, sig: i32) -> bool {
    st.signal() == Some(sig) || st.code() == Some(128 + sig)
}

// ---------------------------------------------------------------------------
// A socket client (the control socket of `-S`)

struct Client {
    w: UnixStream,
    rx: Receiver<String>,
    token: usize,
}

impl Client {
    /// Connects to `path`, waiting (bounded) for the socket to appear.
    fn connect(path: &Path) -> Client {
        let mut s = None;
        let ok = wait_until(T, || {
            s = UnixStream::connect(path).ok();
            s.is_some()
        });
        assert!(ok, "cannot connect to control socket {}", path.display());
        let w = s.unwrap();
        let r = w.try_clone().expect("clone socket");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Client { w, rx, token: 0 }
    }

    fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).expect("write to control socket");
    }

    /// Sends `echo TOKEN`; returns the lines received before TOKEN.
    fn sync(&mut self) -> Vec<String> {
        self.token += 1;
        let tok = format!("pid1-client-token-{}", self.token);
        self.send(&format!("echo\t{tok}"));
        let end = Instant::now() + T;
        let mut v = Vec::new();
        loop {
            match self.rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(l) if l == tok => return v,
                Ok(l) => v.push(l),
                Err(_) => panic!("no echo {tok:?} from the control socket within {T:?}; got:\n{v:#?}"),
            }
        }
    }

    /// `statedump`: the current `service.state` line of every service.
    fn states(&mut self) -> HashMap<String, String> {
        self.send("statedump");
        self.sync().into_iter().filter(|l| l.starts_with("service.state\t")).map(|l| (field(&l, 1), l)).collect()
    }
}

// ---------------------------------------------------------------------------
// Orphans

/// A Perl program that leaves `n` double-forked orphans: each child forks
/// a grandchild and exits at once; the grandchild, now a child of PID 1,
/// lives 50 ms and exits. It fails unless every double fork worked.
fn orphan_maker(n: usize) -> String {
    format!(
        "/usr/bin/perl\t-e\tfor (1..{n}) {{ my $p = fork // die \"fork: $!\"; if (!$p) {{ my $q = fork // exit 1; \
         if (!$q) {{ select(undef, undef, undef, 0.05); exit 0 }} exit 0 }} waitpid($p, 0); \
         $? == 0 or die \"double fork failed\" }}"
    )
}

/// A Perl one-off that counts the processes of the namespace (its /proc)
/// and the zombies among them and writes `ZOMBIES PROCESSES` to `out`.
fn proc_census(out: &Path) -> String {
    let o = out.display();
    format!(
        "/usr/bin/perl\t-e\tmy ($z, $n) = (0, 0); for my $f (glob \"/proc/[0-9]*/stat\") {{ \
         open(my $h, \"<\", $f) or next; my $s = <$h>; defined $s or next; $s =~ /\\)\\s+(\\S)/ or next; \
         $n++; $z++ if $1 eq \"Z\" }} open(my $o, \">\", \"{o}.tmp\") or die; print $o \"$z $n\\n\"; \
         close $o; rename(\"{o}.tmp\", \"{o}\") or die"
    )
}

#[test]
fn pid1_reaps_a_thousand_double_forked_orphans() {
    need_namespaces!();
    if !Path::new("/usr/bin/perl").exists() {
        panic!("this test counts zombies with /usr/bin/perl, which is missing");
    }
    let mut dp = Dp::interactive_under(&UNSHARE, TempDir::new("p1o"), &["-c", "/dev/null"]);
    let init = ns_init(dp.pid());

    dp.args("keep", "sleep\t1000");
    let keep = dp.start("keep");
    let keep_host = host_pid(init, keep);

    dp.args("forker", &orphan_maker(1000));
    dp.start("forker");
    dp.wait_match("service.state\tforker\tdown\t*\t*\texit\t0\t*\t*", secs(20));

    // Every orphan must be gone: neither a zombie nor still running. The
    // namespace then holds PID 1, `keep` and the census itself.
    let census = dp.dir.join("census");
    dp.args("census", &proc_census(&census));
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        let _ = std::fs::remove_file(&census);
        dp.start("census");
        dp.wait_match("service.state\tcensus\tdown\t*\t*\texit\t0\t*\t*", T);
        last = std::fs::read_to_string(&census).unwrap_or(last).trim().to_string();
        if last == "0 3" {
            break;
        }
        assert!(
            t0.elapsed() < secs(10),
            "orphans not all reaped 10 s after the forker exited: census (zombies processes) = {last:?}"
        );
        thread::sleep(ms(50));
    }

    // The supervised service was not disturbed: started once, up since.
    let keep_lines: Vec<String> = dp.seen.iter().filter(|l| l.starts_with("service.state\tkeep\t")).cloned().collect();
    assert_lines(
        &keep_lines,
        &["service.state\tkeep\tstart\t*\t-\t-\t-\t-\t-", &format!("service.state\tkeep\tup\t*\t{keep}\t-\t-\t0\t-")],
        "service keep's events while orphans were reaped",
    );
    let dump = dp.statedump();
    let want = format!("service.state\tkeep\tup\t*\t{keep}\t-\t-\t*\t-");
    assert!(dump.iter().any(|l| matches(&want, l)), "statedump lacks {:?}:\n{dump:#?}", vis(&want));
    assert!(alive(keep_host) && host_pid(init, keep) == keep_host, "keep's process is gone");
    assert!(alive(init) && dp.running(), "PID 1 is gone");
}

// ---------------------------------------------------------------------------
// Counted signals, terminate, exec-on-exit

/// An exit program that records its pid, arguments and the two variables
/// in `out`, then exits 7.
fn recorder(dir: &TempDir) -> (String, std::path::PathBuf) {
    let out = dir.join("exit-program.out");
    let script = dir.script(
        "exit-program",
        &format!(
            "#!/bin/sh\n{{ echo \"pid=$$\"; echo \"args=$*\"; echo \"code=$DAEMONPROXY_EXITCODE\"; \
             echo \"error=$DAEMONPROXY_ERROR\"; }} > '{o}.tmp'\nmv '{o}.tmp' '{o}'\nexit 7\n",
            o = out.display()
        ),
    );
    (script.display().to_string(), out)
}

#[test]
fn pid1_counts_signals_and_terminates_only_through_the_exit_program() {
    need_namespaces!();
    // No -c when /etc/daemonproxy.conf is absent: PID 1 then tries its
    // default configuration and, guarded, carries on.
    let default_conf = Path::new("/etc/daemonproxy.conf").exists();
    let args: &[&str] = if default_conf { &["-c", "/dev/null"] } else { &[] };
    let mut dp = Dp::interactive_under(&UNSHARE, TempDir::new("p1s"), args);
    let init = ns_init(dp.pid());
    if !default_conf {
        dp.sync();
        dp.expect_stderr("error: Failed to open config file \"/etc/daemonproxy.conf\": No such file or directory");
        dp.expect_stderr("fatal: (attempting to continue) Unable to process config file");
    }

    for (sig, name) in
        [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT"), (libc::SIGHUP, "SIGHUP"), (libc::SIGUSR1, "SIGUSR1")]
    {
        assert!(kill(init, sig), "kill({init}, {name})");
        let got = dp.sync_until(&format!("signal\t{name}\t*\t1"), T);
        assert_lines(&got, &[&format!("signal\t{name}\t*\t1")], &format!("after {name} to PID 1"));
        assert!(alive(init) && dp.running(), "PID 1 died of {name}");
    }
    // Each arrival is evented again with the higher count.
    for n in 2..=3 {
        assert!(kill(init, libc::SIGTERM));
        let pat = format!("signal\tSIGTERM\t*\t{n}");
        let got = dp.sync_until(&pat, T);
        assert_lines(&got, &[&pat], "after another SIGTERM");
    }
    assert!(alive(init) && dp.running(), "PID 1 died");

    // The guard (code 1) is armed: no exit without the code and an exit
    // program; the interactive EOF does not end PID 1 either.
    dp.cmd_err("terminate\t0", "terminate guard code required");
    dp.cmd_err("terminate\t0\t1", "cannot exit, and exec-on-exit is not configured");
    assert!(alive(init) && dp.running(), "PID 1 exited on a refused terminate");

    let (script, out) = recorder(&dp.dir);
    dp.send(&format!("terminate.exec_args\t{script}\targ1"));
    dp.sync();
    dp.send("terminate\t5\t1");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(7), "the namespace must end with the exit program's status; got {}", describe(&st));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "pid=1\nargs=arg1\ncode=5\nerror=terminated normally\n",
        "what the exit program saw"
    );
    dp.expect_stderr(&format!("warning: daemonproxy exec_on_exit to '{script}'"));
}

// ---------------------------------------------------------------------------
// Fatal signals

#[test]
fn pid1_fatal_signal_execs_the_exit_program() {
    need_namespaces!();
    // Once with -E (TSV args), once with terminate.exec_args.
    for (sig, name, by_option) in [(libc::SIGSEGV, "SIGSEGV", true), (libc::SIGILL, "SIGILL", false)] {
        let dir = TempDir::new("p1f");
        let (script, out) = recorder(&dir);
        let e = format!("{script}\tfatal\t{name}");
        let args: Vec<&str> = if by_option { vec!["-c", "/dev/null", "-E", &e] } else { vec!["-c", "/dev/null"] };
        let mut dp = Dp::interactive_under(&UNSHARE, dir, &args);
        let init = ns_init(dp.pid());
        dp.args("keep", "sleep\t1000");
        dp.start("keep");
        if !by_option {
            dp.send(&format!("terminate.exec_args\t{e}"));
        }
        dp.sync();
        assert!(kill(init, sig), "kill({init}, {name})");
        let st = dp.wait_exit(T);
        assert_eq!(
            st.code(),
            Some(7),
            "{name}: the namespace must end with the exit program's status; got {}",
            describe(&st)
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap_or_default(),
            format!("pid=1\nargs=fatal {name}\ncode=4\nerror=Received signal {name} ({sig})\n"),
            "what the exit program saw after {name}"
        );
        dp.expect_stderr(&format!("warning: daemonproxy exec_on_exit to '{script}'"));
    }
}

/// The same path for a panic in the loop (`debug.panic`, debug and
/// `fault-injection` builds): PID 1 execs the exit program, which sees the
/// panic's message; guarded without one, it goes on with its services.
#[test]
fn pid1_panic_execs_the_exit_program_or_goes_on() {
    need_namespaces!();
    let dir = TempDir::new("p1p");
    let (script, out) = recorder(&dir);
    let e = format!("{script}\tpanicked");
    let mut dp = Dp::interactive_under(&UNSHARE, dir, &["-c", "/dev/null", "-E", &e]);
    dp.args("keep", "sleep\t1000");
    dp.start("keep");
    dp.send("debug.panic");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(7), "the namespace must end with the exit program's status; got {}", describe(&st));
    let seen = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(seen.starts_with("pid=1\nargs=panicked\ncode=4\nerror=Rust panic: panicked at"), "{seen:?}");
    assert!(seen.contains("debug.panic from controller"), "{seen:?}");

    let mut dp = Dp::interactive_under(&UNSHARE, TempDir::new("p1q"), &["-c", "/dev/null"]);
    let init = ns_init(dp.pid());
    dp.args("keep", "sleep\t1000");
    let keep = dp.start("keep");
    for n in 1..=2 {
        dp.send("debug.panic");
        let count = || {
            let seen = |l: &&String| {
                l.starts_with("fatal: (attempting to continue) Rust panic: panicked at ")
                    && l.ends_with(": debug.panic from controller 0")
            };
            dp.stderr_lines().iter().filter(seen).count()
        };
        if !wait_until(T, || count() == n) {
            panic!("stderr never showed the panic {n} time(s); stderr:\n{}", dp.err.text());
        }
        dp.cmd("echo\tstill here", &["still here"]);
        assert!(alive(init) && dp.running(), "PID 1 died of a panic");
    }
    let dump = dp.statedump();
    let want = format!("service.state\tkeep\tup\t*\t{keep}\t-\t-\t*\t-");
    assert!(dump.iter().any(|l| matches(&want, l)), "statedump lacks {:?}:\n{dump:#?}", vis(&want));
}

#[test]
fn pid1_guarded_without_exit_program_survives_a_fatal_signal() {
    need_namespaces!();
    let mut dp = Dp::interactive_under(&UNSHARE, TempDir::new("p1g"), &["-c", "/dev/null"]);
    let init = ns_init(dp.pid());
    dp.args("keep", "sleep\t1000");
    let keep = dp.start("keep");
    let msg = "fatal: (attempting to continue) Received signal SIGSEGV (11)";
    for n in 1..=2 {
        assert!(kill(init, libc::SIGSEGV), "kill({init}, SIGSEGV)");
        if !wait_until(T, || dp.stderr_count(msg) == n) {
            panic!("stderr never showed {msg:?} {n} time(s); stderr:\n{}", dp.err.text());
        }
        // Still answering, still PID 1, services untouched.
        dp.cmd("echo\tstill here", &["still here"]);
        assert!(alive(init) && dp.running(), "PID 1 died of SIGSEGV");
    }
    let dump = dp.statedump();
    let want = format!("service.state\tkeep\tup\t*\t{keep}\t-\t-\t*\t-");
    assert!(dump.iter().any(|l| matches(&want, l)), "statedump lacks {:?}:\n{dump:#?}", vis(&want));
}

// ---------------------------------------------------------------------------
// Losing every controller

#[test]
fn pid1_survives_every_controller_killed_at_once() {
    need_namespaces!();
    let dir = TempDir::new("p1k");
    let sock = dir.join("ctl.sock");
    let conf = dir.write(
        "pid1.conf",
        "service.args\tctl1\tsh\t-c\twhile read -r l; do :; done\n\
         service.fds\tctl1\tcontrol.event\tcontrol.cmd\tstderr\n\
         service.start\tctl1\n\
         service.args\tctl2\tsleep\t1001\n\
         service.fds\tctl2\tcontrol.event\tcontrol.cmd\tstderr\n\
         service.start\tctl2\n\
         service.args\twork\tsleep\t1000\n\
         service.start\twork\n\
         service.args\twork2\tsh\t-c\twhile :; do sleep 1; done\n\
         service.start\twork2\n",
    );
    let (conf, sockp) = (conf.display().to_string(), sock.display().to_string());
    let mut p = Proc::start_under(&UNSHARE, dir, &["-c", &conf, "-S", &sockp]);
    let init = ns_init(p.pid());

    // Everything up; the pids before.
    let mut before = HashMap::new();
    let ok = wait_until(T, || {
        let mut c = Client::connect(&sock);
        before = c.states();
        ["ctl1", "ctl2", "work", "work2"]
            .iter()
            .all(|n| before.get(*n).is_some_and(|l| matches(&format!("service.state\t{n}\tup\t*\t*\t-\t-\t*\t-"), l)))
    });
    assert!(ok, "services not all up: {before:#?}\nstderr:\n{}", p.err.text());
    let pid_of = |m: &HashMap<String, String>, n: &str| field_i64(&m[n], 4) as i32;

    // A socket client that stays connected (and reads events).
    let ready = p.dir.join("client-ready");
    let mut client = Command::new("/usr/bin/perl")
        .args([
            "-MIO::Socket::UNIX",
            "-e",
            "my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\"; $s->autoflush(1); \
             print $s \"echo\\tclient-ready\\n\"; while (my $l = <$s>) { \
             if ($l eq \"client-ready\\n\") { open(my $f, \">\", $ARGV[1]) or die; close $f } }",
            &sockp,
            &ready.display().to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn perl socket client");
    assert!(wait_until(T, || ready.exists()), "the socket client never got its echo");

    // SIGKILL to every controller, back to back.
    let victims =
        [host_pid(init, pid_of(&before, "ctl1")), host_pid(init, pid_of(&before, "ctl2")), client.id() as i32];
    for &v in &victims {
        assert!(kill(v, libc::SIGKILL), "kill({v}, SIGKILL)");
    }
    assert!(wait_until(T, || matches!(client.try_wait(), Ok(Some(_)))), "the socket client survived SIGKILL");

    // PID 1 lives and answers; the controllers are down, the rest untouched.
    let mut after = HashMap::new();
    let ok = wait_until(T, || {
        let mut c = Client::connect(&sock);
        after = c.states();
        ["ctl1", "ctl2"].iter().all(|n| {
            after.get(*n).is_some_and(|l| matches(&format!("service.state\t{n}\tdown\t*\t*\tsignal\tSIGKILL\t*\t*"), l))
        })
    });
    assert!(ok, "controller services not reported killed: {after:#?}\nstderr:\n{}", p.err.text());
    for n in ["work", "work2"] {
        let pid = pid_of(&before, n);
        let want = format!("service.state\t{n}\tup\t*\t{pid}\t-\t-\t*\t-");
        assert!(matches(&want, &after[n]), "{n} changed: {:?}, want {:?}", vis(&after[n]), vis(&want));
        assert!(alive(host_pid(init, pid)), "{n}'s process is gone");
    }
    assert!(alive(init) && p.running(), "PID 1 died; stderr:\n{}", p.err.text());
    assert!(!p.err.text().contains("fatal:"), "fatal log line; stderr:\n{}", p.err.text());
}

// ---------------------------------------------------------------------------
// The container stop controller

#[test]
fn pid1_container_stop_ends_with_the_main_service_status() {
    need_namespaces!();
    const GRACE: u64 = 2;
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped =
        std::fs::read_to_string(format!("{root}/controllers/container.conf")).expect("controllers/container.conf");
    for needle in ["GRACE=5", "\tcontrollers/container-stop.sh"] {
        assert!(shipped.contains(needle), "controllers/container.conf no longer has {needle:?}");
    }
    let conf = shipped
        .replace("GRACE=5", &format!("GRACE={GRACE}"))
        .replace("\tcontrollers/container-stop.sh", &format!("\t{root}/controllers/container-stop.sh"));
    let dir = TempDir::new("p1c");
    let conf = dir.write("container.conf", conf).display().to_string();
    let mut p = Proc::start_under(&UNSHARE, dir, &["-c", &conf]);
    let init = ns_init(p.pid());

    // Ready when the four services run with their traps in place: app
    // catches TERM, stubborn and the controller ignore it.
    let ready = || {
        let kids: Vec<(i32, String)> = children(init).into_iter().map(|c| (c, cmdline(c))).collect();
        let find = |pat: &str| kids.iter().find(|(_, c)| c.contains(pat)).map(|k| k.0);
        let app = find("exit 42").is_some_and(|c| mask_has(c, "SigCgt", libc::SIGTERM));
        let stubborn = find("trap '' TERM").is_some_and(|c| mask_has(c, "SigIgn", libc::SIGTERM));
        let web = find("sleep 1000").is_some();
        let stop = find("container-stop.sh").is_some_and(|c| mask_has(c, "SigIgn", libc::SIGTERM));
        app && stubborn && web && stop
    };
    if !wait_until(T, ready) {
        let kids: Vec<String> = children(init).into_iter().map(|c| format!("{c}: {}", cmdline(c))).collect();
        panic!("container services not ready: {kids:#?}\nstderr:\n{}", p.err.text());
    }

    let t0 = Instant::now();
    assert!(kill(init, libc::SIGTERM), "kill({init}, SIGTERM)");
    let st = p.wait_exit(secs(GRACE + 1));
    let took = t0.elapsed();
    let err = p.stderr_text();
    assert_eq!(st.code(), Some(42), "namespace status {} (after {took:?}); stderr:\n{err}", describe(&st));
    assert!(took <= secs(GRACE + 1), "stop took {took:?}");
    for want in [
        "container-stop: stopping (grace 2s)",
        "container-stop: grace period over: SIGKILL to stubborn",
        "container-stop: stopped; exit status 42",
    ] {
        assert!(err.lines().any(|l| l == want), "stderr lacks {want:?}:\n{err}");
    }
    // Only the controller itself is still up when it terminates.
    let running: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: service '")).collect();
    assert!(
        running.len() == 1 && running[0].starts_with("warning: service 'stop' running as pid "),
        "services still running at exit: {running:#?}\nstderr:\n{err}"
    );
}

// ---------------------------------------------------------------------------
// The power-off path

#[test]
fn pid1_poweroff_helper_ends_the_namespace() {
    need_namespaces!();
    for (mode, sig) in [("poweroff", libc::SIGINT), ("reboot", libc::SIGHUP)] {
        let mut dp = Dp::interactive_under(&UNSHARE, TempDir::new("p1p"), &["-c", "/dev/null"]);
        ns_init(dp.pid());
        dp.args("keep", "sleep\t1000");
        let keep = dp.start("keep");
        dp.send(&format!("terminate.exec_args\t{POWEROFF}\t-t\t1\t{mode}"));
        dp.sync();
        dp.send("terminate\t0\t1");
        let st = dp.wait_exit(T);
        assert!(
            ended_by(&st, sig),
            "{mode}: the namespace must end by signal {sig} (status {}); got {}; stderr:\n{}",
            128 + sig,
            describe(&st),
            dp.err.text()
        );
        dp.expect_stderr(&format!("warning: daemonproxy exec_on_exit to '{POWEROFF}'"));
        dp.expect_stderr(&format!("warning: service 'keep' running as pid {keep}"));
    }
}

/// Runs `sh -c SCRIPT` as process 1 of a new PID namespace (POWEROFF in
/// its environment as `$P`); returns its exit status and output.
fn in_namespace(script: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut c = Command::new(UNSHARE[0]);
    c.args(&UNSHARE[1..]).args(["sh", "-c", script]).env("P", POWEROFF).stdin(Stdio::null());
    c.env_remove("DAEMONPROXY_EXITCODE");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run unshare");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}

#[test]
fn poweroff_helper_refuses_unless_pid_1_or_exit_program_or_forced() {
    // Issue 16: run by hand outside process 1, one typo powered the host
    // off. Inside a PID namespace a wrongly accepted call only ends the
    // namespace (its init, sh here, dies of SIGINT), never the host.
    need_namespaces!();
    let (st, out) = in_namespace("\"$P\"; echo refused=$?", &[]);
    assert_eq!(st.code(), Some(0), "sh must survive a refused power-off: {}; output:\n{out}", describe(&st));
    assert!(out.contains("refused=2"), "exit status 2 expected:\n{out}");
    assert!(out.contains("refusing to poweroff this machine"), "the refusal says why:\n{out}");
    let (st, out) = in_namespace("\"$P\" -t 0 reboot; echo refused=$?", &[]);
    assert!(st.code() == Some(0) && out.contains("refused=2"), "reboot too: {}:\n{out}", describe(&st));
    // daemonproxy's exit program whose parent is process 1: it acts.
    let (st, out) = in_namespace("\"$P\" -t 0; echo returned=$?", &[("DAEMONPROXY_EXITCODE", "0")]);
    assert!(ended_by(&st, libc::SIGINT), "as exit program it must act: {}:\n{out}", describe(&st));
    // --force: it acts.
    let (st, out) = in_namespace("\"$P\" --force -t 0; echo returned=$?", &[]);
    assert!(ended_by(&st, libc::SIGINT), "--force must act: {}:\n{out}", describe(&st));
    // --help and --version answer on stdout with status 0 and do nothing.
    let (st, out) = in_namespace("\"$P\" --version && \"$P\" --help", &[]);
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(out.starts_with("daemonproxy-poweroff version ") && out.contains("usage: daemonproxy-poweroff"), "{out}");
}

#[test]
fn pid1_without_any_controller_exits_instead_of_idling() {
    // Issue 16 #6: a typo in `-c PATH` made PID 1 fall back to a missing
    // /etc/daemonproxy.conf and idle for ever, so a container hung until
    // SIGKILL. With no controller and no socket nothing can ever happen:
    // it says so and exits 3.
    need_namespaces!();
    let dir = TempDir::new("p1none");
    let args = ["-c", "/nonexistent/typo.conf"];
    let mut c = command_under(&UNSHARE, dir.path(), &args);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn unshare");
    let err = Collector::spawn(child.stderr.take().unwrap());
    let st = wait_child(&mut child, T).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("PID 1 without a controller idled instead of exiting; stderr:\n{}", err.text())
    });
    err.wait_eof(secs(2));
    let text = err.text();
    assert_eq!(st.code(), Some(3), "{}: {text}", describe(&st));
    assert!(text.contains("Cannot stat configfile \"/nonexistent/typo.conf\""), "{text}");
    assert!(text.contains("fatal: no controller and no control socket"), "{text}");
}
