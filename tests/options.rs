//! The command line (docs/protocol.md §9, docs/protocol.md §7.2, docs/protocol.md §8.4, docs/protocol.md §10.1): `--help`,
//! `--version`, option errors and their exit codes, `-c FILE`, `-c -`,
//! F16, `-i`, `-v`/`-q`.

mod util;
use std::io::Write;
use util::*;

/// daemonproxy 1.1's --help text, unchanged, after the version line; then
/// the options added since (issue 16: every option listed).
const HELP_TAIL: &str = "options:
  -c --config       FILENAME  Read command stream from FILENAME at startup
  -i --interactive            Use STDIN+STDOUT as a controller communication pipe
  -S --socket       PATH      Listen on PATH for controller connections
  -D --daemonize              Fork into the background
     --exit-guard   INTEGER   Guard against accidental termination
  -E --exit-exec    TSV_ARGS  exec() args in any trappable exit scenario
     --fd-pool      N[xM]     Pre-allocate N named handles [of M bytes each]
     --service-pool N[xM]     Pre-allocate N services [of M bytes each]
  -M --mlockall               Call mlockall() after allocating structures
  -v --verbose                Enable another level of logging output
  -q --quiet                  Suppress another level of logging output
  -h --help                   Quick usage synopsis
     --version                Print complete version information
extensions:
     --controller-pool N      Allow N controllers at once (default 16)
     --socket-allow-uid UID   Also serve control socket peers of UID
     --socket-mode  MODE      Control socket file mode (default 0600)
     --socket-group GROUP     Control socket file group
     --subreaper              Adopt orphaned descendants (outside PID 1)
     --setpgid                Start each service in a process group of its own
  Long options also take their value as --option=VALUE.
";

fn run(args: &[&str], stdin: &[u8]) -> (Proc, i32) {
    let (p, st) = run_in(TempDir::new("opt"), args, stdin, T);
    let code = st.code().unwrap_or_else(|| panic!("{args:?}: {}; stderr:\n{}", describe(&st), p.stderr_text()));
    (p, code)
}

fn check_help(args: &[&str]) {
    let (p, code) = run(args, b"");
    assert_eq!(code, 1, "{args:?} exits 1");
    let out = p.stdout_text();
    let (first, rest) = out.split_once('\n').unwrap_or_else(|| panic!("help output {out:?}"));
    let ver = first.strip_prefix("daemonproxy version ").unwrap_or_else(|| panic!("help line 1 {first:?}"));
    check_version(ver);
    assert_eq!(rest, format!("{HELP_TAIL}\n"), "help text of {args:?} (then one empty line)");
}

#[test]
fn help_text_and_exit_code() {
    check_help(&["-h"]);
    check_help(&["--help"]);
    // options act left to right: help wins before the mode check
    check_help(&["-i", "--help"]);
    check_help(&["-vh"]);
}

#[test]
fn version_layout() {
    let (p, code) = run(&["--version"], b"");
    assert_eq!(code, 1);
    let out = p.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 5, "version output: {out}");
    let ver = lines[0].strip_prefix("daemonproxy version ").unwrap_or_else(|| panic!("line 1 {:?}", lines[0]));
    check_version(ver);
    // " build timestamp: <unix seconds> (<YYYY-MM-DD hh:mm:ss>)"
    let bt = lines[1].strip_prefix(" build timestamp: ").unwrap_or_else(|| panic!("line 2 {:?}", lines[1]));
    let (secs_s, local) = bt.split_once(' ').unwrap_or_else(|| panic!("line 2 {:?}", lines[1]));
    assert!(!secs_s.is_empty() && secs_s.chars().all(|c| c.is_ascii_digit()), "line 2 {:?}", lines[1]);
    let b = local.as_bytes();
    assert!(
        b.len() == 21
            && b[0] == b'('
            && b[20] == b')'
            && b[5] == b'-'
            && b[8] == b'-'
            && b[11] == b' '
            && b[14] == b':'
            && b[17] == b':',
        "line 2 date {:?}",
        lines[1]
    );
    let git = lines[2].strip_prefix(" git HEAD: ").unwrap_or_else(|| panic!("line 3 {:?}", lines[2]));
    let id = git.strip_suffix(" (dirty)").unwrap_or(git);
    assert!(!id.is_empty() && !id.contains(' '), "line 3 {:?}", lines[2]);
    assert!(lines[3].contains("Copyright"), "line 4 {:?}", lines[3]);
    let has_range = lines[3]
        .as_bytes()
        .windows(9)
        .any(|w| w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[5..].iter().all(u8::is_ascii_digit));
    assert!(has_range, "copyright has a YYYY-YYYY range: {:?}", lines[3]);
    assert!(lines[4..].iter().any(|l| l.contains("LICENSE")), "a licence line mentions LICENSE: {out}");
    // the version agrees with the interactive banner
    let mut dp = Dp::interactive(&[]);
    let bver = check_banner_first(&dp.banner[0]);
    assert_eq!(bver, ver);
    dp.close_stdin();
}

