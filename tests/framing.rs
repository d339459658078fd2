//! Framing and error lines (docs/protocol.md §2): unknown commands, the line
//! length limit, comments and blank lines, name rules, missing and extra
//! arguments, CRLF (E1), and the exact `, for command "..."` suffix with
//! its log lines.

mod util;
use util::*;

#[test]
fn unknown_command_has_no_suffix_and_logs_once() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("bogus", &["error\tUnknown command: bogus"]);
    dp.cmd("bogus.cmd\targ1\targ2", &["error\tUnknown command: bogus.cmd"]);
    // lookup is exact and case-sensitive
    dp.cmd("ECHO\tx", &["error\tUnknown command: ECHO"]);
    dp.cmd("echox\ty", &["error\tUnknown command: echox"]);
    // the daemon goes on with the next line
    dp.cmd("echo\tstill here", &["still here"]);
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
    for name in ["bogus", "bogus.cmd", "ECHO", "echox"] {
        let l = format!("error: controller[0] sent unknown command {name}");
        assert_eq!(dp.stderr_count(&l), 1, "log line {l:?} once; stderr:\n{:?}", dp.stderr_lines());
    }
    // no "command failed" log for unknown commands
    assert!(
        !dp.stderr_lines().iter().any(|l| l.contains("command failed")),
        "unknown commands are not 'command failed': {:?}",
        dp.stderr_lines()
    );
}

#[test]
fn line_of_5000_bytes_is_rejected_and_next_line_runs() {
    let mut dp = Dp::interactive(&[]);
    let long = format!("echo\t{}", "x".repeat(4995));
    assert_eq!(long.len(), 5000);
    dp.send(&long);
    dp.send("echo\tnext");
    dp.sync_expect(&["error\tline too long", "next"]);
    // a long line followed by another command in the same write
    let mut raw = format!("echo\t{}echo\tinside", "y".repeat(3000)).into_bytes();
    raw.extend_from_slice(b"\necho\tok\n");
    dp.send_raw(&raw);
    dp.sync_expect(&["error\tline too long", "ok"]);
    dp.expect_stderr("error: controller[0] command exceeds buffer size");
    assert!(dp.running());
}

#[test]
fn line_length_boundary_1023_and_1024() {
    let mut dp = Dp::interactive(&[]);
    let text = "a".repeat(1018);
    let ok = format!("echo\t{text}");
    assert_eq!(ok.len(), 1023);
    dp.cmd(&ok, &[&text]);
    let bad = format!("echo\t{}", "b".repeat(1019));
    assert_eq!(bad.len(), 1024);
    dp.cmd(&bad, &["error\tline too long"]);
    dp.cmd(&ok, &[&text]);
}

#[test]
fn long_comment_line_gives_nothing() {
    let mut dp = Dp::interactive(&[]);
    dp.send(&format!("#{}", "c".repeat(1100)));
    dp.send(&format!("#echo\t{}", "c".repeat(3000)));
    dp.sync_expect(&[]);
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
    assert!(
        !dp.stderr_lines().iter().any(|l| l.contains("exceeds buffer size")),
        "a too-long #-line must not be logged: {:?}",
        dp.stderr_lines()
    );
}

#[test]
fn comments_and_blank_lines_are_ignored() {
    let mut dp = Dp::interactive(&[]);
    dp.send("#");
    dp.send("# a comment");
    dp.send("#echo\tx");
    dp.send("#bogus");
    dp.send("");
    dp.send(" ");
    dp.send("\t");
    dp.send(" \t \t ");
    dp.send_raw(b"\0\n");
    dp.send_raw(b" \0\t\0 \n");
    dp.send_raw(b"\r\n");
    dp.send_raw(b" \r\t\r\n");
    dp.sync_expect(&[]);
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
    assert!(
        !dp.stderr_lines().iter().any(|l| l.contains("unknown command")),
        "ignored lines are not unknown commands: {:?}",
        dp.stderr_lines()
    );
}

#[test]
fn leading_whitespace_is_not_skipped() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd(" echo\tx", &["error\tUnknown command:  echo"]);
    dp.cmd("\techo\tx", &["error\tUnknown command: "]);
    dp.cmd("  statedump", &["error\tUnknown command:   statedump"]);
    dp.expect_stderr("error: controller[0] sent unknown command  echo");
}

