"""Helpers for tests that run the real daemonproxy binary through the
Python client: the client's own tests here (python/tests/test_*.py) and
the controllers' tests (tests/python/, through tests/python/support.py).

The client is imported the installed way ("import daemonproxy"): in the
throw-away venv of "make test" that is the copy pip installed from
python/; run from a checkout without installing, python/ (the package's
source) is put on sys.path instead.  Run from the top of the repository:

    python3 -m unittest discover -s python/tests -v

The binary is $DAEMONPROXY if set, else target/debug/daemonproxy, built
with "cargo build" if it is missing.  Every wait in these tests is bounded.
"""

import os
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_SOURCE = os.path.join(ROOT, "python")

try:
    import daemonproxy
except ModuleNotFoundError as e:
    if e.name != "daemonproxy":
        raise
    sys.path.append(PACKAGE_SOURCE)
    import daemonproxy

_binary = None


def binary():
    """Path of the daemonproxy binary under test."""
    global _binary
    if _binary is None:
        path = os.environ.get("DAEMONPROXY") or os.path.join(ROOT, "target", "debug", "daemonproxy")
        if not os.path.exists(path) and not os.environ.get("DAEMONPROXY"):
            subprocess.run(["cargo", "build"], cwd=ROOT, check=True, timeout=900)
        _binary = os.path.abspath(path)
    return _binary


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll PREDICATE until it returns something true; AssertionError after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def kill_services(client):
    """SIGKILL every service that is up, so no test leaves processes behind
    (daemonproxy itself does not signal its services when it exits)."""
    try:
        dump = client.statedump(timeout=3)
        for name, svc in dump["services"].items():
            if svc["auto_up"]:
                client.send("service.auto_up", name, "-")
            if svc["state"] == "start":
                client.send("service.start", name, "-")
            if svc["state"] == "up":
                client.send("service.signal", name, "SIGKILL")
        client.sync(timeout=3)
    except (daemonproxy.DaemonproxyError, OSError):
        pass


class DaemonTestCase(unittest.TestCase):
    """A test case with a temp dir (self.dir) and spawn() for "daemonproxy -i"
    clients whose stderr goes to a file, shown when a test fails."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="dp-py-")
        self.dir = self._tmp.name
        self._clients = []
        self._logs = []

    def tearDown(self):
        for c in self._clients:
            if c.process is not None:
                kill_services(c)
            c.close(timeout=5)
        # _outcome.success is False once the test has failed (CPython 3.9+).
        failed = not getattr(getattr(self, "_outcome", None), "success", True)
        if failed:
            for path in self._logs:
                with open(path, errors="replace") as f:
                    sys.stderr.write("\n--- %s ---\n%s" % (path, f.read()[-4000:]))
        self._tmp.cleanup()

    def spawn(self, args=(), **kwargs):
        """Client.spawn() on the binary under test, cwd self.dir, stderr to a log."""
        log = os.path.join(self.dir, "daemonproxy-%d.log" % len(self._logs))
        self._logs.append(log)
        with open(log, "w") as err:
            kwargs.setdefault("cwd", self.dir)
            client = daemonproxy.Client.spawn(binary(), args, stderr=err, **kwargs)
        self._clients.append(client)
        return client

    def log_text(self, index=0):
        """What daemonproxy number INDEX wrote to stderr so far."""
        with open(self._logs[index], errors="replace") as f:
            return f.read()

    def path(self, *parts):
        return os.path.join(self.dir, *parts)
