//! Output overflow of a controller that stops reading (docs/protocol.md §7.4,
//! docs/protocol.md §3.21): commands stall, after RESET seconds with a full input buffer
//! overflow is forced, output is dropped until the buffer has drained,
//! then `overflow` is written and delivery resumes with whole lines only.

mod util;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;
use util::*;

#[test]
fn stalled_reader_gets_overflow_then_resumes() {
    let dir = TempDir::new("ovf");
    let mut c = command(dir.path(), &["-i"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn daemonproxy");
    let pid = child.id() as i32;
    struct Guard(i32);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: the process group of the daemon we started.
            unsafe { libc::killpg(self.0, libc::SIGKILL) };
        }
    }
    let _guard = Guard(pid);
    let err = Collector::spawn(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // the writer blocks while daemonproxy stalls: write from a thread
    let text = "x".repeat(1000);
    let (done_tx, done_rx) = mpsc::channel();
    let t = text.clone();
    let writer = thread::spawn(move || {
        // errors only when the daemon is gone (test already failing)
        if stdin.write_all(b"conn.event_timeout\t1\t30\n").is_err() {
            return stdin;
        }
        for i in 0..400 {
            if stdin.write_all(format!("echo\t{i:03}{t}\n").as_bytes()).is_err() {
                return stdin;
            }
        }
        let _ = done_tx.send(());
        stdin
    });
    let t0 = Instant::now();
    if done_rx.recv_timeout(secs(6)).is_err() {
        panic!("daemonproxy never consumed the input (overflow not forced); stderr:\n{}", err.text());
    }
    assert!(t0.elapsed() >= ms(800), "commands must stall until RESET: {:?}", t0.elapsed());
    let mut stdin = writer.join().unwrap();
    thread::sleep(ms(300));
    // now read: banner, some whole echo lines, "overflow", then live output
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let l = rx.recv_timeout(T).unwrap_or_else(|_| panic!("no overflow line; got {} lines", lines.len()));
        assert!(l.ends_with('\n'), "whole lines only: {:?}", vis(&l));
        let l = l.trim_end_matches('\n').to_string();
        if l == "overflow" {
            break;
        }
        lines.push(l);
    }
    assert!(lines.len() > 6, "some echo lines before the overflow: {}", lines.len());
    assert_eq!(lines[5], BANNER_LAST);
    let echoes = &lines[6..];
    assert!(echoes.len() < 400, "output must have been dropped");
    for (i, l) in echoes.iter().enumerate() {
        assert_eq!(*l, format!("{i:03}{text}"), "echo lines arrive in order before the overflow");
    }
    stdin.write_all(b"echo\tafter\n").unwrap();
    let l = rx.recv_timeout(T).expect("delivery resumes after overflow");
    assert_eq!(l, "after\n");
    assert!(
        wait_until(T, || err.lines().iter().any(|l| l.starts_with("warning: controller 0 blocked pipe for "))),
        "blocked warning logged: {:?}",
        err.lines()
    );
    let n = err.lines().iter().filter(|l| l.starts_with("warning: controller 0 blocked pipe for ")).count();
    assert_eq!(n, 1, "F13: logged once per blocking episode: {:?}", err.lines());
    drop(stdin);
    let _ = child.wait();
}
