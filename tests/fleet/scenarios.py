"""Bridge scenarios that run over any LCM URL. test_bridge.py runs them
over tcpq directly and over udpm inside a fresh network namespace:

    python scenarios.py NAME URL     (exit 0 on success; the failure on stderr)
"""

import os
import signal
import subprocess
import sys
import time

from support import Host, Procs, Sheriff, cmd, wait_until


def lifecycle(procs, url):
    """Create, start, output, stop, exit codes, restart, remove — as a stock
    sheriff would see them."""
    h = Host(procs, url, "dep-a")
    s = Sheriff(url)
    assert s.wait(lambda: "dep-a" in s.infos, 5), "no deputy_info_t from the bridge\n" + h.bridge_log()
    info = s.infos["dep-a"]
    assert info.cmds == [] and info.ncmds == 0, info.cmds
    assert info.phys_mem_total_bytes > 0 and -1 <= info.cpu_load <= 1

    printer = "sh -c 'for i in 1 2 3 4 5; do echo line $i; done; echo a; exec sleep 60'"
    run = [cmd("p", printer, 1)]
    s.orders("dep-a", run)
    ok = s.wait(lambda: (st := s.status("dep-a", "p")) is not None and st.pid > 0, 5, lambda: s.orders("dep-a", run))
    assert ok, "command p not running: %r\n%s" % (s.status("dep-a", "p"), h.bridge_log())
    st = s.status("dep-a", "p")
    assert st.actual_runid == 1 and st.exit_code == 0, (st.actual_runid, st.exit_code)
    pid = st.pid
    # the pid is the service's, as daemonproxy reports it
    assert h.statedump()["pm.p"] == ("up", str(pid)), h.statedump()
    want = "".join(f"line {i}\n" for i in range(1, 6)) + "a\n"
    assert s.wait(lambda: s.text("p") == want, 5), "output: %r" % s.text("p")
    # every output message is small and carries the deputy id
    assert all(o.deputy_id == "dep-a" for _, o in s.outputs)

    # stop (stop_signal 15): Stopped (OK) with the raw status 15
    stop = [cmd("p", printer, 1, force_quit=True)]
    s.orders("dep-a", stop)
    assert s.wait(lambda: s.status("dep-a", "p").pid == 0, 5, lambda: s.orders("dep-a", stop))
    st = s.status("dep-a", "p")
    assert (st.actual_runid, st.exit_code) == (1, 15), (st.actual_runid, st.exit_code)
    assert s.wait(lambda: "Terminated\n" in s.text("p"), 3), s.text("p")

    # a failing command: raw wait status 3 << 8
    fail = [cmd("p", "sh -c 'exit 3'", 2)]
    s.orders("dep-a", fail)
    assert s.wait(lambda: (st := s.status("dep-a", "p")).actual_runid == 2 and st.pid == 0 and st.exit_code == 768,
                  5, lambda: s.orders("dep-a", fail)), vars(s.status("dep-a", "p"))

    # restart while running: a new pid and runid
    sleeper = "sleep 60"
    s.orders("dep-a", [cmd("p", sleeper, 3)])
    assert s.wait(lambda: s.status("dep-a", "p").pid > 0, 5, lambda: s.orders("dep-a", [cmd("p", sleeper, 3)]))
    first = s.status("dep-a", "p").pid
    s.orders("dep-a", [cmd("p", sleeper, 4)])
    assert s.wait(lambda: (st := s.status("dep-a", "p")).pid not in (0, first) and st.actual_runid == 4, 6,
                  lambda: s.orders("dep-a", [cmd("p", sleeper, 4)])), vars(s.status("dep-a", "p"))
    second = s.status("dep-a", "p").pid
    assert not os.path.exists(f"/proc/{first}") or open(f"/proc/{first}/stat").read().split()[2] == "Z"

    # remove: stopped, then gone from info and from daemonproxy
    s.orders("dep-a", [])
    assert s.wait(lambda: s.status("dep-a", "p") is None, 6, lambda: s.orders("dep-a", [])), s.infos["dep-a"].cmds
    assert "pm.p" not in h.statedump()
    assert wait_until(lambda: not os.path.exists(f"/proc/{second}") or
                      open(f"/proc/{second}/stat").read().split()[2] == "Z", 3)


