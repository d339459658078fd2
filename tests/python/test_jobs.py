"""Tests for controllers/jobs.py, end to end over HTTP on 127.0.0.1.

jobs.py runs as a subprocess: once spawning its own daemonproxy
(--daemonproxy), once connecting to one started by the test (--socket).
Requests go through urllib; job output files are checked on disk.
Run: python3 -m unittest discover -s tests/python -v
"""

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from support import CONTROLLERS, DaemonTestCase, binary, wait_until

JOBS = os.path.join(CONTROLLERS, "jobs.py")


class JobsServer:
    """jobs.py running in a subprocess, and an HTTP client for it."""

    def __init__(self, args, cwd):
        self.log = open(os.path.join(cwd, "jobs.log"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, JOBS, "--listen", "127.0.0.1:0"] + args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on 127.0.0.1:"):
            self.stop()
            raise AssertionError("jobs.py did not start: %r\n%s" % (line, self.log_text()))
        self.base = "http://" + line.split()[-1]
        with open(os.path.join(cwd, "jobs.token")) as f:
            self.token = f.read().strip()

    def request(self, method, path, body=None, raw=None, token=None):
        """(status, decoded JSON body).  TOKEN: the bearer token sent
        (default the right one; "" sends no Authorization header)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        token = self.token if token is None else token
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_job(self, name, states=("down",), timeout=10):
        def done():
            status, job = self.request("GET", "/jobs/" + name)
            return job if status == 200 and job["state"] in states else None

        return wait_until(done, timeout, what="job %s in %s" % (name, states))

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM, bounded wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        if not self.log.closed:
            self.output = self.log_text()
            self.log.close()
        return self.proc.returncode


def pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class SpawnedDaemonproxy(unittest.TestCase):
    """One jobs.py (with its own daemonproxy) for all tests of this class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dp-jobs-")
        cls.dir = cls.tmp.name
        cls.server = JobsServer(
            ["--daemonproxy", binary(), "--output-dir", "out", "--kill-timeout", "1"], cls.dir
        )

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        cls.tmp.cleanup()
        assert code == 0, "jobs.py exited with %s" % code

    def test_run_and_output(self):
        s = self.server
        status, job = s.request("POST", "/jobs", {"argv": ["sh", "-c", "echo hello; echo oops >&2; exit 3"]})
        self.assertEqual(status, 201, job)
        self.assertRegex(job["name"], r"^job-\d+$")
        self.assertEqual(job["output"], os.path.join(self.dir, "out", job["name"] + ".out"))
        self.assertIn(job["state"], ("start", "up", "down"))
        job = s.wait_job(job["name"])
        self.assertEqual((job["exit_reason"], job["exit_code"], job["signal"]), ("exit", 3, None))
        self.assertIsInstance(job["pid"], int)
        self.assertIsInstance(job["started"], int)
        self.assertLessEqual(job["started"], job["exited"])
        self.assertEqual(job["argv"], ["sh", "-c", "echo hello; echo oops >&2; exit 3"])
        with open(job["output"]) as f:
            self.assertEqual(f.read(), "hello\noops\n")
        status, listing = s.request("GET", "/jobs")
        self.assertEqual(status, 200)
        self.assertIn(job["name"], [j["name"] for j in listing["jobs"]])

    def test_named_job_with_output_path(self):
        s = self.server
        out = os.path.join(self.dir, "named.txt")
        status, job = s.request("POST", "/jobs", {"name": "named.1", "argv": ["echo", "a", "b"], "output": out})
        self.assertEqual(status, 201, job)
        self.assertEqual((job["name"], job["output"]), ("named.1", out))
        job = s.wait_job("named.1")
        self.assertEqual(job["exit_code"], 0)
        with open(out) as f:
            self.assertEqual(f.read(), "a b\n")
        status, err = s.request("POST", "/jobs", {"name": "named.1", "argv": ["true"]})
        self.assertEqual(status, 409, err)

    def test_errors(self):
        s = self.server
        cases = [
            (None, b"{not json", 400),
            ({"argv": []}, None, 400),
            ({"argv": "ls"}, None, 400),
            ({"name": "bad name", "argv": ["true"]}, None, 400),
            ({"name": "x" * 28, "argv": ["true"]}, None, 400),  # NAME.out would be 32 bytes
            ({"argv": ["echo", "tab\there"]}, None, 400),
            ({"argv": ["true"], "output": "/nonexistent-dir/x.out"}, None, 400),
            (["not", "an", "object"], None, 400),
        ]
        for body, raw, want in cases:
            status, err = s.request("POST", "/jobs", body, raw=raw)
            self.assertEqual(status, want, (body, raw, err))
            self.assertIn("error", err)
        self.assertEqual(s.request("GET", "/jobs/nosuch")[0], 404)
        self.assertEqual(s.request("DELETE", "/jobs/nosuch")[0], 404)
        self.assertEqual(s.request("GET", "/nothing")[0], 404)
        # A failed POST leaves nothing behind.
        status, listing = s.request("GET", "/jobs")
        self.assertNotIn("x" * 28, [j["name"] for j in listing["jobs"]])

    def test_delete_running_job(self):
        s = self.server
        status, job = s.request("POST", "/jobs", {"name": "napper", "argv": ["sleep", "30"]})
        self.assertEqual(status, 201, job)
        job = s.wait_job("napper", ("up",))
        t0 = time.monotonic()
        status, gone = s.request("DELETE", "/jobs/napper")
        self.assertEqual(status, 200, gone)
        self.assertLess(time.monotonic() - t0, 1.0, "SIGTERM should have been enough")
        self.assertEqual((gone["state"], gone["exit_reason"], gone["signal"]), ("deleted", "signal", "SIGTERM"))
        self.assertEqual(s.request("GET", "/jobs/napper")[0], 404)
        wait_until(lambda: pid_gone(job["pid"]), 5, what="pid %d to go" % job["pid"])
        # The name and its output handle are free again.
        status, job = s.request("POST", "/jobs", {"name": "napper", "argv": ["true"]})
        self.assertEqual(status, 201, job)

    def test_delete_escalates_to_sigkill(self):
        s = self.server
        argv = ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]
        status, job = s.request("POST", "/jobs", {"name": "stubborn", "argv": argv})
        self.assertEqual(status, 201, job)
        s.wait_job("stubborn", ("up",))
        def ready():
            with open(job["output"]) as f:
                return f.read() == "ready\n"

        wait_until(ready, 5, what="the trap to be set")
        status, gone = s.request("DELETE", "/jobs/stubborn")  # --kill-timeout 1
        self.assertEqual(status, 200, gone)
        self.assertEqual(gone["signal"], "SIGKILL")

    def test_command_not_found_is_an_error_not_exit_3(self):
        # Issue 16 #17: a failed exec looked like a program exiting 3.
        s = self.server
        status, err = s.request("POST", "/jobs", {"name": "nf", "argv": ["no-such-program-x"]})
        self.assertEqual(status, 400, err)
        self.assertEqual(err["error"], "command not found: no-such-program-x")
        status, err = s.request("POST", "/jobs", {"argv": ["/nonexistent/prog"]})
        self.assertEqual((status, err["error"]), (400, "command not found: /nonexistent/prog"))
        self.assertEqual(s.request("GET", "/jobs/nf")[0], 404, "nothing was made")
        # A program that really exits 3 is a job like any other.
        status, job = s.request("POST", "/jobs", {"name": "three", "argv": ["sh", "-c", "exit 3"]})
        self.assertEqual(status, 201, job)
        self.assertEqual(s.wait_job("three")["exit_code"], 3)

    def test_output_endpoint(self):
        # Issue 16 #17: the output itself, in bounded pieces.
        s = self.server
        text = "".join("line %d\n" % i for i in range(3000))  # ~30 KB
        loop = 'i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done'
        status, job = s.request("POST", "/jobs", {"name": "talker", "argv": ["sh", "-c", loop]})
        self.assertEqual(status, 201, str(job)[:200])
        s.wait_job("talker")
        got, offset = "", 0
        while True:
            status, part = s.request("GET", "/jobs/talker/output?offset=%d&limit=4096" % offset)
            self.assertEqual(status, 200, part)
            self.assertLessEqual(part["next"] - part["offset"], 4096)
            got += part["data"]
            offset = part["next"]
            if part["eof"]:
                break
        self.assertEqual(got, text)
        self.assertEqual(part["size"], len(text))
        status, part = s.request("GET", "/jobs/talker/output")
        self.assertEqual((status, part["offset"], part["data"]), (200, 0, text[: 1 << 16]))
        for bad in ("?offset=-1", "?limit=0", "?limit=%d" % ((1 << 20) + 1), "?offset=x"):
            self.assertEqual(s.request("GET", "/jobs/talker/output" + bad)[0], 400, bad)
        self.assertEqual(s.request("GET", "/jobs/nosuch/output")[0], 404)

    def test_requests_without_the_token_are_refused(self):
        # Issue 14: anyone on the machine can reach 127.0.0.1; only the
        # holder of the token may run commands.
        s = self.server
        mode = os.stat(os.path.join(self.dir, "jobs.token")).st_mode & 0o777
        self.assertEqual(mode, 0o600)
        marker = os.path.join(self.dir, "pwned")
        for token in ("", "wrong", s.token[:-1], s.token + "x"):
            status, err = s.request("POST", "/jobs", {"name": "pwn", "argv": ["touch", marker]}, token=token)
            self.assertEqual(status, 401, (token, err))
            self.assertEqual(s.request("GET", "/jobs", token=token)[0], 401)
            self.assertEqual(s.request("DELETE", "/jobs/napper", token=token)[0], 401)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(marker), "an unauthorized request ran a command")
        self.assertEqual(s.request("GET", "/jobs/pwn")[0], 404)

    def test_hundred_jobs(self):
        s = self.server
        names = []
        for i in range(100):
            argv = ["sh", "-c", "echo output of $0; exit $0", str(i)]
            status, job = s.request("POST", "/jobs", {"name": "many-%d" % i, "argv": argv})
            self.assertEqual(status, 201, job)
            names.append(job["name"])

        def all_down():
            status, listing = s.request("GET", "/jobs")
            jobs = {j["name"]: j for j in listing["jobs"] if j["name"] in names}
            return jobs if all(j["state"] == "down" for j in jobs.values()) and len(jobs) == 100 else None

        jobs = wait_until(all_down, 20, interval=0.2, what="100 jobs to finish")
        for i, name in enumerate(names):
            job = jobs[name]
            self.assertEqual((job["exit_reason"], job["exit_code"]), ("exit", i), job)
            with open(job["output"]) as f:
                self.assertEqual(f.read(), "output of %d\n" % i)
        for name in names:
            self.assertEqual(s.request("DELETE", "/jobs/" + name)[0], 200)