fn check_fatal(args: &[&str], code: i32, msg: &str) {
    let (p, got) = run(args, b"");
    assert_eq!(got, code, "{args:?}; stderr:\n{}", p.stderr_text());
    let want = format!("fatal: {msg}");
    let err = p.stderr_lines();
    assert!(err.contains(&want), "{args:?}: stderr lacks {want:?}:\n{err:#?}");
    assert!(p.stdout_text().is_empty(), "{args:?}: nothing on stdout");
}

#[test]
fn option_errors_exit_2() {
    check_fatal(&["--bogus"], 2, "Unknown option --bogus  (see --help)");
    check_fatal(&["-i", "--bogus"], 2, "Unknown option --bogus  (see --help)");
    check_fatal(&["-X"], 2, "Unknown option -X  (see --help)");
    check_fatal(&["-iX"], 2, "Unknown option -X  (see --help)");
    check_fatal(&["--"], 2, "Unknown option --  (see --help)");
    check_fatal(&["--Help"], 2, "Unknown option --Help  (see --help)");
    check_fatal(&["-i", "extra"], 2, "Unexpected argument \"extra\"");
    check_fatal(&["--config"], 2, "Missing argument for --config");
    check_fatal(&["-c"], 2, "Missing argument for -c");
    check_fatal(&["-ic"], 2, "Missing argument for -c");
}

#[test]
fn mode_required() {
    check_fatal(&[], 2, "require -i or -c or -S");
    check_fatal(&["-v"], 2, "require -i or -c or -S");
    check_fatal(&["-q", "-"], 2, "require -i or -c or -S");
}

#[test]
fn config_file_must_be_statable() {
    check_fatal(&["-c", "missing.conf"], 2, "Cannot stat configfile \"missing.conf\"");
    check_fatal(&["--config", "/nonexistent/dp.conf"], 2, "Cannot stat configfile \"/nonexistent/dp.conf\"");
}

#[test]
fn config_file_runs_commands() {
    let dir = TempDir::new("conf");
    dir.write(
        "dp.conf",
        "# a comment\n\nfd.open\tf\twrite,create\tcreated.txt\necho\tnowhere\nbogus\nchdir\t/nonexistent\nterminate\t6\n",
    );
    let (p, st) = run_in(dir, &["-c", "dp.conf"], b"", T);
    assert_eq!(st.code(), Some(6), "stderr:\n{}", p.stderr_text());
    assert!(p.dir.exists("created.txt"));
    assert_eq!(p.stdout_text(), "", "a config controller has no output side");
    let err = p.stderr_lines();
    assert!(err.contains(&"error: controller[0] sent unknown command bogus".to_string()), "{err:#?}");
    assert!(err.contains(&log_failed(0, "chdir\t/nonexistent")), "{err:#?}");
    assert!(err.contains(&log_with_error("chdir failed: No such file or directory")), "{err:#?}");
}

#[test]
fn config_from_stdin() {
    let (p, code) = run(&["-c", "-"], b"fd.open\tf\twrite,create\tfrom-stdin.txt\nterminate\t5\n");
    assert_eq!(code, 5, "stderr:\n{}", p.stderr_text());
    assert!(p.dir.exists("from-stdin.txt"));
}

#[test]
fn config_without_final_lf_runs_every_line() {
    // F16: both buffered lines run, the last one despite the missing LF
    let dir = TempDir::new("nolf");
    dir.write("dp.conf", "fd.open\tf\twrite,create\ta.txt\nterminate\t7");
    let (p, st) = run_in(dir, &["-c", "dp.conf"], b"", T);
    assert_eq!(st.code(), Some(7), "stderr:\n{}", p.stderr_text());
    assert!(p.dir.exists("a.txt"));
    let err = p.stderr_lines();
    assert!(err.contains(&"warning: Command ends with EOF... processing anyway".to_string()), "{err:#?}");
    // a single line without LF
    let dir = TempDir::new("nolf1");
    dir.write("dp.conf", "terminate\t9");
    let (p, st) = run_in(dir, &["-c", "dp.conf"], b"", T);
    assert_eq!(st.code(), Some(9), "stderr:\n{}", p.stderr_text());
}

#[test]
fn config_from_stdin_without_final_lf() {
    let (p, code) = run(&["-c", "-"], b"fd.open\tf\twrite,create\tb.txt\nterminate\t8");
    assert_eq!(code, 8, "stderr:\n{}", p.stderr_text());
    assert!(p.dir.exists("b.txt"));
}

