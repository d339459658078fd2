"""A stock procman sheriff never hangs on our deputy (issue 15 §2, issue 16
#14b; docs/fleet.md §4.1, man/daemonproxy-bridge.8 "Local services").

`StockSheriff` is a driver that keeps the state a stock procman sheriff
keeps and sends exactly the orders it sends (docs/fleet.md §5.1, §5.2):
every command it knows of a deputy, with `desired_runid`, `force_quit` and
its definition, once a second and after every action; commands a deputy
reports are adopted (`desired_runid = actual_runid`); start bumps the runid
unless running, stop sets `force_quit`, remove leaves the command out of
the orders and forgets it once a report leaves it out; status words follow
the table of §5.2. Nothing here is filtered by group: what a deputy
reports, the sheriff orders.

Against a daemonproxy whose bridge is a controller service (as the man
page says to run it), with a local service `web` (auto-up `always`) and a
second controller `ctl2`, each `--local` mode is driven through "stop
everything", "start group local" and "remove everything". Each test prints
the orders it sent and the notices it received.
"""

import os
import time
import unittest

from support import P, Host, HubProc, Procs, new_lcm, recv_until

PERIOD = 1.0  # a stock sheriff re-sends its orders every second
NOTICE_WORDS = ("orders about it are ignored", "does not report")


class Cmd:
    def __init__(self, cid, exe, group, respawn=False, stop_signal=2, stop_time=7.0):
        self.id, self.exe, self.group = cid, exe, group
        self.respawn, self.stop_signal, self.stop_time = respawn, stop_signal, stop_time
        self.desired, self.force_quit, self.removing = 0, False, False
        self.pid, self.actual, self.exit_code, self.updated = -1, 0, 0, False

    def status(self):
        if not self.updated:
            return "Unknown"
        if self.desired != self.actual and not self.force_quit:
            return "Starting (Command Sent)" if self.pid == 0 else "Restarting (Command Sent)"
        if self.desired == self.actual:
            if self.pid > 0:
                return "Running" if not self.force_quit and not self.removing else "Stopping (Command Sent)"
            if self.removing:
                return "Removing (Command Sent)"
            if self.exit_code == 0:
                return "Stopped (OK)"
            if self.force_quit and os.WIFSIGNALED(self.exit_code) and \
                    os.WTERMSIG(self.exit_code) in (2, 9, 15):
                return "Stopped (OK)"
            return "Stopped (Error)"
        return "Unknown"