class BrokenStderr(DaemonTestCase):
    def test_jobs_py_survives_a_stderr_whose_reader_is_gone(self):
        # Issue 16 #4: with -v every request is logged to stderr; its
        # reader is gone, and jobs.py must go on serving.
        r, w = os.pipe()
        os.close(r)
        proc = subprocess.Popen(
            [sys.executable, JOBS, "--daemonproxy", binary(), "--listen", "127.0.0.1:0", "-v"],
            cwd=self.dir, stdout=subprocess.PIPE, stderr=w,
        )
        os.close(w)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            line = proc.stdout.readline().decode() if ready else ""
            self.assertTrue(line.startswith("listening on 127.0.0.1:"), line)
            base = "http://" + line.split()[-1]
            with open(os.path.join(self.dir, "jobs.token")) as f:
                token = f.read().strip()
            for _ in range(3):
                req = urllib.request.Request(base + "/jobs", headers={"Authorization": "Bearer " + token})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    self.assertEqual(resp.status, 200)
            self.assertIsNone(proc.poll(), "jobs.py died")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


class TokenFile(DaemonTestCase):
    def start_jobs(self, *extra):
        return subprocess.run(
            [sys.executable, JOBS, "--daemonproxy", binary(), "--listen", "127.0.0.1:0"] + list(extra),
            cwd=self.dir, capture_output=True, text=True, timeout=10,
        )

    def test_a_planted_or_exposed_token_file_is_refused(self):
        # A token file someone else could read, or one that is a symlink,
        # FIFO or another user's file, stops jobs.py before it listens.
        loose = self.path("loose.token")
        with open(loose, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(loose, 0o644)
        os.symlink(loose, self.path("link.token"))
        os.mkfifo(self.path("fifo.token"), 0o600)
        theirs = self.path("theirs.token")
        with open(theirs, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(theirs, 0o600)
        if os.geteuid() == 0:
            os.chown(theirs, 65534, 65534)
        short = self.path("short.token")
        with open(short, "w") as f:
            f.write("abc\n")
        os.chmod(short, 0o600)
        cases = [
            (loose, "group and others must have no access"),
            (self.path("link.token"), "Too many levels of symbolic links"),
            (self.path("fifo.token"), "not a regular file"),
            (short, "no token of at least 16 characters"),
        ]
        if os.geteuid() == 0:
            cases.append((theirs, "belongs to uid 65534"))
        for path, why in cases:
            r = self.start_jobs("--token-file", path)
            self.assertEqual(r.returncode, 1, (path, r.stdout, r.stderr))
            self.assertNotIn("listening", r.stdout)
            self.assertIn(why, r.stderr, path)


class OverTheSocket(DaemonTestCase):
    def test_socket_mode_adopts_jobs_and_ignores_other_services(self):
        sock = self.path("dp.sock")
        c = self.spawn(["-S", sock])
        # A plain service, and a job made by hand the way jobs.py makes them.
        c.start("web", ["sleep", "30"])
        out = self.path("old.out")
        c.command("fd.open", "old.out", "write,create,trunc", out, check=True)
        c.start("old", ["sh", "-c", "echo from before"], fds=["null", "old.out", "old.out"], tags=["job=1"])
        c.wait_state("old", "down", timeout=5)

        server = JobsServer(["--socket", sock, "--output-dir", self.path("out")], self.dir)
        try:
            status, listing = server.request("GET", "/jobs")
            self.assertEqual(status, 200)
            self.assertEqual([j["name"] for j in listing["jobs"]], ["old"])
            old = listing["jobs"][0]
            self.assertEqual((old["output"], old["exit_code"]), (out, 0))
            self.assertIsInstance(old["started"], int)
            self.assertEqual(server.request("GET", "/jobs/web")[0], 404)
            self.assertEqual(server.request("POST", "/jobs", {"name": "web", "argv": ["true"]})[0], 409)

            status, job = server.request("POST", "/jobs", {"argv": ["sh", "-c", "echo new"]})
            self.assertEqual(status, 201, job)
            job = server.wait_job(job["name"])
            with open(job["output"]) as f:
                self.assertEqual(f.read(), "new\n")
            # Its events reached the test's own controller too.
            self.assertEqual(c.wait_state(job["name"], "down", timeout=5).pid, job["pid"])
        finally:
            code = server.stop()
            self.assertEqual(code, 0, server.output)
        # jobs.py is gone; daemonproxy and its services are not.
        self.assertEqual(c.statedump()["services"]["web"]["state"], "up")

    def test_jobs_py_exits_when_daemonproxy_does(self):
        sock = self.path("dp.sock")
        c = self.spawn(["-S", sock])
        server = JobsServer(["--socket", sock, "--output-dir", self.path("out")], self.dir)
        try:
            self.assertEqual(server.request("GET", "/jobs"), (200, {"jobs": []}))
            c.send("terminate", "0")
            server.proc.wait(10)
        finally:
            code = server.stop()
        self.assertEqual(code, 1)
        self.assertIn("daemonproxy closed the connection", server.output)


if __name__ == "__main__":
    unittest.main()