#[test]
fn config_ends_daemon_runs_on() {
    // the config controller goes away at EOF; daemonproxy keeps running
    let dir = TempDir::new("conf-on");
    dir.write("dp.conf", "fd.open\tf\twrite,create\tx.txt\n");
    let mut p = Proc::start_in(dir, &["-c", "dp.conf"]);
    assert!(wait_until(T, || p.dir.exists("x.txt")));
    std::thread::sleep(ms(300));
    assert!(p.running(), "daemonproxy -c must keep running after the file ends");
}

#[test]
fn interactive_and_config_together() {
    // -i is controller 0, -c controller 1; config broadcasts reach -i
    let dir = TempDir::new("ic");
    dir.write("dp.conf", "service.tags\tfromconf\tx\nbogus\n");
    let mut dp = Dp::interactive_in(dir, &["-c", "dp.conf"]);
    dp.wait_match("service.tags\tfromconf\tx", T);
    dp.expect_stderr("error: controller[1] sent unknown command bogus");
    let (st, _) = dp.finish();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn bundled_and_lone_dash() {
    let dir = TempDir::new("bundle");
    dir.write("dp.conf", "terminate\t4\n");
    let (p, st) = run_in(dir, &["-", "-vc", "dp.conf"], b"", T);
    assert_eq!(st.code(), Some(4), "stderr:\n{}", p.stderr_text());
    let dir = TempDir::new("bundle2");
    dir.write("dp.conf", "terminate\t3\n");
    let (p, st) = run_in(dir, &["-ic", "dp.conf"], b"", T);
    assert_eq!(st.code(), Some(3), "stderr:\n{}", p.stderr_text());
    assert!(p.stdout_text().starts_with("info\tdaemonproxy version "), "-i banner: {}", p.stdout_text());
    let (p, code) = run(&["--interactive"], b"echo\tlong form\n");
    assert_eq!(code, 0);
    assert!(p.stdout_text().ends_with("\nlong form\n"), "{}", p.stdout_text());
}

#[test]
fn interactive_eof_logs_and_exits_0() {
    let (p, code) = run(&["-i"], b"echo\thi\n");
    assert_eq!(code, 0);
    let out = p.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "banner + echo: {out}");
    assert_eq!(lines[5], BANNER_LAST);
    assert_eq!(lines[6], "hi");
    let err = p.stderr_lines();
    assert!(err.contains(&"info: interactive session ended".to_string()), "{err:#?}");
    assert!(err.contains(&"info: daemonproxy exiting".to_string()), "{err:#?}");
}

/// Runs `-i` + extra options with an unknown command and an echo, returns
/// stderr lines.
fn log_with(opts: &[&str]) -> Vec<String> {
    let mut args = vec!["-i"];
    args.extend_from_slice(opts);
    let (p, code) = run(&args, b"bogus\necho\tx\n");
    assert_eq!(code, 0);
    p.stderr_lines()
}

#[test]
fn verbosity_options() {
    let unknown = "error: controller[0] sent unknown command bogus".to_string();
    let exiting = "info: daemonproxy exiting".to_string();
    let debug_echo = "debug: controller[0] command: \"echo\tx\"".to_string();
    // default: info and up
    let d = log_with(&[]);
    assert!(d.contains(&unknown) && d.contains(&exiting), "{d:#?}");
    assert!(!d.iter().any(|l| l.starts_with("debug: ") || l.starts_with("trace: ")), "{d:#?}");
    // -v: debug too, one line per command
    let v = log_with(&["-v"]);
    assert!(v.contains(&debug_echo), "{v:#?}");
    let v2 = log_with(&["-vv"]);
    assert!(v2.contains(&debug_echo), "{v2:#?}");
    // -q: warning and up
    let q = log_with(&["-q"]);
    assert!(q.contains(&unknown), "{q:#?}");
    assert!(!q.iter().any(|l| l.starts_with("info: ") || l.starts_with("debug: ")), "{q:#?}");
    let q2 = log_with(&["-qq"]);
    assert!(q2.contains(&unknown), "{q2:#?}");
    let q3 = log_with(&["-qqq"]);
    assert!(!q3.contains(&unknown), "-qqq hides errors: {q3:#?}");
    let q4 = log_with(&["-qqqq"]);
    assert!(q4.is_empty(), "-qqqq shows nothing: {q4:#?}");
    // -v and -q cancel
    let vq = log_with(&["-v", "-q"]);
    assert!(vq.contains(&exiting) && !vq.iter().any(|l| l.starts_with("debug: ")), "{vq:#?}");
    let lf = run(&["-i", "-qq"], b"log.filter\n").0.stdout_text();
    assert!(lf.ends_with("\nlog.filter\twarning\n"), "-qq sets the filter to warning: {lf}");
}

