//! Code at rest (issue 17; docs/design.md, "Code at rest"): once start-up
//! has settled (a second with nothing to do), daemonproxy gives back the
//! resident pages of its own program file and the stack start-up used
//! below the loop, and keeps working: code that runs again comes back.
//! With `--mlockall` nothing is given back.

mod util;

use std::fs;
use util::*;

/// (Size, Rss) in kB of the mappings of `path` in `pid` with permissions
/// `perms` (any, if `None`).
fn mapping(pid: i32, perms: Option<&str>, path: &str) -> (u64, u64) {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let (mut size, mut rss, mut ours) = (0, 0, false);
    for line in smaps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[0].contains('-') && f[1].len() == 4 {
            ours = perms.is_none_or(|p| f[1] == p) && f.get(5) == Some(&path);
            continue;
        }
        if ours && f.len() >= 2 {
            match f[0] {
                "Size:" => size += f[1].parse::<u64>().unwrap_or(0),
                "Rss:" => rss += f[1].parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    assert!(size > 0, "no {perms:?} mapping of {path} in {pid}");
    (size, rss)
}

/// (Size, Rss) in kB of the read-execute mapping of `exe` in `pid`.
fn code_mapping(pid: i32, exe: &str) -> (u64, u64) {
    mapping(pid, Some("r-xp"), exe)
}

/// kB resident in the `[stack]` mapping of `pid`.
fn stack_rss(pid: i32) -> u64 {
    mapping(pid, None, "[stack]").1
}

fn exe() -> String {
    fs::canonicalize(bin()).expect("binary").to_string_lossy().into_owned()
}

/// The "start-up settled" debug line's two figures (kB of code pages, kB
/// of stack and spare memory).
fn settled_line(text: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("debug: start-up settled: ")?.strip_suffix(" kB of stack given back")?;
        let (code, stack) = rest.split_once(" kB of code pages and ")?;
        Some((code.parse().ok()?, stack.parse().ok()?))
    })
}

#[test]
fn code_pages_are_given_back_once_start_up_settles() {
    let mut dp = Dp::interactive(&["-v", "-v"]);
    dp.send("service.args\ts\t/bin/sleep\t600");
    dp.send("service.start\ts");
    dp.wait_match("service.state\ts\tup\t*\t*\t-\t-\t0\t-", secs(5));
    let exe = exe();
    let (size, before) = code_mapping(dp.pid(), &exe);
    let stack_before = stack_rss(dp.pid());
    // Settled: no event for a second, then the pages go just before the
    // loop waits; only what that wait touches comes back (a debug build's
    // code is spread wider than a release build's: 816 of 1068 kB came
    // back here, 128 of 412 kB for the release build). Nothing is sent
    // meanwhile: a command would count as activity.
    let (mut rss, mut stack_after) = (before, stack_before);
    let rested = wait_until(secs(5), || {
        (rss, stack_after) = (code_mapping(dp.pid(), &exe).1, stack_rss(dp.pid()));
        rss < before && stack_after < stack_before
    });
    assert!(
        rested,
        "5 s after start-up: code mapping {rss} kB resident (of {size}; {before} before), [stack] {stack_after} kB ({stack_before} before)"
    );
    // The outcome is logged when the loop wakes up again: this command
    // (stderr is read by another thread: wait for the line).
    dp.sync();
    let mut line = None;
    wait_until(secs(5), || {
        line = settled_line(&dp.err.text());
        line.is_some()
    });
    let Some((code, stack)) = line else {
        panic!("no 'start-up settled' line after a wake-up: {}", dp.err.text());
    };
    assert!(code >= size, "{code} kB given back, the code mapping alone is {size} kB");
    // start-up's deeper frames (option parsing, the tables) and the vfork
    // child's stack went too
    assert!(stack > 0, "no stack given back");
    // everything still works: commands, a reap and a new start (code that
    // runs again comes back; the vfork child's stack is fresh zero pages)
    dp.send("service.signal\ts\tSIGKILL");
    dp.wait_match("service.state\ts\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", secs(5));
    dp.send("service.start\ts");
    dp.wait_match("service.state\ts\tup\t*\t*\t-\t-\t0\t-", secs(5));
    dp.send("service.signal\ts\tSIGKILL");
    dp.wait_match("service.state\ts\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", secs(5));
    // and a panic still unwinds to the fatal path, through code and stack
    // that came back after the give-back
    dp.send("debug.panic");
    let st = dp.wait_exit(T);
    assert_eq!(st.code(), Some(4), "after a panic: {}", describe(&st));
    assert!(dp.err.text().contains("fatal: Rust panic: panicked at "), "{}", dp.err.text());
}

#[test]
fn mlockall_keeps_the_code_resident() {
    let mut dp = Dp::interactive(&["--mlockall", "-v", "-v"]);
    dp.sync();
    std::thread::sleep(secs(2));
    dp.sync();
    let (size, rss) = code_mapping(dp.pid(), &exe());
    assert_eq!(rss, size, "with --mlockall every page of the code stays resident");
    assert!(!dp.err.text().contains("start-up settled"), "{}", dp.err.text());
}
