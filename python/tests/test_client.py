"""Tests for the Python client module, python/daemonproxy/.

Against the real binary: spawned with -i, over the control socket (-S),
and as a controller service (a Python script using from_service_fds()).
Run: python3 -m unittest discover -s python/tests -v
"""

import os
import select
import signal
import socket
import sys
import textwrap
import time
import unittest

from dptest import DaemonTestCase, daemonproxy as dp


class EventParsing(unittest.TestCase):
    def test_service_state_fields(self):
        ev = dp.Event("service.state\tfoo\tdown\t12\t345\tsignal\tSIGTERM\t3\t0")
        self.assertEqual(ev.name, "service.state")
        self.assertEqual(ev.fields[0], "foo")
        self.assertEqual(
            (ev.service, ev.state, ev.ts, ev.pid, ev.exit_reason, ev.exit_value, ev.uptime, ev.downtime),
            ("foo", "down", 12, 345, "signal", "SIGTERM", 3, 0),
        )
        ev = dp.Event("service.state\tfoo\tstart\t12.5\t-\t-\t-\t-\t-")
        self.assertEqual((ev.state, ev.ts, ev.pid, ev.exit_value, ev.uptime), ("start", 12.5, None, None, None))
        ev = dp.Event("service.state\tfoo\tdown\t12\t345\texit\t7\t0\t0")
        self.assertEqual(ev.exit_value, 7)

    def test_other_events(self):
        ev = dp.Event("service.args\tfoo\tsh\t-c\techo a\tb")
        self.assertEqual(ev.args, ["sh", "-c", "echo a", "b"])
        self.assertEqual(ev.value, "sh\t-c\techo a\tb")
        self.assertIsNone(ev.state)
        self.assertEqual(dp.Event("service.args\tfoo\t").args, [])
        err = dp.Event('error\tNo such service, for command "service.start\tx"')
        self.assertFalse(err.is_broadcast)
        self.assertEqual(err.text, 'No such service, for command "service.start\tx"')
        e = dp.DaemonproxyError(err.text)
        self.assertEqual(e.message, "No such service")
        self.assertEqual(dp.Event("signal\tSIGHUP\t203\t2").count, 2)
        self.assertEqual(dp.Event("fd.state\tnull\tspecial\tread,write\t/dev/null").handle, "null")
        self.assertTrue(dp.Event("overflow").is_broadcast)

    def test_parse_statedump(self):
        state = dp.parse_statedump(
            [
                "fd.state\tlog.r\tpipe\tfrom\tlog.w",
                "fd.state\tgone\tfile\twrite\t/x",
                "fd.state\tgone\tdeleted",
                "service.state\tbar\tup\t10\t99\t-\t-\t5\t-",
                "service.tags\tbar\tcolor=blue\tx",
                "service.args\tbar\ta\tb",
                "service.fds\tbar\tnull\tlog.w\tlog.w",
                "service.auto_up\tbar\t2\talways",
                "service.state\tbaz\tdown\t-\t-\t-\t-\t-\t-",
                "service.fds\tbaz\t",
                "service.auto_up\tbaz\t-",
                "service.state\told\tdown\t-\t-\t-\t-\t-\t-",
                "service.state\told\tdeleted\t-\t-\t-\t-\t-\t-",
                "signal\tSIGHUP\t203\t1",
            ]
        )
        self.assertEqual(state["handles"], {"log.r": {"type": "pipe", "flags": ["from"], "description": "log.w"}})
        bar = state["services"]["bar"]
        self.assertEqual((bar["state"], bar["pid"], bar["uptime"]), ("up", 99, 5))
        self.assertEqual(bar["tags"], ["color=blue", "x"])
        self.assertEqual(bar["args"], ["a", "b"])
        self.assertEqual(bar["fds"], ["null", "log.w", "log.w"])
        self.assertEqual(bar["auto_up"], {"interval": 2, "triggers": ["always"]})
        self.assertEqual(state["services"]["baz"]["fds"], [])
        self.assertIsNone(state["services"]["baz"]["auto_up"])
        self.assertNotIn("old", state["services"])
        self.assertEqual(state["signals"], {"SIGHUP": {"ts": 203, "count": 1}})

    def test_valid_name(self):
        self.assertTrue(dp.valid_name("a.b_c-9"))
        for bad in ("", "a b", "x" * 32, "a\tb", "é", None):
            self.assertFalse(dp.valid_name(bad), bad)


