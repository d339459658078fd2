//! `service.attach` (extension, issue 9): a process daemonproxy did not
//! start, watched through a pidfd: its exit is reported (status unknown
//! unless the kernel gives it to us), `service.signal` reaches it through
//! `pidfd_send_signal(2)`, and auto-up restarts it from `service.args`.

mod util;

use std::process::{Child, Command, Stdio};
use util::*;

/// `setsid sh -c 'echo $$ > FILE; exec sleep 600'` started by the test (so
/// not a child of daemonproxy); returns the child and the sleep's pid.
fn outside_process(dir: &TempDir, tag: &str) -> (Child, i32) {
    let file = dir.join(&format!("{tag}.pid"));
    let child = Command::new("setsid")
        .args(["sh", "-c", &format!("echo $$ > {}; exec sleep 600", file.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn setsid");
    let pid = read_pid(&file);
    assert!(
        wait_until(T, || std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with("sleep"))),
        "outside process did not exec sleep"
    );
    (child, pid)
}

/// The pid a process wrote to `file`, once it has.
fn read_pid(file: &std::path::Path) -> i32 {
    let mut pid = 0;
    let ok = wait_until(T, || {
        pid = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        pid > 0
    });
    assert!(ok, "no pid in {}", file.display());
    pid
}

#[test]
fn attached_process_is_signalled_seen_to_exit_and_restarted() {
    let mut dp = Dp::interactive(&[]);
    let (mut child, pid) = outside_process(&dp.dir, "ext");
    // Attaching creates the service and shows it up.
    let line =
        dp.cmd(&format!("service.attach\text\t{pid}"), &[&format!("service.state\text\tup\t*\t{pid}\t-\t-\t0\t-")]);
    assert!((field_i64(&line[0], 3) - mono()).abs() <= 1);
    dp.cmd_err(&format!("service.attach\tother\t{pid}"), "process is already attached");
    dp.cmd_err(&format!("service.attach\text\t{}", std::process::id()), "service is running");
    dp.cmd_err("service.delete\text", "service is running");
    let dump = dp.statedump();
    assert!(dump.iter().any(|l| matches(&format!("service.state\text\tup\t*\t{pid}\t-\t-\t*\t-"), l)));
    // Figures and queries see it like any running service.
    dp.cmd("service.stat\text", &[&format!("service.stat\text\t{pid}\tS\t*\t*\t*\t*\t*\t1\t*")]);
    dp.cmd("service.query\tstate=up", &[&format!("service.match\text\tup\t{pid}\t"), "service.query.end\t1"]);
    // Restart it from its args when it goes (the process is up: no start
    // now).
    dp.cmd("service.args\text\tsleep\t600", &["service.args\text\tsleep\t600"]);
    dp.cmd("service.auto_up\text\t0.05\talways", &["service.auto_up\text\t0.05\talways"]);
    // Signal 0 and a real one, through the pidfd.
    dp.cmd("service.signal\text\t0", &[]);
    dp.send("service.signal\text\tSIGTERM");
    // Not our child: the status is unknown (`exit\t-`).
    dp.wait_match(&format!("service.state\text\tdown\t*\t{pid}\texit\t-\t*\t*"), T);
    let st = child.wait().expect("wait for the outside process");
    if child.id() as i32 == pid {
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGTERM), "it died of our SIGTERM");
    }
    dp.expect("service.state\text\tstart\t*\t-\t-\t-\t-\t-");
    let up = dp.wait_match("service.state\text\tup\t*\t*\t-\t-\t0\t-", T);
    let new = field_i64(&up, 4) as i32;
    assert_ne!(new, pid);
    // The restarted process is our child: its exit status is known.
    dp.cmd("service.auto_up\text\t-", &["service.auto_up\text\t-"]);
    dp.send("service.signal\text\tSIGKILL");
    dp.wait_match(&format!("service.state\text\tdown\t*\t{new}\tsignal\tSIGKILL\t*\t*"), T);
    // A down service may be attached again (and a pending start dropped).
    let (mut child2, pid2) = outside_process(&dp.dir, "ext2");
    dp.cmd("service.start\text\t99999999", &["service.state\text\tstart\t99999999\t-\t-\t-\t-\t-"]);
    dp.cmd(&format!("service.attach\text\t{pid2}"), &[&format!("service.state\text\tup\t*\t{pid2}\t-\t-\t0\t-")]);
    dp.send("service.signal\text\tSIGKILL\tgroup");
    dp.wait_match(&format!("service.state\text\tdown\t*\t{pid2}\texit\t-\t*\t*"), T);
    let _ = child2.wait();
    dp.cmd_err("service.signal\text\tSIGTERM", "service is not running");
}