def multihost(procs, url):
    """Run in the sheriff's namespace; NS_A and NS_B name the deputies'
    namespaces, LINK_A the sheriff-side device of A's link (env)."""
    ns_a, ns_b, link_a = os.environ["NS_A"], os.environ["NS_B"], os.environ["LINK_A"]
    a = Host(procs, url, "host-a", prefix=["ip", "netns", "exec", ns_a])
    b = Host(procs, url, "host-b", prefix=["ip", "netns", "exec", ns_b])
    s = Sheriff(url)
    assert s.wait(lambda: "host-a" in s.infos and "host-b" in s.infos, 8), \
        "deputies not seen: %s\n%s\n%s" % (list(s.infos), a.bridge_log(), b.bridge_log())
    want = {"host-a": [cmd("a1", "sleep 120", 1)], "host-b": [cmd("b1", "sleep 120", 1)]}

    def send():
        for dep, cmds in want.items():
            s.orders(dep, cmds)

    def running(dep, cid):
        st = s.status(dep, cid)
        return st is not None and st.pid > 0

    send()
    assert s.wait(lambda: running("host-a", "a1") and running("host-b", "b1"), 8, send), \
        "not steered on both: %s %s" % (s.status("host-a", "a1"), s.status("host-b", "b1"))
    a1 = s.status("host-a", "a1").pid

    # A's link goes down for 5 s: A keeps its last orders, B is still steered
    subprocess.run(["ip", "link", "set", link_a, "down"], check=True)
    down_at = time.monotonic()
    want["host-b"] = [cmd("b1", "sleep 120", 1), cmd("b2", "sleep 120", 1)]
    want["host-a"] = [cmd("a1", "sleep 120", 1), cmd("a2", "sleep 120", 1)]
    assert s.wait(lambda: running("host-b", "b2"), 4, send), "B not steered while A is away"
    heard = lambda: max((t for t, i in s.info_log if i.deputy_id == "host-a"), default=0)  # noqa: E731
    s.wait(lambda: time.monotonic() - down_at >= 5, 6, send)
    assert heard() < down_at + 0.1, "info from A crossed a link that was down"
    assert a.statedump().get("pm.a1") == ("up", str(a1)), "A did not keep its last orders: %s" % a.statedump()
    assert "pm.a2" not in a.statedump(), "orders crossed a link that was down"
    subprocess.run(["ip", "link", "set", link_a, "up"], check=True)
    up_at = time.monotonic()
    # picked up again: A's info returns and the orders sent meanwhile apply
    assert s.wait(lambda: heard() > up_at and running("host-a", "a2"), 10, send), \
        "A not picked up again\n" + a.bridge_log()
    assert s.status("host-a", "a1").pid == a1, "a1 was restarted"


