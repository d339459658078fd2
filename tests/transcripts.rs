//! The example exchanges of docs/protocol.md §3 (and docs/protocol.md §2.7), reproduced line for
//! line under `-i`; pids and timestamps are wildcards (`*`), timestamps
//! are additionally checked against the test's own monotonic clock.

mod util;
use std::net::TcpListener;
use util::*;

#[test]
fn s3_1_echo() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("echo\ta\t\tb", &["a\t\tb"]);
}

#[test]
fn s3_2_statedump() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.args\tbar\ta\tb\tc", &["service.args\tbar\ta\tb\tc"]);
    dp.signal(libc::SIGHUP);
    dp.sync_until("signal\tSIGHUP\t*\t1", T);
    dp.send("statedump");
    dp.send("echo\tdone");
    let first = dp.expect("fd.state\tcontrol.cmd\tspecial\twrite\tdaemonproxy command pipe");
    let _ = first;
    let rest = dp.wait_for("done", T, |l| l == "done");
    let n = rest.len();
    assert!(n >= 7, "{rest:?}");
    assert_lines(
        &rest[n - 7..],
        &[
            "service.state\tbar\tdown\t-\t-\t-\t-\t-\t-",
            "service.tags\tbar\t",
            "service.args\tbar\ta\tb\tc",
            "service.fds\tbar\tnull\tnull\tnull",
            "service.auto_up\tbar\t-",
            "signal\tSIGHUP\t*\t1",
            "done",
        ],
        "statedump example",
    );
    assert!(rest[..n - 7].iter().all(|l| l.starts_with("fd.state\t")), "{rest:#?}");
}

#[test]
fn s3_3_to_3_5_tags_args_fds() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("service.tags\tfoo\tcolor=blue", &["service.tags\tfoo\tcolor=blue"]);
    dp.cmd("service.tags\tfoo", &["service.tags\tfoo\t"]);
    dp.cmd("service.args\tfoo\t/bin/sleep\t1", &["service.args\tfoo\t/bin/sleep\t1"]);
    dp.cmd(
        "service.fds\tfoo\tnull\tlog.w\tlog.w",
        &["warning\tfd \"log.w\" is not yet defined", "service.fds\tfoo\tnull\tlog.w\tlog.w"],
    );
}

#[test]
fn s3_6_auto_up() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    let t0 = mono();
    dp.send("service.auto_up\tfoo\t1\talways");
    let s = dp.expect("service.state\tfoo\tstart\t*\t-\t-\t-\t-\t-");
    dp.expect("service.auto_up\tfoo\t1\talways");
    let u = dp.expect("service.state\tfoo\tup\t*\t*\t-\t-\t0\t-");
    let (ts, tu) = (field_i64(&s, 3), field_i64(&u, 3));
    assert!(t0 <= ts && ts <= tu && tu <= mono(), "{s:?} {u:?}");
    dp.cmd("service.auto_up\tfoo\t-", &["service.auto_up\tfoo\t-"]);
}

#[test]
fn s3_7_start() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "true");
    let now = mono();
    dp.send(&format!("service.start\tfoo\t{now}"));
    let s = dp.expect("service.state\tfoo\tstart\t*\t-\t-\t-\t-\t-");
    let u = dp.expect("service.state\tfoo\tup\t*\t*\t-\t-\t0\t-");
    let d = dp.expect("service.state\tfoo\tdown\t*\t*\texit\t0\t0\t0");
    assert!(field_i64(&s, 3) >= now && field_i64(&s, 3) <= now + 1, "{s:?}");
    assert_eq!(field(&u, 4), field(&d, 4));
    let later = mono() + 5;
    dp.cmd(&format!("service.start\tfoo\t{later}"), &[&format!("service.state\tfoo\tstart\t{later}\t-\t-\t-\t-\t-")]);
    dp.cmd("service.start\tfoo\t-", &["service.state\tfoo\tdown\t-\t-\t-\t-\t-\t-"]);
}

#[test]
fn s3_8_and_3_9_signal_delete() {
    let mut dp = Dp::interactive(&[]);
    dp.args("foo", "sleep\t20");
    let pid = dp.start("foo");
    dp.send("service.signal\tfoo\tSIGQUIT");
    dp.expect(&format!("service.state\tfoo\tdown\t*\t{pid}\tsignal\tSIGQUIT\t0\t0"));
    dp.cmd("service.delete\tfoo", &["service.state\tfoo\tdeleted\t-\t-\t-\t-\t-\t-"]);
}

