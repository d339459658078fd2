//! Live process figures for `service.stat` (an extension): what the kernel
//! says of a running service, read from /proc (proc(5)) into fixed buffers,
//! and the event line that shows it.
//!
//! `/proc/PID/stat` gives the state letter, CPU time, thread count and
//! start time in one read; `/proc/PID/statm` the resident set (exact, the
//! `VmRSS` of `/proc/PID/status`: the one in `stat` is approximate on
//! current kernels); `/proc/PID/fd` is counted with `getdents64(2)`. Nothing here allocates: paths are built on the stack,
//! files are read into stack buffers and parsed in place.

use crate::clock::{Mono, SEC};
use crate::line::Line;
use crate::sys::{self, Errno};
use std::os::fd::AsRawFd;

/// Clock tick and page size, as `sysconf(3)` gives them (read once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// `_SC_CLK_TCK`: the unit of the CPU and start times in /proc.
    pub tck: i64,
    /// Page size in KiB (the unit of the resident set is pages).
    pub page_kb: i64,
}

impl Clocks {
    /// Ask `sysconf` (defaults 100 and 4 KiB if it does not know).
    pub fn get() -> Clocks {
        Clocks { tck: sys::sysconf(libc::_SC_CLK_TCK, 100), page_kb: sys::sysconf(libc::_SC_PAGESIZE, 4096) / 1024 }
    }
}

/// The fields of `/proc/PID/stat` that `service.stat` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `D`, `Z`, `T`, `t`, `X`, `I`, ...).
    pub state: u8,
    /// The parent's pid (0 for process 1 and kernel threads' root).
    pub ppid: i32,
    /// utime + stime of all threads, in clock ticks (reaped children not
    /// counted).
    pub cpu_ticks: u64,
    /// Number of threads.
    pub threads: i64,
    /// Start time in clock ticks after boot (`CLOCK_BOOTTIME`).
    pub start_ticks: u64,
}

/// Parse the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    let close = memchr::memrchr(b')', text)?;
    // Field 3 (state) is the first word after ") ".
    let mut words = text[close + 1..].split(|&b| b == b' ' || b == b'\n').filter(|w| !w.is_empty());
    let num = |w: Option<&[u8]>| -> Option<u64> {
        let w = w?;
        if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
            return None;
        }
        w.iter().try_fold(0u64, |v, &d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    };
    let state = *words.next()?.first()?;
    let ppid = i32::try_from(num(words.next())?).ok()?;
    // Fields 5..13 are not shown; 14 utime, 15 stime.
    let mut words = words.skip(9);
    let utime = num(words.next())?;
    let stime = num(words.next())?;
    // 16 cutime, 17 cstime, 18 priority, 19 nice (may be negative).
    let mut words = words.skip(4);
    let threads = num(words.next())?;
    // 21 itrealvalue, 22 starttime.
    let mut words = words.skip(1);
    let start_ticks = num(words.next())?;
    Some(ProcStat { state, ppid, cpu_ticks: utime.saturating_add(stime), threads: threads as i64, start_ticks })
}

/// The resident set in pages: field 2 of the text of `/proc/PID/statm`.
pub fn parse_statm(text: &[u8]) -> Option<i64> {
    let w = text.split(|&b| b == b' ').nth(1)?;
    crate::command::parse_int(w).filter(|&n| n >= 0)
}

/// `/proc/PID/<leaf>` as a NUL-terminated path in `buf`.
fn proc_path<'a>(buf: &'a mut [u8; 64], pid: i32, leaf: &str) -> &'a [u8] {
    let mut l = Line::new();
    l.s("/proc/").int(i64::from(pid)).byte(b'/').s(leaf).byte(0);
    let n = l.len().min(buf.len());
    buf[..n].copy_from_slice(&l.as_bytes()[..n]);
    &buf[..n]
}

/// Read `/proc/PID/<leaf>` into `buf`; returns the bytes read.
fn read_proc<'a>(pid: i32, leaf: &str, buf: &'a mut [u8; 1024]) -> Result<&'a [u8], Errno> {
    let mut pb = [0u8; 64];
    let fd = sys::open_cstr(proc_path(&mut pb, pid, leaf), libc::O_RDONLY)?;
    let mut len = 0;
    while len < buf.len() {
        match sys::read(fd.as_raw_fd(), &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..len])
}

/// Read and parse `/proc/PID/stat`.
pub fn read_stat(pid: i32) -> Result<ProcStat, Errno> {
    let mut buf = [0u8; 1024];
    parse_stat(read_proc(pid, "stat", &mut buf)?).ok_or(libc::EIO)
}