class StockSheriff:
    def __init__(self, url, name="stock-host:4242:1"):
        self.lc = new_lcm(url)
        self.name = name
        self.deputies = {}  # name -> {command id: Cmd}
        self.heard = set()
        self.reported = {}  # deputy -> every command id it ever reported
        self.orders_sent = 0
        self.notices = []  # (command id, text)
        self.utime = 0
        self.lc.subscribe("PM_INFO", self._info)
        self.lc.subscribe("PM_OUTPUT", self._output)
        d = P.discovery_t()
        d.utime, d.transmitter_id, d.nonce = int(time.time() * 1e6), name, 0
        self.lc.publish("PM_DISCOVER", d.encode())
        self.next_send = time.monotonic() + PERIOD

    def _info(self, channel, data):
        i = P.deputy_info_t.decode(data)
        cmds = self.deputies.setdefault(i.deputy_id, {})
        self.heard.add(i.deputy_id)
        seen = set()
        for s in i.cmds:
            seen.add(s.cmd.command_id)
            self.reported.setdefault(i.deputy_id, set()).add(s.cmd.command_id)
            c = cmds.get(s.cmd.command_id)
            if c is None:  # adoption
                c = Cmd(s.cmd.command_id, s.cmd.exec_str, s.cmd.group, s.cmd.auto_respawn, s.cmd.stop_signal,
                        s.cmd.stop_time_allowed)
                c.desired = s.actual_runid
                cmds[c.id] = c
            c.pid, c.actual, c.exit_code, c.updated = s.pid, s.actual_runid, s.exit_code, True
            # one-shot protection
            if c.pid == 0 and c.actual == c.desired and not c.respawn and not c.force_quit:
                c.force_quit = True
        for cid in [k for k, c in cmds.items() if c.removing and k not in seen]:
            del cmds[cid]

    def _output(self, channel, data):
        o = P.output_t.decode(data)
        for cid, text in zip(o.command_ids, o.text):
            if any(w in text for w in NOTICE_WORDS):
                self.notices.append((cid, text))

    def send(self):
        for dep in self.heard:
            o = P.orders_t()
            self.utime = max(int(time.time() * 1e6), self.utime + 1)
            o.utime, o.deputy_id, o.sheriff_id = self.utime, dep, self.name
            o.cmds = []
            for c in self.deputies.get(dep, {}).values():
                if c.removing:
                    continue
                d = P.cmd_desired_t()
                d.cmd = P.cmd_t()
                d.cmd.command_id, d.cmd.exec_str, d.cmd.group = c.id, c.exe, c.group
                d.cmd.auto_respawn, d.cmd.stop_signal, d.cmd.stop_time_allowed = c.respawn, c.stop_signal, c.stop_time
                d.desired_runid, d.force_quit = c.desired, c.force_quit
                o.cmds.append(d)
            o.ncmds = len(o.cmds)
            self.lc.publish("PM_ORDERS", o.encode())
            self.orders_sent += 1
        self.next_send = time.monotonic() + PERIOD

    def pump(self, seconds):
        self.wait(lambda: False, seconds)

    def wait(self, pred, timeout):
        end = time.monotonic() + timeout
        while not pred():
            now = time.monotonic()
            if now >= end:
                return False
            if now >= self.next_send:
                self.send()
            self.lc.handle_timeout(20)
        return True

    # The stock actions, each followed by orders at once.
    def add(self, dep, cid, exe, group):
        self.deputies.setdefault(dep, {})[cid] = Cmd(cid, exe, group, stop_signal=15, stop_time=2.0)
        self.send()

    def all(self):
        return [c for cmds in self.deputies.values() for c in cmds.values()]

    def group(self, g):
        return [c for c in self.all() if c.group.split("/")[:len(g.split("/"))] == g.split("/")]

    def start(self, cmds):
        for c in cmds:
            if c.pid > 0 and not c.force_quit:
                continue
            c.desired += 1
            c.force_quit = False
        self.send()

    def stop(self, cmds):
        for c in cmds:
            c.force_quit = True
        self.send()

    def remove(self, cmds):
        for c in cmds:
            c.removing = True
        self.send()

    def waited(self, cmds, status):
        """A script's `wait "running"` / `wait "stopped"` (docs/fleet.md §5.4)."""
        if status == "running":
            return all(c.status() == "Running" or
                       (c.status() in ("Stopped (OK)", "Stopped (Error)") and c.desired == c.actual) for c in cmds)
        return all(c.status() in ("Stopped (OK)", "Stopped (Error)") for c in cmds)

    def table(self):
        return {c.id: (c.status(), c.pid) for c in self.all()}


