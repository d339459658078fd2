//! Session-level commands (docs/protocol.md §3): `echo`, `exit`, `terminate`,
//! `chdir`, `statedump` argument handling, and the end of an interactive
//! session (docs/protocol.md §7.2, docs/protocol.md §8.4).

mod util;
use util::*;

#[test]
fn echo_variants() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("echo", &[]);
    dp.cmd("echo\t", &[]);
    dp.cmd("echo\ta\t\tb", &["a\t\tb"]);
    dp.cmd("echo\t  spaced  ", &["  spaced  "]);
    dp.cmd("echo\t#not a comment", &["#not a comment"]);
    dp.cmd("echo\t\t", &["\t"]);
    dp.cmd("echo\tservice.state\tfake", &["service.state\tfake"]);
}

#[test]
fn exit_ends_the_session_and_drops_later_lines() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("echo\tbefore", &["before"]);
    dp.send_raw(b"exit\necho\tafter\n");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(0), "exit code after exit: {}", describe(&st));
    let rest = dp.read_to_eof(T);
    assert!(rest.is_empty(), "nothing after exit: {rest:?}");
    dp.expect_stderr("info: interactive session ended");
    dp.expect_stderr("info: daemonproxy exiting");
}

#[test]
fn exit_ignores_arguments() {
    let mut dp = Dp::interactive(&[]);
    dp.send("exit\tnow\tplease");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(0));
}

#[test]
fn eof_ends_session_with_code_0() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("echo\tx", &["x"]);
    let (st, rest) = dp.finish();
    assert_eq!(st.code(), Some(0));
    assert!(rest.is_empty(), "{rest:?}");
    dp.expect_stderr("info: interactive session ended");
    dp.expect_stderr("info: daemonproxy exiting");
    let err = dp.stderr_lines();
    let a = err.iter().position(|l| l == "info: interactive session ended").unwrap();
    let b = err.iter().position(|l| l == "info: daemonproxy exiting").unwrap();
    assert!(a < b, "session ended is logged before exiting: {err:?}");
}

#[test]
fn partial_last_line_under_i_is_ignored() {
    let mut dp = Dp::interactive(&[]);
    dp.send_raw(b"echo\tcomplete\necho\tpartial");
    dp.close_stdin();
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(0));
    let rest = dp.read_to_eof(T);
    assert_eq!(rest, vec!["complete".to_string()], "a final line without LF is ignored under -i");
    dp.expect_stderr("warning: Command ends with EOF... ignored");
}

fn terminate_code(arg: &str) -> i32 {
    let mut dp = Dp::interactive(&[]);
    dp.send(&format!("terminate\t{arg}"));
    let st = dp.wait_exit(T);
    dp.expect_stderr("info: daemonproxy exiting");
    st.code().unwrap_or_else(|| panic!("terminate {arg}: {}", describe(&st)))
}

#[test]
fn terminate_exit_codes() {
    assert_eq!(terminate_code("0"), 0);
    assert_eq!(terminate_code("7"), 7);
    assert_eq!(terminate_code("263"), 7);
    assert_eq!(terminate_code("-1"), 255);
    assert_eq!(terminate_code("256"), 0);
}

#[test]
fn terminate_leaves_services_running_and_names_them() {
    let mut dp = Dp::interactive(&[]);
    dp.args("zeta", "sleep\t20");
    dp.args("alpha", "sleep\t20");
    let pz = dp.start("zeta");
    let pa = dp.start("alpha");
    dp.send("terminate\t3");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(3));
    dp.expect_stderr("info: daemonproxy exiting");
    dp.expect_stderr(&format!("warning: service 'alpha' running as pid {pa}"));
    dp.expect_stderr(&format!("warning: service 'zeta' running as pid {pz}"));
    let err = dp.stderr_lines();
    let ia = err.iter().position(|l| l.starts_with("warning: service 'alpha'")).unwrap();
    let iz = err.iter().position(|l| l.starts_with("warning: service 'zeta'")).unwrap();
    assert!(ia < iz, "running services are listed by name: {err:?}");
    // services are not signalled
    assert!(alive(pa) && alive(pz), "services must survive terminate");
    kill(pa, libc::SIGKILL);
    kill(pz, libc::SIGKILL);
}