/// The resident set of `pid` in pages, from `/proc/PID/statm`.
pub fn read_rss(pid: i32) -> Result<i64, Errno> {
    let mut buf = [0u8; 1024];
    parse_statm(read_proc(pid, "statm", &mut buf)?).ok_or(libc::EIO)
}

/// Count the open descriptors of `pid`: the entries of `/proc/PID/fd`.
pub fn count_fds(pid: i32) -> Result<u64, Errno> {
    let mut pb = [0u8; 64];
    let dir = sys::open_cstr(proc_path(&mut pb, pid, "fd"), libc::O_RDONLY | libc::O_DIRECTORY)?;
    // u64 elements keep the buffer aligned for linux_dirent64.
    let mut buf = [0u64; 512];
    let mut count = 0;
    loop {
        let bytes = match sys::getdents64_aligned(dir.as_raw_fd(), &mut buf) {
            Ok([]) => return Ok(count),
            Ok(b) => b,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        count += count_entries(bytes);
    }
}

/// Entries other than `.` and `..` in a buffer of `linux_dirent64` records.
fn count_entries(buf: &[u8]) -> u64 {
    sys::dirent_names(buf).filter(|&n| n != b"." && n != b"..").count() as u64
}

/// Is the /proc we see the one of our own pid namespace? (`/proc/self`
/// names our pid.) If not, its numbers belong to other processes and no
/// figures are shown.
pub fn proc_is_ours() -> bool {
    let mut buf = [0u8; 32];
    match sys::readlink_cstr(b"/proc/self\0", &mut buf) {
        Ok(n) => crate::command::parse_int(&buf[..n]) == Some(i64::from(sys::getpid())),
        Err(_) => false,
    }
}

/// A CPU-time sample: when it was taken and the ticks used by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When (monotonic).
    pub at: Mono,
    /// CPU ticks used by then.
    pub cpu_ticks: u64,
}

/// The figures of one `service.stat` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// The process.
    pub pid: i32,
    /// When they were read.
    pub now: Mono,
    /// `/proc/PID/stat`, if it could be read.
    pub stat: Option<ProcStat>,
    /// Start time on the monotonic clock (from `stat`).
    pub start: Option<Mono>,
    /// CPU share since the previous sample, in thousandths of one CPU.
    pub permille: Option<i64>,
    /// Resident set in pages, if `/proc/PID/statm` could be read.
    pub rss_pages: Option<i64>,
    /// Open descriptors, if `/proc/PID/fd` could be read.
    pub fds: Option<u64>,
}

impl Figures {
    /// Read the figures of `pid` now. `prev` is the service's previous
    /// sample (`None`: the share is taken since the process started).
    /// Without `proc_ok` (a /proc of another namespace) nothing is read.
    pub fn read(pid: i32, prev: Option<Sample>, clocks: &Clocks, proc_ok: bool) -> Figures {
        let stat = if proc_ok { read_stat(pid).ok() } else { None };
        let now = Mono::now();
        let boot = sys::boottime_ns();
        let rss_pages = if proc_ok { read_rss(pid).ok() } else { None };
        let fds = if proc_ok { count_fds(pid).ok() } else { None };
        let tck = i128::from(clocks.tck.max(1));
        let start = stat.map(|st| {
            let started_boot = (i128::from(st.start_ticks) * i128::from(SEC) / tck) as i64;
            Mono(now.0 - (boot - started_boot).max(0))
        });
        let permille = match (stat, start) {
            (Some(st), Some(start)) => {
                let p = prev.unwrap_or(Sample { at: start, cpu_ticks: 0 });
                let dt = i128::from(now.0 - p.at.0);
                let dticks = i128::from(st.cpu_ticks.saturating_sub(p.cpu_ticks));
                Some(if dt > 0 { (dticks * 1000 * i128::from(SEC) / (tck * dt)) as i64 } else { 0 })
            }
            _ => None,
        };
        Figures { pid, now, stat, start, permille, rss_pages, fds }
    }

    /// The sample these figures make (for the next share), if any.
    pub fn sample(&self) -> Option<Sample> {
        self.stat.map(|st| Sample { at: self.now, cpu_ticks: st.cpu_ticks })
    }