#[test]
fn control_characters_in_names_are_invalid() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.args\tfo\x01o\ttrue", "Invalid service name");
    dp.cmd_err("service.tags\tfoo\x7f", "Invalid service name");
    dp.cmd_err("service.tags\tfo\x1bo\tx", "Invalid service name");
    dp.cmd_err("service.args\tfoo bar\ttrue", "Invalid service name");
    dp.cmd_err("service.args\tfoo/bar\ttrue", "Invalid service name");
    dp.cmd_err("service.args\tfoo+bar\ttrue", "Invalid service name");
    dp.cmd_err("service.args\tfoo:bar\ttrue", "Invalid service name");
    dp.cmd_err("fd.pipe\tp\x02r\tp.w", "Invalid file descriptor name");
    dp.cmd_err("fd.pipe\tp.r\tp\x7fw", "Invalid file descriptor name");
    dp.cmd_err("fd.open\tf\x03\tread\t/dev/null", "Invalid file descriptor name");
    dp.cmd_err("fd.delete\tx y", "Invalid file descriptor name");
    // '_' is a name character
    dp.cmd("service.tags\tfoo_bar", &["service.tags\tfoo_bar\t"]);
    dp.cmd("service.delete\tfoo_bar", &["service.state\tfoo_bar\tdeleted\t-\t-\t-\t-\t-\t-"]);
    // nothing was created
    let dump = dp.statedump();
    assert!(!dump.iter().any(|l| l.starts_with("service.")), "no service created: {dump:?}");
    dp.cmd("echo\tstill here", &["still here"]);
}

#[test]
fn name_length_31_ok_32_invalid() {
    let mut dp = Dp::interactive(&[]);
    let n31: String = "Az09._-_".chars().cycle().take(31).collect();
    let n32: String = "Az09._-_".chars().cycle().take(32).collect();
    dp.cmd(&format!("service.tags\t{n31}\tt"), &[&format!("service.tags\t{n31}\tt")]);
    dp.cmd_err(&format!("service.tags\t{n32}\tt"), "Invalid service name");
    dp.cmd_err(&format!("service.args\t{n32}\ttrue"), "Invalid service name");
    let r31 = format!("r{}", &n31[1..]);
    dp.cmd(
        &format!("fd.pipe\t{r31}\t{n31}"),
        &[&format!("fd.state\t{r31}\tpipe\tfrom\t{n31}"), &format!("fd.state\t{n31}\tpipe\tto\t{r31}")],
    );
    dp.cmd_err(&format!("fd.pipe\t{n32}\tw"), "Invalid file descriptor name");
    dp.cmd_err(&format!("fd.open\t{n32}\tread\t/dev/null"), "Invalid file descriptor name");
    // the single valid characters
    dp.cmd("service.tags\t-", &["service.tags\t-\t"]);
    dp.cmd("service.tags\t.", &["service.tags\t.\t"]);
}

#[test]
fn absent_and_empty_names() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("service.tags", "Expected service name");
    dp.cmd_err("service.tags\t", "Expected service name");
    dp.cmd_err("service.args", "Expected service name");
    dp.cmd_err("service.start", "Expected service name");
    dp.cmd_err("service.delete\t", "Expected service name");
    dp.cmd_err("fd.delete", "Expected file descriptor name");
    dp.cmd_err("fd.delete\t", "Expected file descriptor name");
    dp.cmd_err("fd.pipe\ta", "Expected file descriptor name");
    dp.cmd_err("fd.pipe\t\tb", "Expected file descriptor name");
    dp.cmd_err("log.dest\tfd", "Expected file descriptor name");
    dp.cmd_err("service.start\tnope", "No such service");
    dp.cmd_err("service.signal\tnope\tSIGTERM", "No such service");
    dp.cmd_err("service.delete\tnope", "No such service");
    dp.cmd_err("fd.delete\tnope", "No such file descriptor");
}

#[test]
fn missing_and_extra_arguments() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("chdir\ta\tb", "unexpected argument after path");
    dp.cmd_err("chdir", "missing path argument");
    dp.cmd_err("fd.open\tf", "missing flags argument");
    dp.cmd_err("fd.open\tf\tread", "missing path argument");
    dp.cmd_err("fd.open\tf\tread\t/dev/null\textra", "unexpected argument after path");
    dp.cmd_err("fd.socket\ts", "missing flags argument");
    dp.cmd_err("fd.socket\ts\tunix\tx.sock\textra", "unexpected argument after address");
    dp.cmd_err("log.dest", "missing argument");
    dp.cmd_err("signal.clear", "Expected signal argument");
    dp.cmd_err("signal.clear\tSIGHUP", "Expected integer");
    dp.cmd_err("terminate", "Expected integer");
    dp.cmd_err("terminate\t1x", "Expected integer");
    dp.cmd_err("terminate\t+1", "Expected integer");
    dp.cmd_err("terminate\t 1", "Expected integer");
    dp.cmd_err("terminate\t", "Expected integer");
    dp.cmd_err("terminate\t9223372036854775808", "Expected integer");
    dp.cmd_err("terminate\t1.0", "Expected integer");
    dp.cmd("service.args\tfoo\ttrue", &["service.args\tfoo\ttrue"]);
    dp.cmd_err("service.auto_up\tfoo", "Expected integer");
    dp.cmd_err("service.signal\tfoo", "Expected signal argument");
    dp.cmd_err("service.signal\tfoo\t", "Expected signal argument");
    // surplus fields are ignored where the command does not complain
    dp.cmd("service.delete\tfoo\textra", &["service.state\tfoo\tdeleted\t-\t-\t-\t-\t-\t-"]);
    dp.cmd("echo\tstill here", &["still here"]);
}