class Spawned(DaemonTestCase):
    def test_banner_skipped_and_sync(self):
        c = self.spawn()
        self.assertEqual(len(c.banner), 6)
        self.assertTrue(c.banner[0].startswith("daemonproxy version "))
        c.send("echo", "hello")
        lines = c.sync()
        self.assertEqual([e.raw for e in lines], ["hello"])
        self.assertEqual(c.take_events(), [], "echo replies are not queued")

    def test_send_validates_fields(self):
        c = self.spawn()
        for bad in (("echo", "a\tb"), ("echo", "a\nb"), ("service.args", "x", "y" * 1100)):
            with self.assertRaises(ValueError):
                c.send(*bad)
        with self.assertRaises(ValueError):
            c.start("x", ["ok", "not\tok"])
        self.assertEqual(c.sync(), [], "nothing was sent")

    def test_command_errors(self):
        c = self.spawn()
        replies = c.command("service.start", "nope")
        self.assertEqual(len(replies), 1)
        self.assertEqual(replies[0].name, "error")
        self.assertEqual(replies[0].text, 'No such service, for command "service.start\tnope"')
        with self.assertRaises(dp.DaemonproxyError) as cm:
            c.command("service.start", "nope", check=True)
        self.assertEqual(cm.exception.message, "No such service")
        warnings = c.command("service.fds", "w", "null", "nosuch.w", check=True)
        self.assertEqual([e.raw for e in warnings], ['warning\tfd "nosuch.w" is not yet defined'])
        with self.assertRaises(dp.DaemonproxyError) as cm:
            c.signal("nope", "SIGTERM")
        self.assertEqual(cm.exception.message, "No such service")

    def test_start_wait_and_events(self):
        c = self.spawn()
        c.start("job", ["sh", "-c", "exit 7"], fds=["null", "null", "null"], tags=["kind=test"])
        down = c.wait_state("job", "down", timeout=5)
        self.assertEqual((down.exit_reason, down.exit_value), ("exit", 7))
        self.assertIsInstance(down.pid, int)
        seen = []
        for ev in c.events(timeout=1):
            seen.append(ev)
            if ev.name == "service.state" and ev.state == "down":
                break
        states = [e.state for e in seen if e.name == "service.state"]
        self.assertEqual(states, ["start", "up", "down"], "wait_state() took nothing away from events()")
        self.assertIn("service.tags\tjob\tkind=test", [e.raw for e in seen])
        self.assertEqual(seen[-1].raw, down.raw)

        c.start("nap", ["sleep", "30"])
        up = c.wait_state("nap", "up", timeout=5)
        c.signal("nap", "SIGTERM")
        down = c.wait_state("nap", "down", timeout=5)
        self.assertEqual((down.pid, down.exit_reason, down.exit_value), (up.pid, "signal", "SIGTERM"))
        c.delete("nap")
        self.assertEqual(c.wait_state("nap", "deleted", timeout=1).state, "deleted")
        with self.assertRaises(dp.DaemonproxyTimeout):
            c.wait_state("job", "up", timeout=0.3)

    def test_statedump(self):
        c = self.spawn()
        c.command("fd.pipe", "log.r", "log.w", check=True)
        c.batch(
            [
                ("service.tags", "svc", "a=1", "b"),
                ("service.args", "svc", "sh", "-c", "echo hi"),
                ("service.fds", "svc", "null", "log.w", "stderr"),
                ("service.auto_up", "svc", "5", "SIGUSR2"),
            ],
            check=True,
        )
        os.kill(c.process.pid, signal.SIGUSR1)
        dump = c.statedump()
        deadline = time.monotonic() + 5
        while "SIGUSR1" not in dump["signals"] and time.monotonic() < deadline:
            time.sleep(0.05)
            dump = c.statedump()
        svc = dump["services"]["svc"]
        self.assertEqual(svc["state"], "down")
        self.assertEqual(svc["tags"], ["a=1", "b"])
        self.assertEqual(svc["args"], ["sh", "-c", "echo hi"])
        self.assertEqual(svc["fds"], ["null", "log.w", "stderr"])
        self.assertEqual(svc["auto_up"], {"interval": 5, "triggers": ["SIGUSR2"]})
        self.assertEqual(dump["handles"]["log.w"], {"type": "pipe", "flags": ["to"], "description": "log.r"})
        self.assertEqual(dump["handles"]["null"]["description"], "/dev/null")
        self.assertEqual(dump["signals"]["SIGUSR1"]["count"], 1)
        self.assertIsInstance(dump["signals"]["SIGUSR1"]["ts"], int)

    def test_callback_gets_events_consumed_by_sync(self):
        got = []
        c = self.spawn(on_event=got.append)
        c.command("service.args", "cb", "true", check=True)
        self.assertEqual([e.raw for e in got], ["service.args\tcb\ttrue"])
        self.assertEqual(c.take_events(), [])

    def test_local_queue_overflow(self):
        c = self.spawn(max_queue=5)
        c.batch([("service.tags", "q", str(i)) for i in range(10)], check=True)
        events = [e.raw for e in c.take_events()]
        # The queue was emptied when it overflowed; later events follow the marker.
        self.assertEqual(events[0], "overflow")
        self.assertLessEqual(len(events), 6)
        self.assertEqual(events[-1], "service.tags\tq\t9")

    def test_sync_timeout_and_late_token(self):
        c = self.spawn()
        os.kill(c.process.pid, signal.SIGSTOP)
        try:
            with self.assertRaises(dp.DaemonproxyTimeout):
                c.sync(timeout=0.3)
        finally:
            os.kill(c.process.pid, signal.SIGCONT)
        c.send("echo", "after")
        self.assertEqual([e.raw for e in c.sync(timeout=5)], ["after"], "the late token is dropped")

    def test_events_end_at_eof(self):
        c = self.spawn()
        c.send("echo", "bye")
        c.send("exit")
        self.assertEqual([e.raw for e in c.events(timeout=5)], ["bye"])
        with self.assertRaises(dp.ConnectionClosed):
            c.sync(timeout=1)

    def test_send_fd_needs_a_socket(self):
        c = self.spawn()
        r, w = os.pipe()
        try:
            with self.assertRaises(dp.DaemonproxyError):
                c.send_fd("x", w)
        finally:
            os.close(r)
            os.close(w)

    def test_spawn_failure_is_reported(self):
        with self.assertRaises(dp.DaemonproxyError):
            self.spawn(["--bogus"])


