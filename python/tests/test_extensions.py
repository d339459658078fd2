"""Tests for the client helpers of the issue-9 extensions in
python/daemonproxy/: labels, query(), stat(), attach(),
signal_matching(), and the service.limit event, against the real binary.
"""

import os
import subprocess
import time
import unittest

from dptest import DaemonTestCase, daemonproxy as dp, wait_until


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


class Parsing(unittest.TestCase):
    def test_labels(self):
        self.assertEqual(dp.labels(user="ann", session="run42", group=None, role="dcs"),
                         ["user=ann", "session=run42", "role=dcs"])
        self.assertEqual(dp.parse_labels("user=ann\tsession=run42\tplain"), {"user": "ann", "session": "run42"})
        self.assertEqual(dp.parse_labels(["a=b=c"]), {"a": "b=c"})
        self.assertRaises(ValueError, dp.labels, user="a\tb")
        self.assertEqual(dp.glob_quote("r*1?\\"), "r\\*1\\?\\\\")

    def test_events(self):
        f = dp.Event("service.stat\tweb\t42\tS\t100\t5\t120\t3\t2048\t4\t9").figures
        self.assertEqual(f, {"name": "web", "pid": 42, "state": "S", "start": 100, "uptime": 5, "cpu_ms": 120,
                             "cpu_permille": 3, "rss_kb": 2048, "threads": 4, "fds": 9})
        self.assertIsNone(dp.Event("service.stat\tweb\t42\t-\t-\t-\t-\t-\t-\t-\t-").figures["state"])
        m = dp.Event("service.match\tjob\tdown\t-\tuser=ann\tsession=s1").match
        self.assertEqual(m, {"name": "job", "state": "down", "pid": None, "tags": ["user=ann", "session=s1"],
                             "labels": {"user": "ann", "session": "s1"}})
        self.assertEqual(dp.Event("service.match\tjob\tup\t7\t").match["tags"], [])
        self.assertTrue(dp.Event("service.limit\tjob\t100\t3\t10").is_broadcast)
        self.assertFalse(dp.Event("service.match\tjob\tup\t7\t").is_broadcast)


class Live(DaemonTestCase):
    def test_query_stat_and_signal_by_session(self):
        c = self.spawn()
        for k in range(6):
            c.start("job%d" % k, ["sleep", "600"], tags=dp.labels(user="ann" if k % 2 else "bob",
                                                                  session="run%d" % (k % 3)))
        for k in range(6):
            c.wait_state("job%d" % k, "up")
        c.command("service.tags", "idle", *dp.labels(session="run1"), check=True)
        got = c.query(session="run1")
        self.assertEqual([m["name"] for m in got], ["idle", "job1", "job4"])
        self.assertEqual(got[0]["state"], "down")
        self.assertEqual(got[1]["labels"], {"user": "ann", "session": "run1"})
        self.assertEqual([m["name"] for m in c.query(session="run1", state="up")], ["job1", "job4"])
        self.assertEqual([m["name"] for m in c.query(user="bob", tags=["session=run*"])], ["job0", "job2", "job4"])
        self.assertEqual([m["name"] for m in c.query("job[0-9]")], [])
        self.assertEqual(len(c.query()), 7)
        with self.assertRaises(dp.DaemonproxyError) as e:
            c.query(state="sleeping")
        self.assertEqual(e.exception.message, 'invalid filter "state=sleeping"')

        # a sleep that has just been exec'd may still be running its
        # start-up (state R) on a loaded machine: wait, bounded, for its sleep
        deadline = time.monotonic() + 5
        one = c.stat("job1")
        while one["state"] == "R" and time.monotonic() < deadline:
            time.sleep(0.05)
            one = c.stat("job1")
        self.assertEqual((one["name"], one["pid"], one["state"], one["threads"], one["fds"]),
                         ("job1", c.state("job1").pid, "S", 1, 3))
        self.assertGreater(one["rss_kb"], 0)
        self.assertEqual([f["name"] for f in c.stat(session="run1")], ["job1", "job4"])
        self.assertEqual(len(c.stat()), 6)
        self.assertEqual([f["name"] for f in c.stat("job?")], ["job%d" % k for k in range(6)])
        with self.assertRaises(dp.DaemonproxyError) as e:
            c.stat("idle")
        self.assertEqual(e.exception.message, "service is not running")

        self.assertEqual(c.signal_matching("SIGTERM", session="run1"), ["job1", "job4"])
        for n in ("job1", "job4"):
            self.assertEqual(c.wait_state(n, "down").exit_value, "SIGTERM")
        self.assertEqual([m["name"] for m in c.query(state="up")], ["job0", "job2", "job3", "job5"])

    def test_attach_and_limit(self):
        c = self.spawn()
        pidfile = self.path("ext.pid")
        outside = subprocess.Popen(["setsid", "sh", "-c", "echo $$ > %s; exec sleep 600" % pidfile],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pid = wait_until(lambda: _read(pidfile), 5, what="pid file")
            up = c.attach("ext", pid)
            self.assertEqual((up.state, up.pid), ("up", int(pid)))
            c.signal("ext", "SIGTERM")
            down = c.wait_state("ext", "down")
            self.assertEqual((down.exit_reason, down.exit_value), ("exit", None))
            with self.assertRaises(dp.DaemonproxyError) as e:
                c.attach("x", 2147483647)
            self.assertEqual(e.exception.message, "No such process")
        finally:
            outside.kill()
            outside.wait()

        c.command("service.args", "crash", "false", check=True)
        c.command("service.auto_up", "crash", "0.02", "always", "limit=2/10", check=True)
        limit = None
        for ev in c.events(timeout=10):
            if ev.name == "service.limit":
                limit = ev
                break
        self.assertEqual(limit.fields[0], "crash")
        self.assertEqual(limit.fields[2:], ["2", "10"])
        self.assertEqual([m["name"] for m in c.query(state="limit")], ["crash"])


if __name__ == "__main__":
    unittest.main()
