//! The figures a deputy reports, read from /proc (docs/fleet.md §4.9):
//! host CPU load and memory, each process's CPU and memory, and the
//! descendants of a process (for stops, §4.7). See proc(5).

use std::collections::HashMap;

/// Jiffies of the `cpu ` line of /proc/stat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCpu {
    /// All time: user, nice, system, idle, iowait, irq, softirq, steal.
    pub total: u64,
    /// `total` − idle − iowait.
    pub busy: u64,
}

impl HostCpu {
    /// Parse the text of /proc/stat.
    pub fn parse(stat: &str) -> Option<HostCpu> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().unwrap_or(0)).collect();
        if v.len() < 4 {
            return None;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        Some(HostCpu { total, busy: total.saturating_sub(idle) })
    }

    /// Read /proc/stat now.
    pub fn read() -> Option<HostCpu> {
        HostCpu::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Load in [0,1] from `earlier` to `self`; `None` without a delta.
    pub fn load_since(&self, earlier: &HostCpu) -> Option<f32> {
        let dt = self.total.checked_sub(earlier.total).filter(|&d| d > 0)?;
        let db = self.busy.saturating_sub(earlier.busy);
        Some((db as f64 / dt as f64).clamp(0.0, 1.0) as f32)
    }
}

/// Memory figures of /proc/meminfo, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// MemTotal.
    pub total: i64,
    /// MemAvailable, or MemFree where the kernel has no MemAvailable.
    pub free: i64,
    /// SwapTotal.
    pub swap_total: i64,
    /// SwapFree.
    pub swap_free: i64,
}

impl Memory {
    /// Parse the text of /proc/meminfo.
    pub fn parse(text: &str) -> Memory {
        let mut kb: HashMap<&str, i64> = HashMap::new();
        for l in text.lines() {
            let mut f = l.split_whitespace();
            if let (Some(k), Some(v)) = (f.next(), f.next()) {
                kb.insert(k.trim_end_matches(':'), v.parse().unwrap_or(0));
            }
        }
        let get = |k: &str| kb.get(k).copied().unwrap_or(0) * 1024;
        let free = kb.get("MemAvailable").map_or(get("MemFree"), |v| v * 1024);
        Memory { total: get("MemTotal"), free, swap_total: get("SwapTotal"), swap_free: get("SwapFree") }
    }

    /// Read /proc/meminfo now.
    pub fn read() -> Memory {
        Memory::parse(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
    }
}

/// The fields of /proc/PID/stat the bridge uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 4.
    pub ppid: i32,
    /// Fields 14 + 15, jiffies.
    pub cpu: u64,
    /// Field 22, jiffies after boot: with the pid, identifies the process.
    pub start_time: u64,
    /// Field 23, bytes.
    pub vsize: i64,
    /// Field 24 × page size, bytes (from statm when read by [`ProcStat::read`]).
    pub rss: i64,
}

/// The system page size.
pub fn page_size() -> i64 {
    crate::sys::sysconf(libc::_SC_PAGESIZE, 4096)
}

impl ProcStat {
    /// Parse the text of /proc/PID/stat; fields are counted after the last
    /// `)` because the command name may hold spaces and parentheses.
    pub fn parse(text: &str, page: i64) -> Option<ProcStat> {
        let rest = &text[text.rfind(')')? + 1..];
        // rest starts at field 3 (state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<i64>().ok());
        Some(ProcStat {
            ppid: n(4)? as i32,
            cpu: (n(14)? + n(15)?) as u64,
            start_time: n(22)? as u64,
            vsize: n(23)?,
            rss: n(24)? * page,
        })
    }

    /// Read /proc/PID/stat now, with the resident set from
    /// /proc/PID/statm: field 24 of stat is approximate on current kernels
    /// (it lagged `VmRSS` by 170-250 kB for a `sleep`), statm's is the
    /// figure `VmRSS` shows.
    pub fn read(pid: i32) -> Option<ProcStat> {
        let page = page_size();
        let mut s = ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?, page)?;
        if let Ok(pages) = crate::figures::read_rss(pid) {
            s.rss = pages * page;
        }
        Some(s)
    }
}

/// CPU share of one process: Δ(utime+stime) / Δ(host total), both in
/// jiffies over all CPUs, so one busy core of 8 reads 0.125.
pub fn cpu_share(prev_proc: u64, now_proc: u64, prev_host: &HostCpu, now_host: &HostCpu) -> f32 {
    let dt = now_host.total.saturating_sub(prev_host.total);
    if dt == 0 {
        return 0.0;
    }
    (now_proc.saturating_sub(prev_proc) as f64 / dt as f64).clamp(0.0, 1.0) as f32
}

/// Every process on the system with its stat, by pid.
pub fn all_processes() -> HashMap<i32, ProcStat> {
    let page = page_size();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(s) = ProcStat::parse(&t, page)
        {
            out.insert(pid, s);
        }
    }
    out
}

/// The descendants of `root` (children, their children, ...) with their
/// start times, from a snapshot of [`all_processes`].
pub fn descendants(root: i32, procs: &HashMap<i32, ProcStat>) -> Vec<(i32, u64)> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, s) in procs {
        kids.entry(s.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in kids.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if c != root && !out.iter().any(|&(q, _)| q == c) {
                out.push((c, procs[&c].start_time));
                todo.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpu() {
        let a = HostCpu::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, HostCpu { total: 1000, busy: 150 });
        let b = HostCpu::parse("cpu  200 0 100 1500 100 50 0 50 0 0\n").unwrap();
        assert_eq!(b.load_since(&a), Some(250.0 / 1000.0));
        assert_eq!(a.load_since(&a), None);
        assert_eq!(HostCpu::parse("intr 1 2"), None);
    }

    #[test]
    fn meminfo() {
        let m = Memory::parse(
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nSwapTotal: 50 kB\nSwapFree: 40 kB\n",
        );
        assert_eq!(m, Memory { total: 1024000, free: 614400, swap_total: 51200, swap_free: 40960 });
        assert_eq!(Memory::parse("MemTotal: 10 kB\nMemFree: 3 kB\n").free, 3072);
    }

    #[test]
    fn proc_stat() {
        // a command name with spaces and a ')' inside
        let t = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 30 12 0 0 20 0 1 0 5000 1048576 25 18446744073709551615";
        let s = ProcStat::parse(t, 4096).unwrap();
        assert_eq!(s, ProcStat { ppid: 7, cpu: 42, start_time: 5000, vsize: 1048576, rss: 25 * 4096 });
        // a process with no system time still shows its user time (the
        // stock deputy reports 0 there)
        let h0 = HostCpu { total: 1000, busy: 0 };
        let h1 = HostCpu { total: 1200, busy: 0 };
        assert_eq!(cpu_share(10, 60, &h0, &h1), 0.25);
        assert_eq!(cpu_share(10, 60, &h0, &h0), 0.0);
        let me = ProcStat::read(std::process::id() as i32).unwrap();
        assert!(me.rss > 0 && me.vsize > 0);
    }

    #[test]
    fn descendant_tree() {
        let p = |ppid, start_time| ProcStat { ppid, start_time, ..Default::default() };
        let procs: HashMap<i32, ProcStat> =
            [(10, p(1, 1)), (11, p(10, 2)), (12, p(11, 3)), (13, p(1, 4)), (14, p(12, 5))].into_iter().collect();
        let mut d = descendants(10, &procs);
        d.sort();
        assert_eq!(d, vec![(11, 2), (12, 3), (14, 5)]);
        assert!(descendants(13, &procs).is_empty());
    }
}