class OverSocket(DaemonTestCase):
    def test_two_controllers_and_fd_take(self):
        sock = self.path("ctl.sock")
        a = self.spawn(["-S", sock])
        b = dp.Client.connect(sock, timeout=5)
        self._clients.append(b)
        self.assertIn("null", b.statedump()["handles"])

        a.start("x", ["true"])
        ev = b.wait_state("x", "down", timeout=5)
        self.assertEqual(ev.exit_value, 0)

        r, w = os.pipe()
        try:
            b.send_fd("taken", w)
            os.close(w)
            w = None
            self.assertEqual(b.statedump()["handles"]["taken"]["flags"], ["write"])
            b.start("writer", ["sh", "-c", "echo through the pipe"], fds=["null", "taken", "taken"])
            ready, _, _ = select.select([r], [], [], 5)
            self.assertTrue(ready, "nothing arrived through the taken pipe")
            self.assertEqual(os.read(r, 100), b"through the pipe\n")
        finally:
            os.close(r)
            if w is not None:
                os.close(w)
        with self.assertRaises(dp.DaemonproxyError) as cm:
            b.command("fd.take", "again", check=True)
        self.assertEqual(cm.exception.message, "No ancillary file descriptor received")

    def test_overflow_then_statedump(self):
        sock = self.path("ctl.sock")
        slow = self.spawn(["-S", sock])  # reads nothing until the end
        fast = dp.Client.connect(sock, timeout=10, on_event=lambda ev: None)
        self._clients.append(fast)
        # ~20 bytes per event; 8000 of them are far more than the pipe to
        # the slow client (64 KiB) plus daemonproxy's 2 KiB buffer hold.
        n = 8000
        for start in range(0, n, 500):
            fast.batch([("service.tags", "x", "t%d" % i) for i in range(start, start + 500)], check=True)
        fast.command("service.tags", "x", "final", check=True)

        seen = []
        for ev in slow.events(timeout=5):
            seen.append(ev.raw)
            if ev.raw == "overflow":
                break
        self.assertEqual(seen[-1], "overflow")
        self.assertEqual(seen[0], "service.tags\tx\tt0")
        self.assertLess(len(seen), n)
        self.assertEqual(slow.statedump()["services"]["x"]["tags"], ["final"])

    @unittest.skipUnless(os.geteuid() == 0, "needs root to listen as another uid")
    def test_refuses_a_server_of_another_uid(self):
        # Issue 14: whoever binds the path first would otherwise receive our
        # commands.  A listener run as uid 65534 in a directory it may write.
        os.chmod(self.dir, 0o755)
        shared = self.path("shared")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)

        def impostor(path):
            """Fork a listener as uid 65534; returns (pid, pipe reading
            "ready" then what it received)."""
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(r)
                    os.setgid(65534)
                    os.setuid(65534)
                    s = socket.socket(socket.AF_UNIX)
                    s.bind(path)
                    s.listen(4)
                    os.write(w, b"ready\n")
                    c, _ = s.accept()
                    c.settimeout(2)
                    try:
                        got = c.recv(100)
                    except OSError:
                        got = b""
                    os.write(w, b"got %r\n" % got)
                finally:
                    os._exit(0)
            os.close(w)
            return pid, os.fdopen(r)

        sock = os.path.join(shared, "ctl.sock")
        pid, out = impostor(sock)
        try:
            self.assertEqual(out.readline().strip(), "ready")
            with self.assertRaises(dp.DaemonproxyError) as e:
                dp.Client.connect(sock, timeout=2)
            self.assertIn("runs as uid 65534", str(e.exception))
            self.assertEqual(out.readline().strip(), "got b''", "nothing may be sent")
        finally:
            os.waitpid(pid, 0)
            out.close()
        # A server uid the caller names is trusted.
        pid, out = impostor(sock + "2")
        try:
            self.assertEqual(out.readline().strip(), "ready")
            c = dp.Client.connect(sock + "2", timeout=2, server_uids=(65534,))
            c.close(timeout=1)
        finally:
            os.waitpid(pid, 0)
            out.close()


