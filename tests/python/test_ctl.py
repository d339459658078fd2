"""daemonproxy-ctl, the shell's client for the control socket (issue 16 #6),
against the real binary running `make run`'s configuration."""

import os
import subprocess
import tempfile
import time
import unittest

from support import ROOT, binary, wait_until


def ctl_binary():
    return os.path.join(os.path.dirname(binary()), "daemonproxy-ctl")


class Ctl(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="dp-ctl-")
        self.sock = os.path.join(self.tmp.name, "ctl.sock")
        self.log = open(os.path.join(self.tmp.name, "run.log"), "w+")
        # `make run` as a user types it, in another process; -o all: no
        # release build, the binary under test instead.
        self.make = subprocess.Popen(
            ["make", "-s", "-o", "all", "run", "RUN_BIN=" + binary(), "RUN_SOCKET=" + self.sock],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: os.path.exists(self.sock), 10, what="the control socket")
        wait_until(lambda: "up" in self.status().get("ticker", ""), 10, what="ticker up")

    def tearDown(self):
        # The services run in process groups of their own (make run uses
        # --setpgid): ending make's group would leave them behind. Stop them
        # the way a user would, and SIGKILL only what then remains of make.
        if self.make.poll() is None:
            self.ctl("shutdown", check=False)
            try:
                self.make.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.make.pid, 9)
                self.make.wait()
        self.log.close()
        self.tmp.cleanup()

    def ctl(self, *args, check=True):
        r = subprocess.run([ctl_binary(), "-S", self.sock, "-t", "5"] + list(args),
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            self.fail("daemonproxy-ctl %s: exit %d\n%s%s" % (args, r.returncode, r.stdout, r.stderr))
        return r

    def status(self):
        """{name: 'STATE PID UPTIME LAST-EXIT'} from `status`."""
        r = subprocess.run([ctl_binary(), "-S", self.sock, "status"], capture_output=True, text=True, timeout=30)
        rows = [l.split(None, 1) for l in r.stdout.splitlines()[1:] if l.strip()]
        return {n: rest for n, rest in rows}

    def test_status_start_stop_restart_signal_raw(self):
        r = self.ctl("status")
        header, *rows = r.stdout.splitlines()
        self.assertEqual(header.split(), ["NAME", "STATE", "PID", "UPTIME", "LAST-EXIT"])
        table = {row.split()[0]: row.split()[1:] for row in rows}
        for n in ("logger", "ticker", "clock"):
            self.assertEqual(table[n][0], "up", r.stdout)
        self.assertEqual(table["hello"][0], "down")
        self.assertEqual(table["hello"][-2:], ["exit", "0"])
        self.assertEqual(self.ctl("status", "clock").stdout.splitlines()[1].split()[0], "clock")
        # stop keeps it down (auto-up off); start brings it back
        self.ctl("stop", "ticker")
        self.assertTrue(self.status()["ticker"].startswith("down"))
        time.sleep(1.5)
        self.assertTrue(self.status()["ticker"].startswith("down"), "stop must keep it down")
        self.ctl("start", "ticker")
        wait_until(lambda: self.status()["ticker"].startswith("up"), 5, what="ticker up again")
        # restart: a new pid
        old = self.status()["clock"].split()[1]
        self.ctl("restart", "clock")
        wait_until(lambda: self.status()["clock"].startswith("up"), 5, what="clock up again")
        self.assertNotEqual(self.status()["clock"].split()[1], old)
        self.ctl("signal", "clock", "SIGTERM")
        # raw: replies printed, an error is exit status 1
        r = self.ctl("raw", "echo", "hi there")
        self.assertIn("hi there", r.stdout.splitlines())
        r = self.ctl("raw", "service.start", "nosuch", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("error\tNo such service", r.stdout)
        r = self.ctl("stop", "nosuch", check=False)
        self.assertEqual((r.returncode, r.stderr.strip()), (1, "daemonproxy-ctl: no such service: nosuch"))
        r = subprocess.run([ctl_binary(), "bogus"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        r = subprocess.run([ctl_binary(), "--version"], capture_output=True, text=True)
        self.assertTrue(r.stdout.startswith("daemonproxy-ctl version "))
        self.assertEqual(self.make.poll(), None)

    def test_shutdown_from_another_shell(self):
        r = self.ctl("shutdown")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.make.wait(timeout=20), 0, "make run must end with daemonproxy's exit status 0")
        self.log.seek(0)
        text = self.log.read()
        self.assertIn("info: daemonproxy exiting", text)
        self.assertNotIn("warning: service 'logger' running", text)
        self.assertNotIn("warning: service 'ticker' running", text)


if __name__ == "__main__":
    unittest.main()
