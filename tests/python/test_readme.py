"""The README's examples run as shown (issue 16 #11).

The protocol tour and the extensions' example are replayed against a real
`daemonproxy -i`, line by line: every `>` line is sent, every `<` line must
come back in that order (numbers that are times, pids or durations may
differ; `< ...` skips lines). The sh and Python controllers of "Writing a
controller" run as controller services and must end daemonproxy with the
exit status they promise; the Python one both ways the README gives: from
the checkout with PYTHONPATH=python, and with the client pip installed
(the venv of "make test", $DAEMONPROXY_CLIENT_VENV).
"""

import os
import re
import select
import stat
import subprocess
import tempfile
import time
import unittest

from support import ROOT, binary

README = os.path.join(ROOT, "README.md")


def blocks(text):
    """The fenced code blocks: (info string, lines)."""
    out, cur, info = [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if cur is None:
                cur, info = [], line[3:].strip()
            else:
                out.append((info, cur))
                cur = None
        elif cur is not None:
            cur.append(line)
    return out


def transcripts(text):
    """Blocks made of `> ` and `< ` lines, with \\t turned into TABs."""
    return [
        [l.replace("\\t", "\t") for l in lines]
        for info, lines in blocks(text)
        if info == "" and lines and all(l.startswith(("> ", "< ")) for l in lines)
    ]


def pattern(expected):
    """A regex for one `<` line: runs of digits match any digits (times,
    pids, durations, figures, the version), the banner's git id any commit,
    and `service.stat`'s state letter R or S."""
    parts = re.split(r"(\(git [0-9a-f]{8}\)|\d+)", expected)
    rx = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            rx += re.escape(part)
        elif part.startswith("(git"):
            rx += r"\(git [0-9a-f]{8}\+?\)"
        else:
            rx += r"\d+"
    if expected.startswith("service.stat\t"):
        # the kernel's state letter of a running process: R or S by chance
        rx = rx.replace(re.escape("\tS\t"), "\t[RS]\t", 1)
    return re.compile(rx + r"\Z")


class Session:
    def __init__(self, cwd):
        self.p = subprocess.Popen([binary(), "-i"], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        self.buf = b""
        self.seen = []

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def line(self, timeout=10):
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.seen.append(line.decode(errors="replace"))
        return self.seen[-1]

    def close(self):
        try:
            os.killpg(self.p.pid, 9)
        except OSError:
            pass
        self.p.wait()
        self.p.stdin.close()
        self.p.stdout.close()


class Readme(unittest.TestCase):
    def setUp(self):
        with open(README) as f:
            self.text = f.read()
        self.tmp = tempfile.TemporaryDirectory(prefix="dp-readme-")
        self.addCleanup(self.tmp.cleanup)

    def replay(self, session, lines):
        skipping = False
        for l in lines:
            if l.startswith("> "):
                session.send(l[2:])
                continue
            want = l[2:]
            if want == "...":
                skipping = True
                continue
            rx = pattern(want)
            while True:
                got = session.line()
                self.assertIsNotNone(got, "no line for %r; lines so far:\n%s" % (want, "\n".join(session.seen)))
                if rx.match(got):
                    break
                self.assertTrue(skipping, "expected %r, got %r; lines so far:\n%s" % (want, got, "\n".join(session.seen)))
            skipping = False

    def test_the_protocol_tour_and_the_extensions_example_run_as_shown(self):
        ts = transcripts(self.text)
        self.assertGreaterEqual(len(ts), 7, "the README's transcripts were not found")
        s = Session(self.tmp.name)
        self.addCleanup(s.close)
        for t in ts:
            self.replay(s, t)

    def controller(self, info, marker):
        code = [lines for i, lines in blocks(self.text) if i == info and any(marker in l for l in lines)]
        self.assertEqual(len(code), 1, "the README's %s controller" % info)
        return "\n".join(code[0]) + "\n"

    def run_controller(self, script, name, cwd, env=None):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        # The configuration lines of the tour ("Controllers"), pointing
        # service.args at the script.
        conf = os.path.join(self.tmp.name, name + ".conf")
        with open(conf, "w") as f:
            f.write("service.args\tctl\t%s\n" % path)
            f.write("service.fds\tctl\tcontrol.event\tcontrol.cmd\tstderr\n")
            f.write("service.auto_up\tctl\t1\talways\n")
        return subprocess.run([binary(), "-c", conf], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)

    def test_the_sh_controller_ends_daemonproxy_with_mains_status(self):
        r = self.run_controller(self.controller("sh", "say terminate"), "my-controller", self.tmp.name)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertIn("ctl: main ended (exit 7)", r.stderr)

    def check_python_controller(self, env):
        script = self.controller("python", "Client.from_service_fds")
        self.assertIn("\nfrom daemonproxy import Client\n", script, "the installed import")
        self.assertNotIn("sys.path", script)
        r = self.run_controller(script, "web-ctl.py", ROOT, env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stderr.count("ctl: web ended (exit 1)"), 3, r.stderr)

    def test_the_python_controller_from_a_checkout(self):
        # As the README says: python/ on the path of the daemonproxy that
        # starts it, which its services inherit.
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
        self.check_python_controller(env)

    def test_the_python_controller_with_the_client_installed(self):
        venv = os.environ.get("DAEMONPROXY_CLIENT_VENV")
        if not venv:
            self.skipTest("no venv with the client installed (make test sets DAEMONPROXY_CLIENT_VENV)")
        # "#!/usr/bin/env python3" finds the venv's python3 first; no
        # PYTHONPATH, and nothing named daemonproxy in the cwd or beside
        # the script, so only the installed copy can be imported.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        self.check_python_controller(env)


if __name__ == "__main__":
    unittest.main()