#[test]
fn attach_refusals() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.attach", "Expected service name");
    dp.cmd_err("service.attach\tx", "Expected integer");
    dp.cmd_err("service.attach\tx\tabc", "Expected integer");
    dp.cmd_err("service.attach\tx\t0", "invalid pid");
    dp.cmd_err("service.attach\tx\t-5", "invalid pid");
    dp.cmd_err("service.attach\tx\t4294967296", "invalid pid");
    // A pid that does not exist (above the kernel's pid_max).
    dp.cmd_err("service.attach\tx\t2147483647", "No such process");
    // One that existed and is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    dp.cmd_err(&format!("service.attach\tx\t{gone_pid}"), "No such process");
    // daemonproxy itself, and its own children.
    dp.cmd_err(&format!("service.attach\tx\t{}", dp.pid()), "process is daemonproxy");
    // Process 1 and daemonproxy's ancestors (issue 16): a shutdown
    // controller signalling every service would signal them.
    dp.cmd_err("service.attach\tx\t1", "process is process 1");
    dp.cmd_err(&format!("service.attach\tx\t{}", std::process::id()), "process is an ancestor of daemonproxy");
    let parent = nix::unistd::getppid().as_raw();
    if parent > 1 {
        dp.cmd_err(&format!("service.attach\tx\t{parent}"), "process is an ancestor of daemonproxy");
    }
    dp.args("kid", "sleep\t600");
    let kid = dp.start("kid");
    dp.cmd_err(&format!("service.attach\tx\t{kid}"), "process is a child of daemonproxy");
    // A thread that is not a thread-group leader: pidfd_open refuses it.
    let (mut py, tid) = {
        let dir = &dp.dir;
        let file = dir.join("tid");
        let c = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import threading, time, os\n\
                     def t():\n    open({:?}, 'w').write(str(threading.get_native_id())); time.sleep(600)\n\
                     threading.Thread(target=t, daemon=True).start(); time.sleep(600)",
                    file.display().to_string()
                ),
            ])
            .spawn()
            .unwrap();
        (c, read_pid(&file))
    };
    // (EINVAL on older kernels, ENOENT on newer ones.)
    let line = format!("service.attach\tx\t{tid}");
    dp.send(&line);
    let got = dp.sync();
    assert!(
        got == [err_for("pidfd_open failed: Invalid argument", &line)]
            || got == [err_for("pidfd_open failed: No such file or directory", &line)],
        "{got:?}"
    );
    let _ = py.kill();
    let _ = py.wait();
    // Nothing was created by the refusals.
    dp.cmd_err("service.stat\tx", "No such service");
    dp.send("service.signal\tkid\tSIGKILL");
    dp.wait_down("kid", T);
}

#[test]
fn status_is_known_once_the_process_became_our_child() {
    // With --subreaper, an attached grandchild whose parent dies becomes
    // our child: then the kernel gives us its exit status.
    let mut dp = Dp::interactive(&["--subreaper"]);
    dp.args("launcher", "sh\t-c\tsleep 600 & echo $! > bg.pid; exec sleep 600");
    let launcher = dp.start("launcher");
    let bg = read_pid(&dp.dir.join("bg.pid"));
    dp.cmd(&format!("service.attach\tbg\t{bg}"), &[&format!("service.state\tbg\tup\t*\t{bg}\t-\t-\t0\t-")]);
    dp.send("service.signal\tlauncher\tSIGKILL");
    dp.wait_match(&format!("service.state\tlauncher\tdown\t*\t{launcher}\tsignal\tSIGKILL\t*\t*"), T);
    dp.send("service.signal\tbg\tSIGTERM");
    dp.wait_match(&format!("service.state\tbg\tdown\t*\t{bg}\tsignal\tSIGTERM\t*\t*"), T);
}
