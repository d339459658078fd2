//! Zero allocation after start-up (issue 5): a counting global allocator,
//! the real supervisor driven in this process through a socket controller,
//! real children forked and reaped. After the configuration phase, the
//! workload — 1,000 service starts and exits, 100,000 commands, 100
//! statedumps, a controller overflow and its recovery, and the extensions
//! of issue 9 (200 `service.stat`, 110 `service.query` over 1,000 tagged
//! services, 5 attached processes signalled, seen to exit and restarted,
//! 20 restart-limit trips) — must not allocate.

use daemonproxy::controller::Kind;
use daemonproxy::handle::Handles;
use daemonproxy::log::Log;
use daemonproxy::service::Services;
use daemonproxy::supervisor::Supervisor;
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The test's end of the controller connection, with fixed buffers.
struct Peer {
    fd: RawFd,
    buf: Box<[u8; 1 << 16]>,
    len: usize,
}

impl Peer {
    fn write_all(&mut self, sup: &mut Supervisor, mut b: &[u8]) {
        while !b.is_empty() {
            // SAFETY: b is a valid buffer.
            let n = unsafe { libc::write(self.fd, b.as_ptr().cast(), b.len()) };
            if n > 0 {
                b = &b[n as usize..];
            } else {
                turn(sup);
            }
        }
    }

    /// Read what is available; returns bytes added.
    fn fill(&mut self) -> usize {
        if self.len == self.buf.len() {
            return 0;
        }
        // SAFETY: writes into the unused tail of buf.
        let n = unsafe { libc::read(self.fd, self.buf[self.len..].as_mut_ptr().cast(), self.buf.len() - self.len) };
        if n > 0 {
            self.len += n as usize;
            n as usize
        } else {
            0
        }
    }