class StockSheriffAgainstEachMode(unittest.TestCase):
    def setUp(self):
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)

    def ask(self, h, lines):
        c = h.control()
        c.sendall("".join(l + "\n" for l in lines).encode() + b"echo\tdone-q\n")
        return recv_until(c, b"done-q\n").decode(errors="replace")

    def run_mode(self, mode):
        hub = HubProc(self.procs)
        dep = f"dep-{mode or 'default'}"
        args = ["--local", mode] if mode else []
        h = Host(self.procs, hub.url, dep, bridge_args=args, bridge_as_service=True)
        out = self.ask(h, [
            "service.args\tweb\tsleep\t300", "service.auto_up\tweb\t1\talways",
            "service.args\tctl2\tsleep\t300", "service.fds\tctl2\tcontrol.socket\tcontrol.socket\tstderr",
            "service.start\tctl2",
        ])
        self.assertNotIn("error", out)
        s = StockSheriff(hub.url)
        self.assertTrue(s.wait(lambda: dep in s.heard, 8), h.bridge_log())
        bridge_pid = h.statedump()["bridge"][1]
        web_pid = h.statedump()["web"][1]
        observe = mode in ("observe", "control")
        log = [f"--local {mode or 'hide (default)'}"]

        # Two procman commands, started; the local one adopted as reported.
        for cid in ("p1", "p2"):
            s.add(dep, cid, "sleep 300", "procs")
        s.start(s.all())
        want = {"p1", "p2", "web"} if observe else {"p1", "p2"}
        ok = s.wait(lambda: set(s.table()) == want and s.waited(s.group("procs"), "running"), 8)
        self.assertTrue(ok, f"{s.table()}\n{h.bridge_log()}")
        if observe:
            self.assertEqual(s.table()["web"], ("Running", int(web_pid)))

        # stop everything wait "stopped"
        s.stop(s.all())
        if mode == "observe":
            # The running local service is not the deputy's to stop: the
            # procman commands stop, web goes on running and is reported so.
            ok = s.wait(lambda: s.waited(s.group("procs"), "stopped"), 8)
        else:
            ok = s.wait(lambda: s.waited(s.all(), "stopped"), 10)
        self.assertTrue(ok, f"stop everything did not end: {s.table()}\n{h.bridge_log()}")
        s.pump(2.5)  # orders repeated: no further notice, no new bridge
        log.append(f"stop everything: {s.table()}")
        if mode == "observe":
            self.assertEqual(s.table()["web"], ("Stopping (Command Sent)", int(web_pid)))
            self.assertEqual(h.statedump()["web"], ("up", web_pid))
        if mode == "control":
            self.assertEqual(h.statedump()["web"][0], "down", "control: web stopped, not respawned")
            self.assertEqual(s.table()["web"][0], "Stopped (OK)")

        # start group "local" wait "running"
        if observe:
            s.start(s.group("local"))
            ok = s.wait(lambda: s.waited(s.group("local"), "running"), 8)
            self.assertTrue(ok, f"start group local did not end: {s.table()}\n{h.bridge_log()}")
            s.pump(1.5)
            self.assertEqual(s.table()["web"][0], "Running", "a status word that stays true")
            log.append(f"start group local: {s.table()}")

        # remove everything; nothing is listed afterwards ("load config" may run)
        s.remove(s.all())
        ok = s.wait(lambda: not s.all(), 8)
        self.assertTrue(ok, f"remove everything did not end: {s.table()}\n{h.bridge_log()}")
        s.pump(2.0)
        self.assertEqual(s.table(), {}, "a removed command came back")
        dump = h.statedump()
        self.assertFalse([n for n in dump if n.startswith("pm.")], dump)
        self.assertIn("web", dump, "a local service is never deleted")
        self.assertEqual(dump["bridge"], ("up", bridge_pid), "the bridge was stopped or restarted")
        self.assertEqual(s.reported.get(dep, set()) - {"p1", "p2", "web"}, set(),
                         "the bridge's own service or another controller was reported")

        per_id = {}
        for cid, _ in s.notices:
            per_id[cid] = per_id.get(cid, 0) + 1
        log.append(f"orders sent: {s.orders_sent}, notices received: {len(s.notices)} {per_id}")
        print("\n  " + "\n  ".join(log), flush=True)
        # An order about a local service is answered once for each
        # different order: under observe, the stop and then the start of
        # web; under control and hide, nothing is refused.
        self.assertEqual(per_id, {"web": 2} if mode == "observe" else {}, s.notices)

    def test_hide_is_the_default(self):
        self.run_mode(None)

    def test_hide(self):
        self.run_mode("hide")

    def test_observe(self):
        self.run_mode("observe")

    def test_control(self):
        self.run_mode("control")


if __name__ == "__main__":
    unittest.main()
