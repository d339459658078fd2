"""Bridge scenarios that run over any LCM URL. test_bridge.py runs them
over tcpq directly and over udpm inside a fresh network namespace:

    python scenarios.py NAME URL     (exit 0 on success; the failure on stderr)
"""

import os
import signal
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