    /// Take one line (without LF) into `out`; returns its length.
    fn line(&mut self, out: &mut [u8; 4096]) -> Option<usize> {
        let p = self.buf[..self.len].iter().position(|&b| b == b'\n')?;
        let n = p.min(out.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.copy_within(p + 1..self.len, 0);
        self.len -= p + 1;
        Some(n)
    }

    /// Run the loop until `done` returns true for a line.
    fn until_n(&mut self, sup: &mut Supervisor, mut done: impl FnMut(&[u8]) -> bool) {
        let end = Instant::now() + Duration::from_secs(60);
        let mut l = [0u8; 4096];
        loop {
            while let Some(n) = self.line(&mut l) {
                if done(&l[..n]) {
                    return;
                }
            }
            assert!(Instant::now() < end, "timed out waiting for a line");
            if self.fill() == 0 {
                turn(sup);
            }
        }
    }

    /// Run the loop until a line equal to `want` arrives, calling `seen`
    /// for every line before it.
    fn until(&mut self, sup: &mut Supervisor, want: &[u8], mut seen: impl FnMut(&[u8])) {
        let end = Instant::now() + Duration::from_secs(60);
        let mut l = [0u8; 4096];
        loop {
            while let Some(n) = self.line(&mut l) {
                if &l[..n] == want {
                    return;
                }
                seen(&l[..n]);
            }
            assert!(Instant::now() < end, "timed out waiting for {:?}", String::from_utf8_lossy(want));
            if self.fill() == 0 {
                turn(sup);
            }
        }
    }
}

/// Tagged services the queries run over.
const QUERIED: usize = 1000;
/// Processes attached (started outside the supervisor).
const ATTACHED: usize = 5;

/// Does `line` match `pat`, where a `*` field of the pattern matches any
/// one field (no allocation)?
fn like(pat: &[u8], line: &[u8]) -> bool {
    let mut l = line.split(|&b| b == b'\t');
    pat.split(|&b| b == b'\t').all(|p| l.next().is_some_and(|f| p == b"*" || p == f))
}

fn turn(sup: &mut Supervisor) {
    assert!(sup.turn(Some(Duration::from_millis(5))).is_none(), "supervisor ended");
}

fn main() {
    let null = OwnedFd::from(std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").unwrap());
    let null_raw = null.as_raw_fd();
    let mut log = Log::new();
    log.filter = 6; // quiet: messages are still formatted, never shown
    let mut sup = Supervisor::new(Handles::new(null, usize::MAX), Services::new(usize::MAX), log, 4, null_raw).unwrap();
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let raw = ours.as_raw_fd();
    sup.add_controller(Kind::Socket, Some(ours), Some(raw), Some(raw)).unwrap();
    let mut peer = Peer { fd: theirs.as_raw_fd(), buf: Box::new([0; 1 << 16]), len: 0 };

    // ---- configuration phase: define everything the workload uses --------
    let mut config = Vec::new();
    for k in 0..10 {
        config.extend_from_slice(format!("service.args\ts{k}\ttrue\nservice.tags\ts{k}\tgroup=demo\n").as_bytes());
    }
    config.extend_from_slice(b"fd.pipe\tlog.r\tlog.w\nservice.fds\ts0\tnull\tlog.w\tlog.w\necho\tconfigured\n");
    peer.write_all(&mut sup, &config);
    peer.until(&mut sup, b"configured", |_| {});
    for _ in 0..5 {
        turn(&mut sup);
    }
    // Issue 9: 1,000 tagged services to query, 3 running ones to stat, a
    // crash loop with a restart limit, and services to attach processes
    // to (their own crash loops stopped by their limit before counting).
    let mut config = Vec::new();
    for k in 0..QUERIED {
        config.extend_from_slice(format!("service.tags\tq{k:03}\tuser=u{}\tsession=s{}\n", k % 7, k % 13).as_bytes());
    }
    for k in 0..3 {
        config.extend_from_slice(format!("service.args\tr{k}\tsleep\t600\nservice.start\tr{k}\n").as_bytes());
    }
    config.extend_from_slice(b"service.args\tcrash\tfalse\nservice.auto_up\tcrash\t0.01\talways\tlimit=3/10\n");
    for k in 0..ATTACHED {
        config.extend_from_slice(
            format!("service.args\ta{k}\ttrue\nservice.auto_up\ta{k}\t0.01\talways\tlimit=1/10\n").as_bytes(),
        );
    }
    peer.write_all(&mut sup, &config);
    let mut limited = 0;
    peer.until_n(&mut sup, |l| {
        limited += usize::from(l.starts_with(b"service.limit\t"));
        limited == ATTACHED + 1
    });
    peer.write_all(&mut sup, b"echo\tconfigured-9\n");
    peer.until(&mut sup, b"configured-9", |_| {});
    // Processes that are not our children (their parent exits at once).
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("for i in $(seq {ATTACHED}); do sleep 600 >/dev/null 2>&1 & echo $!; done")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let outside: Vec<i32> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(outside.len(), ATTACHED);
    let attach: Vec<Vec<u8>> =
        outside.iter().enumerate().map(|(k, pid)| format!("service.attach\ta{k}\t{pid}\n").into_bytes()).collect();
    let signal: Vec<Vec<u8>> = (0..ATTACHED).map(|k| format!("service.signal\ta{k}\tSIGTERM\n").into_bytes()).collect();
    let unknown_exit: Vec<Vec<u8>> = outside
        .iter()
        .enumerate()
        .map(|(k, pid)| format!("service.state\ta{k}\tdown\t*\t{pid}\texit\t-").into_bytes())
        .collect();
    let session5 = (0..QUERIED).filter(|k| k % 13 == 5).count();
    let echo = b"echo\tping\n".repeat(1000);
    let start_line: Vec<Vec<u8>> = (0..10).map(|k| format!("service.start\ts{k}\n").into_bytes()).collect();
    let down: Vec<Vec<u8>> = (0..10).map(|k| format!("service.state\ts{k}\tdown\t").into_bytes()).collect();
    let long = [b"echo\t".as_slice(), &[b'x'; 1000], b"\n"].concat();

    // The counter itself must work, or a zero below would prove nothing.
    COUNTING.store(true, Ordering::SeqCst);
    let probe = std::hint::black_box(Box::new(7u64));
    assert_eq!(ALLOCS.swap(0, Ordering::SeqCst), 1, "the counting allocator does not count");
    drop(probe);

    // ---- 1,000 starts and exits ---------------------------------------------
    let mut exits = 0;
    for _round in 0..100 {
        for line in &start_line {
            peer.write_all(&mut sup, line);
        }
        let mut downs = 0;
        let end = Instant::now() + Duration::from_secs(30);
        let mut l = [0u8; 4096];
        while downs < 10 {
            while let Some(n) = peer.line(&mut l) {
                if down.iter().any(|d| l[..n].starts_with(d)) {
                    downs += 1;
                }
            }
            assert!(Instant::now() < end, "services did not exit");
            if peer.fill() == 0 {
                turn(&mut sup);
            }
        }
        exits += downs;
    }

    // ---- 100,000 commands ----------------------------------------------------
    let mut pings = 0;
    for _ in 0..100 {
        peer.write_all(&mut sup, &echo);
        peer.write_all(&mut sup, b"echo\tbatch\n");
        peer.until(&mut sup, b"batch", |l| {
            if l == b"ping" {
                pings += 1;
            }
        });
    }

    // ---- 100 statedumps ------------------------------------------------------
    let mut dumped = 0;
    for _ in 0..100 {
        peer.write_all(&mut sup, b"statedump\necho\tdumped\n");
        peer.until(&mut sup, b"dumped", |l| {
            if l.starts_with(b"service.auto_up\t") {
                dumped += 1;
            }
        });
    }

    // ---- issue 9: figures, queries, attach, restart limits -------------------
    let mut stats = 0;
    let mut stat_ends = 0;
    for _ in 0..100 {
        peer.write_all(&mut sup, b"service.stat\tr1\nservice.stat\t*\tname=r*\nservice.stat\t*\necho\tstat-done\n");
        peer.until(&mut sup, b"stat-done", |l| {
            stats += usize::from(like(b"service.stat\t*\t*\tS\t*\t*\t*\t*\t*\t1\t3", l));
            stat_ends += usize::from(l == b"service.stat.end\t3");
        });
    }
    let (mut matched, mut all, mut query_ends) = (0, 0, 0);
    for round in 0..110 {
        let q: &[u8] = if round < 100 { b"service.query\ttag=session=s5\tname=q*\n" } else { b"service.query\n" };
        peer.write_all(&mut sup, q);
        peer.write_all(&mut sup, b"echo\tquery-done\n");
        peer.until(&mut sup, b"query-done", |l| {
            if l.starts_with(b"service.match\tq") {
                if round < 100 {
                    matched += 1;
                } else {
                    all += 1;
                }
            }
            query_ends += usize::from(l.starts_with(b"service.query.end\t"));
        });
    }
    let mut unknown = 0;
    let mut restarted_limited = 0;
    for k in 0..ATTACHED {
        peer.write_all(&mut sup, &attach[k]);
        peer.write_all(&mut sup, &signal[k]);
        // Down with unknown status, restarted from its args (`true`) once,
        // then held by its limit.
        peer.until_n(&mut sup, |l| {
            unknown += usize::from(like(&unknown_exit[k], l));
            l.starts_with(b"service.limit\ta")
        });
        restarted_limited += 1;
    }
    let mut crash_ups = 0;
    for _ in 0..20 {
        peer.write_all(&mut sup, b"service.start\tcrash\n");
        peer.until_n(&mut sup, |l| {
            crash_ups += usize::from(l.starts_with(b"service.state\tcrash\tup\t"));
            l.starts_with(b"service.limit\tcrash\t")
        });
    }
    peer.write_all(
        &mut sup,
        b"service.signal\tr0\tSIGKILL\nservice.signal\tr1\tSIGKILL\nservice.signal\tr2\tSIGKILL\n",
    );
    let mut r_down = 0;
    peer.until_n(&mut sup, |l| {
        r_down += usize::from(l.starts_with(b"service.state\tr"));
        r_down == 3
    });

    // ---- overflow and recovery -----------------------------------------------
    // Send more output than the socket and the 2 KiB buffer hold without
    // reading (the daemon must not block), then read everything.
    for _ in 0..400 {
        // SAFETY: long is a valid buffer; partial writes only drop input.
        let n = unsafe { libc::write(peer.fd, long.as_ptr().cast(), long.len()) };
        if n < long.len() as isize {
            break;
        }
        turn(&mut sup);
    }
    for _ in 0..200 {
        turn(&mut sup);
    }
    let mut overflow = false;
    peer.write_all(&mut sup, b"echo\tafter-overflow\n");
    peer.until(&mut sup, b"after-overflow", |l| overflow |= l == b"overflow");
    peer.write_all(&mut sup, b"statedump\necho\tresynced\n");
    let mut resync = 0;
    peer.until(&mut sup, b"resynced", |l| {
        if l.starts_with(b"service.state\t") {
            resync += 1;
        }
    });

    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    println!(
        "starts and exits: {exits}, echo replies: {pings}, dumps: {dumped}, overflow: {overflow}, resync states: {resync}"
    );
    println!("allocations after configuration: {allocs}");
    println!(
        "stat lines: {stats}, stat ends: {stat_ends}, query matches: {matched} + {all}, query ends: {query_ends}, \
         attached exits: {unknown}, limited after attach: {restarted_limited}, crash-loop runs: {crash_ups}"
    );
    let services = 10 + QUERIED + 3 + 1 + ATTACHED;
    assert_eq!(exits, 1000);
    assert_eq!(pings, 100_000);
    assert_eq!(dumped, 100 * services);
    assert!(overflow, "the stalled controller never saw overflow");
    assert_eq!(resync, services);
    assert_eq!(stats, 100 * (1 + 3 + 3));
    assert_eq!(stat_ends, 200);
    assert_eq!((matched, all, query_ends), (100 * session5, 10 * QUERIED, 110));
    assert_eq!((unknown, restarted_limited), (ATTACHED, ATTACHED));
    assert_eq!(crash_ups, 20 * 4);
    assert_eq!(allocs, 0, "the event loop allocated after start-up");
    println!("1 passed, 0 failed");
}