    /// Write `service.stat\tNAME\tPID\tSTATE\tSTART\tUPTIME\tCPU_MS\t
    /// CPU_PERMILLE\tRSS_KB\tTHREADS\tFDS`; a figure that could not be read
    /// is `-`.
    pub fn write_line(&self, out: &mut Line, name: &str, clocks: &Clocks) {
        out.s("service.stat\t").s(name).tab().int(i64::from(self.pid)).tab();
        let dash = |out: &mut Line, v: Option<i64>| {
            match v {
                Some(v) => out.int(v),
                None => out.byte(b'-'),
            };
        };
        match self.stat {
            Some(st) => out.byte(st.state),
            None => out.byte(b'-'),
        };
        out.tab();
        dash(out, self.start.map(Mono::secs));
        out.tab();
        dash(out, self.start.map(|s| self.now.secs_since(s)));
        out.tab();
        let tck = clocks.tck.max(1) as u64;
        dash(out, self.stat.map(|st| (u128::from(st.cpu_ticks) * 1000 / u128::from(tck)) as i64));
        out.tab();
        dash(out, self.permille);
        out.tab();
        dash(out, self.rss_pages.map(|n| n.saturating_mul(clocks.page_kb)));
        out.tab();
        dash(out, self.stat.map(|st| st.threads));
        out.tab();
        dash(out, self.fds.map(|n| n as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let text = b"4242 (a b) (c)) S 1 4242 4242 0 -1 4194560 120 0 0 0 \
            37 5 0 0 20 0 3 0 123456 1000000 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let st = parse_stat(text).unwrap();
        assert_eq!(st, ProcStat { state: b'S', ppid: 1, cpu_ticks: 42, threads: 3, start_ticks: 123456 });
        assert_eq!(parse_statm(b"3000 250 100 10 0 400 0\n"), Some(250));
        assert_eq!(parse_statm(b"3000"), None);
        assert_eq!(parse_stat(b"1 (x) R 0"), None);
        assert_eq!(parse_stat(b"no parenthesis"), None);
    }

    #[test]
    fn reads_a_childs_figures() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("sleep")
            .arg("5")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Give it time to settle after exec (the resident set is counted
        // lazily).
        std::thread::sleep(std::time::Duration::from_millis(200));
        let st = read_stat(pid);
        let rss = read_rss(pid);
        let fds = count_fds(pid);
        let listed = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64);
        let f = Figures::read(pid, None, &Clocks::get(), proc_is_ours());
        let _ = child.kill();
        let _ = child.wait();
        let st = st.unwrap();
        assert!(st.threads == 1, "{st:?}");
        assert!(rss.is_ok_and(|n| n > 0), "{rss:?}");
        // At least 0, 1 and 2 (other tests may leak some of theirs).
        assert!(matches!(fds, Ok(n) if n >= 3) && fds.as_ref().ok() == listed.as_ref().ok(), "{fds:?} vs {listed:?}");
        assert!(proc_is_ours());
        assert!(f.start.is_some_and(|s| s <= f.now) && f.permille.is_some());
        let mut l = Line::new();
        f.write_line(&mut l, "sleep", &Clocks::get());
        assert_eq!(l.as_bytes().split(|&b| b == b'\t').count(), 11);
        assert_eq!(read_stat(-5), Err(libc::ENOENT));
    }

    #[test]
    fn unreadable_figures_are_dashes() {
        let f = Figures::read(sys::getpid(), None, &Clocks::get(), false);
        let mut l = Line::new();
        f.write_line(&mut l, "x", &Clocks { tck: 100, page_kb: 4 });
        let want = format!("service.stat\tx\t{}\t-\t-\t-\t-\t-\t-\t-\t-", sys::getpid());
        assert_eq!(l.as_bytes(), want.as_bytes());
    }

    #[test]
    fn share_since_the_previous_sample() {
        let cpu_now = || {
            let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
            ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9
        };
        let me = sys::getpid();
        let clocks = Clocks::get();
        let (c0, t0) = (cpu_now(), std::time::Instant::now());
        let first = Figures::read(me, None, &clocks, true);
        let end = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut spin = 0u64;
        while std::time::Instant::now() < end {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let second = Figures::read(me, first.sample(), &clocks, true);
        let (c1, t1) = (cpu_now(), std::time::Instant::now());
        // What the kernel says we used over the same window (the machine
        // may be loaded, so no fixed share is assumed); /proc counts in
        // clock ticks, hence the slack.
        let want = (c1 - c0) / (t1 - t0).as_secs_f64() * 1000.0;
        let got = second.permille.map(|p| p as f64);
        assert!(
            got.is_some_and(|g| g > 0.0 && (g - want).abs() <= (0.2 * want).max(100.0)),
            "{got:?} permille, the process used {want:.0}"
        );
    }
}
