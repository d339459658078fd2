//! The smoke test of docs/protocol.md §11: a config with a log pipe, a `cat`
//! logger and a controller service driven by a shell script; the script's
//! transcript must match the C original's line for line.
//!
//! The example script races by itself: it SIGTERMs `cat` as soon as the job
//! is down, and on a loaded machine `cat` may not yet have read the job's
//! line from the pipe, which is then lost with the pipe at exit. So here the
//! controller first waits (at most 10 s) for a file `logged` that the test
//! creates once it has seen `hello from job` on daemonproxy's stderr; the
//! commands and the transcript are the example's.

mod util;
use util::*;

const CONF: &str = "fd.pipe\tlog.r\tlog.w
service.args\tlogger\tcat
service.fds\tlogger\tlog.r\tstderr\tstderr
service.auto_up\tlogger\t1\talways
service.args\tctl\t./controller.sh
service.fds\tctl\tcontrol.event\tcontrol.cmd\tstderr
service.auto_up\tctl\t1\talways
";

const CONTROLLER: &str = "#!/bin/sh
say() { printf '%s\\n' \"$1\"; }
say \"statedump\"; say \"echo\tdump-done\"
while IFS= read -r line; do
  printf '%s\\n' \"$line\" >> controller.log
  case \"$line\" in
    dump-done) say \"service.args\tjob\tsh\t-c\techo hello from job; exit 7\"
               say \"service.fds\tjob\tnull\tlog.w\tlog.w\"; say \"service.start\tjob\" ;;
    \"service.state\tjob\tdown\t\"*) i=0; while [ ! -e logged ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
                                     say \"service.auto_up\tlogger\t-\"; say \"service.signal\tlogger\tSIGTERM\" ;;
    \"service.state\tlogger\tdown\t\"*) say \"service.auto_up\tctl\t-\"; say \"terminate\t0\" ;;
  esac
done
";

/// The expected controller.log; `T` and `P1`..`P3` are checked
/// separately, `*` in the std handle lines stands for flags that depend on
/// how daemonproxy was started.
const LOG: [&str; 29] = [
    "service.state\tctl\tup\tT\tP1\t-\t-\t0\t-",
    "fd.state\tcontrol.cmd\tspecial\twrite\tdaemonproxy command pipe",
    "fd.state\tcontrol.event\tspecial\tread\tdaemonproxy event stream",
    "fd.state\tcontrol.socket\tspecial\tread,write\tdaemonproxy control socket",
    "fd.state\tlog.r\tpipe\tfrom\tlog.w",
    "fd.state\tlog.w\tpipe\tto\tlog.r",
    "fd.state\tnull\tspecial\tread,write\t/dev/null",
    "fd.state\tstderr\tfile\t*\tunknown",
    "fd.state\tstdin\tfile\t*\tunknown",
    "fd.state\tstdout\tfile\t*\tunknown",
    "service.state\tctl\tup\tT\tP1\t-\t-\t0\t-",
    "service.tags\tctl\t",
    "service.args\tctl\t./controller.sh",
    "service.fds\tctl\tcontrol.event\tcontrol.cmd\tstderr",
    "service.auto_up\tctl\t1\talways",
    "service.state\tlogger\tup\tT\tP2\t-\t-\t0\t-",
    "service.tags\tlogger\t",
    "service.args\tlogger\tcat",
    "service.fds\tlogger\tlog.r\tstderr\tstderr",
    "service.auto_up\tlogger\t1\talways",
    "dump-done",
    "service.args\tjob\tsh\t-c\techo hello from job; exit 7",
    "service.fds\tjob\tnull\tlog.w\tlog.w",
    "service.state\tjob\tstart\tT\t-\t-\t-\t-\t-",
    "service.state\tjob\tup\tT\tP3\t-\t-\t0\t-",
    "service.state\tjob\tdown\tT\tP3\texit\t7\t0\t0",
    "service.auto_up\tlogger\t-",
    "service.state\tlogger\tdown\tT\tP2\tsignal\tSIGTERM\t0\t0",
    "service.auto_up\tctl\t-",
];

#[test]
fn appendix_smoke_test() {
    let dir = TempDir::new("smoke");
    dir.write("daemonproxy.conf", CONF);
    dir.script("controller.sh", CONTROLLER);
    let t0 = mono();
    let mut p = Proc::start_in(dir, &["-c", "daemonproxy.conf"]);
    let seen = wait_until(secs(10), || p.err.lines().iter().any(|l| l == "hello from job"));
    p.dir.write("logged", "");
    let st = p.wait_exit(secs(15));
    let t1 = mono();
    assert_eq!(st.code(), Some(0), "exit status {}; stderr:\n{}", describe(&st), p.err.text());
    // the controller may still be writing its last line
    let done = wait_until(T, || p.dir.read("controller.log").lines().any(|l| l == "service.auto_up\tctl\t-"));
    let log = p.dir.read("controller.log");
    assert!(done, "controller.log incomplete:\n{log}\nstderr:\n{}", p.err.text());
    let lines: Vec<String> = log.lines().map(|s| s.to_string()).collect();
    // P1..P3 must be consistent pids, T monotonic seconds of this run
    let mut pids: [Option<String>; 3] = [None, None, None];
    let mut pats = Vec::new();
    for (i, want) in LOG.iter().enumerate() {
        let got = lines.get(i).map(|s| s.as_str()).unwrap_or("");
        let wf: Vec<&str> = want.split('\t').collect();
        let gf: Vec<&str> = got.split('\t').collect();
        let mut pat = Vec::new();
        for (j, f) in wf.iter().enumerate() {
            let g = gf.get(j).copied().unwrap_or("");
            match *f {
                "T" => {
                    let t: i64 = g.parse().unwrap_or(-1);
                    assert!(t >= t0 && t <= t1, "line {} {:?}: T out of range", i + 1, vis(got));
                    pat.push("*".to_string());
                }
                "P1" | "P2" | "P3" => {
                    let k = (f.as_bytes()[1] - b'1') as usize;
                    match &pids[k] {
                        None => {
                            assert!(
                                g.parse::<i32>().map(|v| v > 1).unwrap_or(false),
                                "line {} {:?}: pid",
                                i + 1,
                                vis(got)
                            );
                            pids[k] = Some(g.to_string());
                        }
                        Some(p) => assert_eq!(p, g, "line {} {:?}: {f} must be the same pid", i + 1, vis(got)),
                    }
                    pat.push("*".to_string());
                }
                other => pat.push(other.to_string()),
            }
        }
        pats.push(pat.join("\t"));
    }
    let pat_refs: Vec<&str> = pats.iter().map(|s| s.as_str()).collect();
    assert_lines(&lines, &pat_refs, "controller.log");
    let err = p.stderr_lines();
    assert!(seen && err.iter().any(|l| l == "hello from job"), "job output via the pipe and cat: {err:#?}");
    assert!(err.iter().any(|l| l == "info: daemonproxy exiting"), "{err:#?}");
    let p1 = pids[0].clone().unwrap();
    let want = format!("warning: service 'ctl' running as pid {p1}");
    assert!(err.contains(&want), "stderr lacks {want:?}: {err:#?}");
    // Issue 16 #7: 1.1's warning stays, and a line says that this service is
    // the controller that asked to exit.
    let note = "info: service 'ctl' is the controller that sent terminate; it ends on its own";
    let at = err.iter().position(|l| *l == want).unwrap();
    assert_eq!(err.get(at + 1).map(String::as_str), Some(note), "{err:#?}");
    assert!(!err.iter().any(|l| l.starts_with("warning: service 'logger'")), "logger was down: {err:#?}");
}