#[test]
fn crlf_line_ends_drop_one_cr() {
    let mut dp = Dp::interactive(&[]);
    dp.send_raw(b"echo\tx\r\n");
    dp.sync_expect(&["x"]);
    dp.send_raw(b"service.args\tcr\ttrue\r\n");
    dp.sync_expect(&["service.args\tcr\ttrue"]);
    dp.send_raw(b"bogus\r\n");
    dp.sync_expect(&["error\tUnknown command: bogus"]);
    dp.send_raw(b"statedump\r\n");
    let dump = dp.sync();
    assert!(dump.iter().any(|l| l == "service.args\tcr\ttrue"), "statedump\\r works: {dump:?}");
    // only one CR is dropped
    dp.send_raw(b"echo\ty\r\r\n");
    dp.sync_expect(&["y\r"]);
    // an error line quotes the command without the CR
    dp.send_raw(b"chdir\t/nonexistent\r\n");
    dp.sync_expect(&[&err_for("chdir failed: No such file or directory", "chdir\t/nonexistent")]);
}

/// A failing `chdir` line of exactly `len` bytes.
fn chdir_line(len: usize) -> String {
    let l = format!("chdir\t/nx{}", "p".repeat(len - 9));
    assert_eq!(l.len(), len);
    l
}

#[test]
fn for_command_suffix_29_30_31_bytes() {
    let mut dp = Dp::interactive(&[]);
    let msg = "chdir failed: No such file or directory";
    let l29 = chdir_line(29);
    dp.cmd(&l29, &[&format!("error\t{msg}, for command \"{l29}\"")]);
    let l30 = chdir_line(30);
    dp.cmd(&l30, &[&format!("error\t{msg}, for command \"{l30}...\"")]);
    let l31 = chdir_line(31);
    dp.cmd(&l31, &[&format!("error\t{msg}, for command \"{}...\"", &l31[..30])]);
    // TABs stay literal inside the quotes
    let tabbed = "fd.open\tf2\tbogus\t/dev/null/long/path";
    dp.cmd(tabbed, &["error\tunknown flag \"bogus\", for command \"fd.open\tf2\tbogus\t/dev/null/lon...\""]);
}

#[test]
fn failed_command_log_lines() {
    let mut dp = Dp::interactive(&[]);
    let msg = "chdir failed: No such file or directory";
    let lines: Vec<String> = [20usize, 89, 90, 91, 200].iter().map(|n| chdir_line(*n)).collect();
    for l in &lines {
        dp.cmd_err(l, msg);
    }
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
    let err = dp.stderr_lines();
    for l in &lines {
        let first = log_failed(0, l);
        let i = err
            .iter()
            .position(|e| *e == first)
            .unwrap_or_else(|| panic!("log line {:?} missing; stderr:\n{err:#?}", vis(&first)));
        assert_eq!(err.get(i + 1).map(|s| s.as_str()), Some(log_with_error(msg).as_str()), "second log line");
    }
    // spot-check the literal forms
    assert!(err.contains(&format!("error: controller[0] command failed: '{}'", lines[1])));
    assert!(err.contains(&format!("error: controller[0] command failed: '{}'...", lines[2])));
    assert!(err.contains(&format!("error: controller[0] command failed: '{}'...", &lines[3][..90])));
}

#[test]
fn bad_input_in_one_burst_each_answered_in_order() {
    let mut dp = Dp::interactive(&[]);
    let mut raw = Vec::new();
    raw.extend_from_slice(b"nope\n");
    raw.extend_from_slice(format!("echo\t{}\n", "z".repeat(5000)).as_bytes());
    raw.extend_from_slice(b"service.tags\tbad\x01name\n");
    raw.extend_from_slice(format!("service.tags\t{}\n", "n".repeat(32)).as_bytes());
    raw.extend_from_slice(b"chdir\ta\tb\n");
    raw.extend_from_slice(b"echo\tcr\r\n");
    raw.extend_from_slice(b"echo\tend\n");
    dp.send_raw(&raw);
    dp.sync_expect(&[
        "error\tUnknown command: nope",
        "error\tline too long",
        &err_for("Invalid service name", "service.tags\tbad\x01name"),
        &err_for("Invalid service name", &format!("service.tags\t{}", "n".repeat(32))),
        &err_for("unexpected argument after path", "chdir\ta\tb"),
        "cr",
        "end",
    ]);
}