def multihost_sheriff(procs, url):
    """daemonproxy-sheriff in the sheriff's namespace steering deputies in
    NS_A and NS_B: a script starts a group across both and waits for it to
    run; status figures match /proc; logs -f streams without loss."""
    from support import binary
    ns_a, ns_b = os.environ["NS_A"], os.environ["NS_B"]
    a = Host(procs, url, "host-a", prefix=["ip", "netns", "exec", ns_a])
    b = Host(procs, url, "host-b", prefix=["ip", "netns", "exec", ns_b])
    tmp = a.dir
    cfg = os.path.join(tmp, "fleet.cfg")
    with open(cfg, "w") as f:
        f.write("""group "grp" {
    cmd "busy" { exec = "sh -c 'while :; do :; done'"; deputy = "host-a"; }
    cmd "idle" { exec = "sleep 300"; deputy = "host-b"; }
    cmd "flood" { exec = "seq 20000"; deputy = "host-b"; }
}
script "bringup" { start group "grp" wait "running"; }
""")
    ctl = os.path.join(tmp, "sheriff.sock")
    sheriff = binary("daemonproxy-sheriff")
    log = procs.open(os.path.join(tmp, "sheriff.log"))
    procs.start([sheriff, "--lcm-url", url, "--control", ctl, "serve", cfg], stdout=log, stderr=log)
    assert wait_until(lambda: os.path.exists(ctl), 5)

    def cli(*args, timeout=30):
        return subprocess.run([sheriff, "--control", ctl, *args], capture_output=True, timeout=timeout)

    def rows():
        out = cli("status").stdout.decode().splitlines()[1:]
        return {tuple(l.split()[:2]): l.split() for l in out}

    assert wait_until(lambda: len(rows()) == 3 and all(r[3] != "Unknown" for r in rows().values()), 10), rows()
    follow = subprocess.Popen([sheriff, "--control", ctl, "logs", "flood", "--deputy", "host-b", "-n", "0", "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.procs.append(follow)
    time.sleep(0.3)
    r = cli("run", "bringup")
    assert r.returncode == 0, r.stderr.decode()
    st = rows()
    busy, idle = st[("host-a", "busy")], st[("host-b", "idle")]
    assert busy[3] == "Running" and idle[3] == "Running", st
    assert a.statedump()["pm.busy"] == ("up", busy[4]) and b.statedump()["pm.idle"] == ("up", idle[4])
    # figures against /proc, over the same second the deputy measures
    clk, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    pid = int(busy[4])

    def ticks():
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12]), time.monotonic()

    ok = False
    for _ in range(8):
        t0 = ticks()
        time.sleep(1.0)
        t1 = ticks()
        proc_pct = 100.0 * (t1[0] - t0[0]) / clk / (t1[1] - t0[1]) / ncpu
        shown = float(rows()[("host-a", "busy")][5])
        if abs(shown - proc_pct) <= 0.1 * proc_pct:
            ok = True
            break
    assert ok, f"CPU {shown}% shown, {proc_pct:.1f}% from /proc"
    # the deputy samples once a second: a sample taken while the new process
    # was still mapping its libraries is replaced by the next report
    ipid = int(idle[4])
    ok = False
    for _ in range(8):
        with open(f"/proc/{ipid}/status") as f:
            vmrss = int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) * 1024
        shown = rows()[("host-b", "idle")][6]
        mult = {"K": 1024, "M": 1 << 20, "G": 1 << 30}[shown[-1]]
        shown_b = float(shown[:-1]) * mult
        if abs(shown_b - vmrss) <= 0.1 * vmrss + 64 * 1024:
            ok = True
            break
        time.sleep(1.0)
    assert ok, f"RSS {shown} shown, VmRSS {vmrss}"
    # the flood's output, every line, through logs -f
    os.set_blocking(follow.stdout.fileno(), False)
    got = b""
    end = time.monotonic() + 15
    while got.count(b"\n") < 20000 and time.monotonic() < end:
        try:
            c = os.read(follow.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            c = None
        if c:
            got += c
        else:
            time.sleep(0.02)
    assert got == "".join(f"{i}\n" for i in range(1, 20001)).encode(), f"{got.count(b'{}')} lines followed"


def oneshot_sheriff(procs, url):
    """daemonproxy-sheriff verbs with no sheriff serving, in the sheriff's
    namespace, against deputies in NS_A and NS_B (issue 16 #14, #14b):
    each acts on every deputy's commands, ordering only after the reports
    of all (not 2 ms after the first), and a wait over --all does not hang
    on host-a's local service, which its bridge will not stop."""
    from support import P, binary
    ns_a, ns_b = os.environ["NS_A"], os.environ["NS_B"]
    keeper = ["service.args\tkeeper\tsleep\t300", "service.start\tkeeper"]
    a = Host(procs, url, "host-a", prefix=["ip", "netns", "exec", ns_a], conf_lines=keeper,
             bridge_args=["--local", "observe"])
    b = Host(procs, url, "host-b", prefix=["ip", "netns", "exec", ns_b])
    s = Sheriff(url)
    seen = []  # (monotonic, kind, sender)
    s.lc.subscribe("PM_ORDERS", lambda c, d: seen.append((time.monotonic(), "orders", P.orders_t.decode(d).sheriff_id)))
    s.lc.subscribe("PM_DISCOVER", lambda c, d: seen.append(
        (time.monotonic(), "discover", P.discovery_t.decode(d).transmitter_id)))
    assert s.wait(lambda: "host-a" in s.infos and "host-b" in s.infos, 8), "deputies not seen"
    want = {"host-a": [cmd("w1", "sleep 300", 1, group="web")], "host-b": [cmd("w2", "sleep 300", 1, group="web")]}

    def send():
        for dep, cmds in want.items():
            s.orders(dep, cmds)

    def pid(host, svc):
        st = host.statedump().get(svc, ("down", "-"))
        return st[1] if st[0] == "up" else None

    send()
    assert s.wait(lambda: pid(a, "pm.w1") and pid(b, "pm.w2"), 8, send), "w1 and w2 not started"
    keeper_pid = pid(a, "keeper")
    assert keeper_pid, a.statedump()
    # From here on the test's sheriff only listens; the deputies keep its
    # last orders.
    sheriff = binary("daemonproxy-sheriff")

    def oneshot(*args, timeout=40):
        t0 = time.monotonic()
        p = subprocess.Popen([sheriff, "--lcm-url", url, "--control", os.path.join(a.dir, "none.sock"), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = b""
        try:
            while p.poll() is None:
                assert time.monotonic() - t0 < timeout, f"{args} still running after {timeout} s"
                s.lc.handle_timeout(20)
        finally:
            if p.poll() is None:
                p.kill()
            err = p.communicate()[1]
        return p.returncode, err.decode(errors="replace"), p.pid, time.monotonic() - t0

    # stop --all --wait stopped: both deputies, and the local service is
    # left alone (its bridge said it will not act on it).
    rc, err, _, took = oneshot("stop", "--all", "--wait", "stopped", "--timeout", "20")
    assert rc == 0 and took < 15, f"stop --all: exit {rc} after {took:.1f} s: {err}"
    assert not pid(a, "pm.w1") and not pid(b, "pm.w2"), (a.statedump(), b.statedump())
    assert pid(a, "keeper") == keeper_pid, "the local service was touched"
    assert "will not act on them" in err, err
    rc, err, _, _ = oneshot("start", "--group", "web", "--wait", "running", "--timeout", "20")
    assert rc == 0 and pid(a, "pm.w1") and pid(b, "pm.w2"), f"start --group web: exit {rc}: {err}"
    # restart --group web, three times: every time both commands get a new
    # run, and the orders go out after a report period, not at once.
    for n in range(3):
        before = (pid(a, "pm.w1"), pid(b, "pm.w2"))
        rc, err, spid, _ = oneshot("restart", "--group", "web")
        assert rc == 0 and "2 of 2 command(s) changed" in err, f"restart {n}: exit {rc}: {err}"
        assert wait_until(lambda: all(p and p != q for p, q in zip((pid(a, "pm.w1"), pid(b, "pm.w2")), before)), 5), \
            f"restart {n}: not both restarted: {before} -> {(pid(a, 'pm.w1'), pid(b, 'pm.w2'))}"
        # its messages: sheriff_id is "<hostname>:<pid>:<utime>"
        mine = [x for x in seen if x[2].split(":")[1:2] == [str(spid)]]
        disc = next((t for t, kind, _ in mine if kind == "discover"), None)
        first = next((t for t, kind, _ in mine if kind == "orders"), None)
        assert disc is not None and first is not None, mine
        assert first - disc >= 1.0, f"restart {n}: orders {1000 * (first - disc):.0f} ms after the discovery"
    assert pid(a, "keeper") == keeper_pid


def main():
    name, url = sys.argv[1], sys.argv[2]
    procs = Procs()
    try:
        globals()[name](procs, url)
        print(f"{name} over {url}: ok")
    except AssertionError as e:
        print(f"{name} over {url} failed: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    main()