CONTROLLER = textwrap.dedent(
    """\
    import os, sys
    sys.path.insert(0, %r)
    import daemonproxy as dp

    c = dp.Client.from_service_fds(timeout=5)
    print("stray output")   # fd 1 is /dev/null now: no command is sent
    me = [n for n, s in c.statedump()["services"].items() if s["pid"] == os.getpid()]
    c.start("child", ["sh", "-c", "exit 5"])
    ev = c.wait_state("child", "down", timeout=5)
    r, w = os.pipe()
    c.send_fd("from.ctl", w)
    c.command("service.tags", "result", "me=" + ",".join(me), "child=%%s" %% ev.exit_value, check=True)
    for ev in c.events():
        pass
    """
)


class AsControllerService(DaemonTestCase):
    def test_python_controller_service(self):
        script = self.path("ctl.py")
        with open(script, "w") as f:
            # The controller imports the same copy of the module as this test.
            f.write(CONTROLLER % os.path.dirname(os.path.dirname(os.path.abspath(dp.__file__))))
        c = self.spawn()
        c.batch(
            [
                ("service.args", "ctl", sys.executable, script),
                ("service.fds", "ctl", "control.event", "control.cmd", "stderr"),
                ("service.start", "ctl"),
            ],
            check=True,
        )
        seen = []
        for ev in c.events(timeout=10):
            seen.append(ev.raw)
            if ev.name == "service.tags" and ev.service == "result":
                break
        self.assertEqual(seen[-1], "service.tags\tresult\tme=ctl\tchild=5")
        self.assertIn("fd.state\tfrom.ctl\tfile\twrite\tunknown", seen)
        self.assertEqual(c.wait_state("ctl", ("up", "down"), timeout=1).state, "up")
        c.sync()
        self.assertNotIn("stray", self.log_text())


if __name__ == "__main__":
    unittest.main()
