//! Scale (issue 5): 10,000 services running at once, and a statedump of all
//! of them, on the real binary.

mod util;

use std::fmt::Write as _;
use std::time::{Duration, Instant};
use util::*;

const N: usize = 10_000;

#[test]
fn ten_thousand_services_up_and_dumped() {
    let mut dp = Dp::interactive(&[]);
    let mut cmds = String::new();
    for k in 0..N {
        let _ = write!(cmds, "service.args\tsvc{k:05}\tsleep\t600\nservice.start\tsvc{k:05}\n");
    }
    let t0 = Instant::now();
    dp.send_raw(cmds.as_bytes());
    let mut up = 0;
    dp.wait_for("10,000 up events", Duration::from_secs(120), |l| {
        if l.starts_with("service.state\tsvc") && l.contains("\tup\t") {
            up += 1;
        }
        up == N
    });
    let started = t0.elapsed();

    let t1 = Instant::now();
    let dump = dp.statedump();
    let dumped = t1.elapsed();
    let states: Vec<&String> = dump.iter().filter(|l| l.starts_with("service.state\t")).collect();
    assert_eq!(states.len(), N, "one service.state line per service");
    assert!(states.iter().all(|l| matches("service.state\t*\tup\t*\t*\t-\t-\t*\t-", l)), "all up");
    // Five lines per service, in name order.
    let names: Vec<String> = states.iter().map(|l| field(l, 1)).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "statedump is in name order");
    assert_eq!(dump.iter().filter(|l| l.starts_with("service.auto_up\t")).count(), N);

    // The daemon answers promptly with all of them running.
    let t2 = Instant::now();
    dp.sync();
    let rtt = t2.elapsed();

    let mut stop = String::new();
    for k in 0..N {
        let _ = writeln!(stop, "service.signal\tsvc{k:05}\tSIGKILL");
    }
    dp.send_raw(stop.as_bytes());
    let mut down = 0;
    dp.wait_for("10,000 down events", Duration::from_secs(120), |l| {
        if l.starts_with("service.state\tsvc") && l.contains("\tdown\t") {
            down += 1;
        }
        down == N
    });
    eprintln!("10,000 services: started in {started:?}, statedump in {dumped:?}, echo round trip {rtt:?}");
}