#[test]
fn exit_in_config_stops_reading_the_file() {
    let dir = TempDir::new("conf-exit");
    dir.write("dp.conf", "fd.open\ta\twrite,create\ta.txt\nexit\nfd.open\tb\twrite,create\tb.txt\n");
    let mut p = Proc::start_in(dir, &["-c", "dp.conf"]);
    assert!(wait_until(T, || p.dir.exists("a.txt")));
    std::thread::sleep(ms(400));
    assert!(!p.dir.exists("b.txt"), "lines after exit are not run");
    assert!(p.running(), "exit in a config ends the file, not daemonproxy");
}

#[test]
fn interactive_and_config_from_stdin_conflict() {
    let (p, code) = run(&["-i", "-c", "-"], b"");
    assert_eq!(code, 3, "stderr:\n{}", p.stderr_text());
    let err = p.stderr_lines();
    assert!(err.contains(&"error: stdin not available".to_string()), "{err:#?}");
}

// ---------------------------------------------------------------------------
// `-c` is a live stream (issue 15 docs/protocol.md §1): every line runs as it arrives.

/// Waits until `path` exists; the effect of one streamed command.
fn wait_file(path: &std::path::Path, what: &str, p: &Proc) {
    assert!(
        wait_until(secs(2), || path.exists()),
        "{what}: {} never appeared while the stream stayed open; stderr:\n{}",
        path.display(),
        p.err.text()
    );
}

#[test]
fn config_stdin_runs_each_line_as_it_arrives() {
    // The example: a service that prints, then 5 s of an open pipe.
    let mut p = Proc::start("cstream", &["-c", "-"]);
    p.write_stdin(
        b"service.args\tfoo\tsh\t-c\techo hello\nservice.fds\tfoo\tstdin\tstdout\tstderr\nservice.start\tfoo\n",
    );
    assert!(
        wait_until(secs(2), || p.out.text().contains("hello")),
        "hello must be printed while the pipe stays open; stderr:\n{}",
        p.err.text()
    );
    // The service's stdin was /dev/null, not the command stream.
    p.write_stdin(b"terminate\t0\n");
    assert_eq!(p.exit_code(T), 0);
    assert_eq!(p.stdout_text(), "hello\n");
}

#[test]
fn config_stdin_slow_writer() {
    // 50 lines, one every 100 ms; each one's effect is there before the
    // next is written.
    let mut p = Proc::start("cslow", &["-c", "-"]);
    let dir = p.dir.path().to_path_buf();
    for i in 0..50 {
        p.write_stdin(format!("fd.open\tf{i}\twrite,create\tf{i}.txt\n").as_bytes());
        wait_file(&dir.join(format!("f{i}.txt")), &format!("line {i}"), &p);
        std::thread::sleep(ms(100));
    }
    p.close_stdin();
    // The stream's end does not end daemonproxy (docs/protocol.md §7.2).
    std::thread::sleep(ms(200));
    assert!(p.running());
}

#[test]
fn config_fifo_runs_each_line_as_it_arrives() {
    let dir = TempDir::new("cfifo");
    let fifo = dir.join("cmds");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo_s = fifo.to_str().unwrap().to_string();
    let path = dir.path().to_path_buf();
    let mut p = Proc::start_in(dir, &["-c", &fifo_s]);
    // daemonproxy waits for the writer at start-up, then reads line by line.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    for i in 0..10 {
        w.write_all(format!("fd.open\tf{i}\twrite,create\tf{i}.txt\n").as_bytes()).unwrap();
        wait_file(&path.join(format!("f{i}.txt")), &format!("fifo line {i}"), &p);
    }
    w.write_all(b"terminate\t0\n").unwrap();
    assert_eq!(p.exit_code(T), 0);
}

#[test]
fn long_options_take_an_inline_value() {
    // Issue 16 #10: --option=VALUE as well as --option VALUE.
    let dir = TempDir::new("eq");
    dir.write("c.conf", "echo\tx\nterminate\t7\n");
    let conf = dir.join("c.conf");
    let (_p, st) = run_in(dir, &[&format!("--config={}", conf.display())], b"", T);
    assert_eq!(st.code(), Some(7), "--config=FILE runs FILE");
    let (p, code) = run(&["--interactive=yes"], b"");
    assert_eq!(code, 2);
    assert!(p.stderr_text().contains("Option --interactive takes no value"), "{}", p.stderr_text());
    let (p, code) = run(&["-i", "--controller-pool=x"], b"");
    assert_eq!(code, 2, "a bad inline value is an error like a bad separate one: {}", p.stderr_text());
}
