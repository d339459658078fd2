//! Code at rest (issue 17; docs/design.md, "Code at rest"): once start-up
//! has settled (a second with nothing to do), daemonproxy gives back the
//! resident pages of its own program file, and keeps working: code that
//! runs again comes back. With `--mlockall` nothing is given back.

mod util;

use std::fs;
use util::*;

/// (Size, Rss) in kB of the read-execute mapping of `exe` in `pid`.
fn code_mapping(pid: i32, exe: &str) -> (u64, u64) {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let (mut size, mut rss, mut ours) = (0, 0, false);
    for line in smaps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[0].contains('-') && f[1].len() == 4 {
            ours = f[1] == "r-xp" && f.get(5) == Some(&exe);
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
    assert!(size > 0, "no r-xp mapping of {exe} in {pid}");
    (size, rss)
}

fn exe() -> String {
    fs::canonicalize(bin()).expect("binary").to_string_lossy().into_owned()
}

#[test]
fn code_pages_are_given_back_once_start_up_settles() {
    let mut dp = Dp::interactive(&["-v", "-v"]);
    dp.send("service.args\ts\t/bin/sleep\t600");
    dp.send("service.start\ts");
    dp.wait_match("service.state\ts\tup\t*\t*\t-\t-\t0\t-", secs(5));
    let exe = exe();
    let (size, _) = code_mapping(dp.pid(), &exe);
    // settled: no event for a second; the pages given back are those of
    // the whole file, the code mapping's among them
    let mut given = 0;
    let settled = wait_until(secs(5), || {
        given = dp
            .err
            .lines()
            .iter()
            .find_map(|l| {
                l.strip_prefix("debug: start-up settled: ")?.strip_suffix(" kB of code pages given back")?.parse().ok()
            })
            .unwrap_or(0);
        given > 0
    });
    assert!(settled, "no 'start-up settled' line: {}", dp.err.text());
    assert!(given >= size, "{given} kB given back, the code mapping alone is {size} kB");
    // Only what runs comes back: the code mapping is not whole again (a
    // debug build's code is spread wider than a release build's: 816 of
    // 1068 kB came back here, 188 of 396 kB for the release build).
    let (_, rss) = code_mapping(dp.pid(), &exe);
    assert!(rss < size, "code mapping {rss} of {size} kB resident after start-up settled");
    // everything still works: commands, a reap and a new start (code that
    // runs again comes back)
    dp.sync();
    dp.send("service.signal\ts\tSIGKILL");
    dp.wait_match("service.state\ts\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", secs(5));
    dp.send("service.start\ts");
    dp.wait_match("service.state\ts\tup\t*\t*\t-\t-\t0\t-", secs(5));
    dp.send("service.signal\ts\tSIGKILL");
    dp.wait_match("service.state\ts\tdown\t*\t*\tsignal\tSIGKILL\t*\t*", secs(5));
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
