"""`make run` on a terminal, as a new user runs it (issue 16 #4, #5).

A pseudo-terminal runs `make run 2>&1 | tee LOG` (with the binary under
test; `-o all` skips the release build), waits for the example's ticks,
then types the terminal's interrupt character once. Everything must stop
cleanly and soon: the shutdown controller stops the services (the logger
last) although tee, its stderr's reader, died of the same Ctrl-C, and no
process of the terminal's session is left.
"""

import os
import pty
import select
import signal
import tempfile
import time
import unittest

from support import ROOT, binary


def session_members(sid):
    """Pids of the processes in session SID (from /proc)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is the state; session is field 6 of stat, fields[3] here
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(d))
    return found


class MakeRunOnATerminal(unittest.TestCase):
    def test_one_ctrl_c_stops_make_run_piped_to_tee(self):
        tmp = tempfile.TemporaryDirectory(prefix="dp-run-")
        self.addCleanup(tmp.cleanup)
        log = os.path.join(tmp.name, "x.log")
        command = "make -s -o all run RUN_BIN=%s 2>&1 | tee %s" % (binary(), log)
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.chdir(ROOT)
                os.execvp("sh", ["sh", "-c", command])
            finally:
                os._exit(127)
        seen = b""
        status = None

        def pump(until, stop):
            nonlocal seen
            while time.monotonic() < until and not stop():
                r, _, _ = select.select([fd], [], [], 0.1)
                if r:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:  # EIO: the terminal's other side is gone
                        return
                    if not data:
                        return
                    seen += data

        def reaped():
            nonlocal status
            if status is None:
                p, st = os.waitpid(pid, os.WNOHANG)
                if p == pid:
                    status = st
            return status is not None

        try:
            pump(time.monotonic() + 20, lambda: b"log: tick" in seen)
            self.assertIn(b"log: tick", seen, "make run never ticked:\n%s" % seen.decode(errors="replace"))
            # Let the clock and the one-shot job run too, then one Ctrl-C.
            pump(time.monotonic() + 1, lambda: False)
            os.write(fd, b"\x03")
            t0 = time.monotonic()
            pump(t0 + 30, reaped)
            end = time.monotonic() + 30
            while not reaped() and time.monotonic() < end:
                time.sleep(0.05)
            self.assertTrue(reaped(), "make run did not stop within 30 s of one Ctrl-C:\n%s" % seen.decode(errors="replace"))
            took = time.monotonic() - t0
            # The session's processes (daemonproxy, its services, the
            # shutdown controller) must all be gone.
            left = []
            end = time.monotonic() + 5
            while time.monotonic() < end:
                left = session_members(pid)
                if not left:
                    break
                time.sleep(0.1)
            self.assertEqual(left, [], "processes left in the terminal's session")
            self.assertLess(took, 20, "the clean stop took %.1f s" % took)
            with open(log) as f:
                self.assertIn("log: tick", f.read())
        finally:
            if status is None:
                for p in session_members(pid):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    os.waitpid(pid, 0)
                except OSError:
                    pass
            os.close(fd)


if __name__ == "__main__":
    unittest.main()