#[test]
fn s3_10_and_3_11_socket_create_delete() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd(
        "socket.create\tx\t/run/dp.sock",
        &["error\tInvalid options, for command \"socket.create\tx\t/run/dp.sock\""],
    );
    dp.cmd("socket.delete", &[]);
}

#[test]
fn s3_12_fd_pipe() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\tlog.r\tlog.w", &["fd.state\tlog.r\tpipe\tfrom\tlog.w", "fd.state\tlog.w\tpipe\tto\tlog.r"]);
    dp.cmd(
        "fd.pipe\tt.1\tt.2\tunix,dgram",
        &["fd.state\tt.1\tpipe\tunix,dgram,to\tt.2", "fd.state\tt.2\tpipe\tunix,dgram,to\tt.1"],
    );
}

#[test]
fn s3_13_fd_open() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd(
        "fd.open\tapplog\twrite,create,append,mkdir\tlogs/app.log",
        &["fd.state\tapplog\tfile\twrite,append,create,mkdir\tlogs/app.log"],
    );
    dp.cmd(
        "fd.open\tf2\tbogus\t/dev/null",
        &["error\tunknown flag \"bogus\", for command \"fd.open\tf2\tbogus\t/dev/null\""],
    );
}

#[test]
fn s3_14_fd_socket_and_s2_7_error() {
    let mut dp = Dp::interactive(&[]);
    let port = TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    dp.cmd(
        &format!("fd.socket\tweb\ttcp,listen=11\t*:{port}"),
        &[&format!("fd.state\tweb\tsocket\tinet,stream,bind,listen=11\t*:{port}")],
    );
    // docs/protocol.md §2.7: a port that is in use (the spec uses 11203)
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let bp = busy.local_addr().unwrap().port();
    let line = format!("fd.socket\tfd2b\ttcp\t127.0.0.1:{bp}");
    // "fd.socket\tfd2b\ttcp\t127.0.0.1:" is 29 bytes: one port digit shows
    let want = format!(
        "error\tbind: Address already in use, for command \"fd.socket\tfd2b\ttcp\t127.0.0.1:{}...\"",
        &bp.to_string()[..1]
    );
    dp.cmd(&line, &[&want]);
}

#[test]
fn s3_15_fd_take() {
    let mut dp = Dp::interactive_socket(&[]);
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    dp.send_with_fd("fd.take\ttaken", fds[1]);
    dp.sync_expect(&["fd.state\ttaken\tfile\twrite\tunknown"]);
    // SAFETY: closing our own pipe ends.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    dp.cmd_err("fd.take\tagain", "No ancillary file descriptor received");
}

#[test]
fn s3_16_and_3_17_fd_delete_chdir() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\ttemp.r\ttemp.w", &["fd.state\ttemp.r\tpipe\tfrom\ttemp.w", "fd.state\ttemp.w\tpipe\tto\ttemp.r"]);
    dp.cmd("fd.delete\ttemp.r", &["fd.state\ttemp.r\tdeleted"]);
    dp.cmd(
        "chdir\t/nonexistent",
        &["error\tchdir failed: No such file or directory, for command \"chdir\t/nonexistent\""],
    );
}

#[test]
fn s3_18_exit() {
    let mut dp = Dp::interactive(&[]);
    dp.send("exit");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(0));
    assert!(dp.read_to_eof(T).is_empty(), "connection closes");
}

#[test]
fn s3_19_and_3_20_log_filter_dest() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("log.filter", &["log.filter\tdebug"]);
    dp.cmd("log.filter\t-", &["log.filter\ttrace"]);
    dp.cmd("log.dest\tfd\tlog2.w", &["warning\tfd \"log2.w\" does not exist"]);
}

#[test]
fn s3_21_conn_event_timeout() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd(
        "conn.event_timeout\t5\t2",
        &["error\treset timeout is greater than close timeout, for command \"conn.event_timeout\t5\t2\""],
    );
}

#[test]
fn s3_22_signal_clear() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("signal.clear\tSIGUSR2\t1", &[]);
}

#[test]
fn s3_23_to_3_25_exec_args_guard_terminate() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("terminate.exec_args\t/sbin/rescue\t--now", &[]);
    dp.cmd("terminate.guard\t+\t77", &[]);
    dp.cmd("terminate.guard\t-\t78", &["error\tincorrect guard code, for command \"terminate.guard\t-\t78\""]);
    dp.cmd("terminate\t0\t12345", &["error\tincorrect terminate guard code, for command \"terminate\t0\t12345\""]);
    // disarm and leave normally
    dp.cmd("terminate.guard\t-\t77", &[]);
    dp.cmd("terminate.exec_args", &[]);
    dp.send("terminate\t0");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(0));
}