#[test]
fn terminate_runs_at_end_of_pass_after_flushing_output() {
    let mut dp = Dp::interactive(&[]);
    dp.send_raw(b"echo\tone\nterminate\t5\n");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(5));
    let rest = dp.read_to_eof(T);
    assert_eq!(rest.first().map(|s| s.as_str()), Some("one"), "output before terminate is flushed: {rest:?}");
}

#[test]
fn chdir_changes_cwd_for_paths_and_services() {
    let dir = TempDir::new("chdir");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let sub = std::fs::canonicalize(dir.join("sub")).unwrap();
    let mut dp = Dp::interactive_in(dir, &[]);
    dp.cmd("chdir\tsub", &[]);
    dp.cmd("fd.open\tf\twrite,create\tfile.txt", &["fd.state\tf\tfile\twrite,create\tfile.txt"]);
    assert!(dp.dir.exists("sub/file.txt"), "relative fd.open path uses the new cwd");
    dp.args("pwd", "sh\t-c\tpwd -P > pwd.txt");
    dp.start("pwd");
    dp.wait_match("service.state\tpwd\tdown\t*\t*\texit\t0\t*\t*", T);
    assert_eq!(dp.dir.read("sub/pwd.txt").trim_end(), sub.to_str().unwrap(), "services start in the new cwd");
    // absolute path
    let abs = sub.to_str().unwrap().to_string();
    dp.cmd(&format!("chdir\t{abs}"), &[]);
    dp.cmd("chdir\t..", &[]);
    dp.cmd("fd.open\tg\twrite,create\ttop.txt", &["fd.state\tg\tfile\twrite,create\ttop.txt"]);
    assert!(dp.dir.exists("top.txt"));
}

#[test]
fn chdir_errors() {
    let dir = TempDir::new("chdir-err");
    dir.write("plain", "x");
    let mut dp = Dp::interactive_in(dir, &[]);
    dp.cmd_err("chdir\t/nonexistent", "chdir failed: No such file or directory");
    dp.cmd_err("chdir\t", "chdir failed: No such file or directory");
    dp.cmd_err("chdir\tplain", "chdir failed: Not a directory");
    dp.cmd_err("chdir", "missing path argument");
    dp.cmd_err("chdir\t.\t", "unexpected argument after path");
    // the cwd did not change
    dp.cmd("fd.open\tf\tread\tplain", &["fd.state\tf\tfile\tread\tplain"]);
}

#[test]
fn std_handles_under_i_point_to_dev_null() {
    // docs/protocol.md §6.2: -i re-points stdin/stdout to /dev/null duplicates; services
    // using them cannot read the command stream or write into the events
    let mut dp = Dp::interactive(&[]);
    dp.args("leak", "sh\t-c\techo LEAK; cat > got.txt");
    dp.fds("leak", "stdin\tstdout\tnull");
    let pid = dp.start("leak");
    dp.send("echo\tnot for the service");
    dp.wait_match(&format!("service.state\tleak\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    let lines = dp.sync();
    assert!(!dp.seen.iter().any(|l| l == "LEAK"), "service output leaked into the protocol stream");
    assert!(!lines.iter().any(|l| l == "LEAK"));
    assert_eq!(dp.dir.read("got.txt"), "", "service read the command stream");
    assert!(dp.seen.iter().any(|l| l == "not for the service"));
    let dump = dp.statedump();
    assert!(dump.contains(&"fd.state\tstdin\tfile\tread\tunknown".to_string()), "{dump:#?}");
    assert!(dump.contains(&"fd.state\tstdout\tfile\twrite\tunknown".to_string()), "{dump:#?}");
}
