"""daemonproxy-sheriff against real daemonproxy bridges (docs/fleet.md
§5): every CLI verb, the script language, observer mode, adoption on a
sheriff restart, config errors, the lone ranger, JSON import."""

import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

from support import P, Host, HubProc, Procs, Sheriff, binary, wait_until

CONFIG = """\
# two deputies' worth of commands, in groups
cmd "solo" { exec = "sleep 300"; deputy = "dep-1"; }
group "web" {
    cmd "front" { exec = "sleep 301"; deputy = "dep-1"; stop_signal = 15; stop_time_allowed = 2; }
    group "back" {
        cmd "db" { exec = "sleep 302"; deputy = "dep-2"; }
        cmd "talker" { exec = "sh -c 'i=0; while [ $i -lt 5 ]; do echo \\"talk $i\\"; i=$((i+1)); done; exec sleep 303'"; deputy = "dep-2"; }
    }
}
cmd "once" { exec = "sh -c 'echo once; exit 3'"; deputy = "dep-1"; }
script "up" {
    start group "web" wait "running";
    wait ms 100;
    start cmd "solo" wait "running";
}
script "down" { stop everything wait "stopped"; }
script "never" { start cmd "solo"; wait cmd "once" status "running"; wait cmd "solo" status "stopped"; }
"""


class SheriffCase(unittest.TestCase):
    def setUp(self):
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)
        self.tmp = self.procs.tempdir("sheriff-")
        self.hub = HubProc(self.procs)
        self.url = self.hub.url
        self.control = os.path.join(self.tmp, "sheriff.sock")

    def deputies(self, *ids):
        return [Host(self.procs, self.url, i) for i in ids]

    def config(self, text=CONFIG, name="fleet.cfg"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def cli(self, *args, control=None, timeout=20, check=True):
        r = subprocess.run([binary("daemonproxy-sheriff"), "--lcm-url", self.url, "--control", control or self.control,
                            *args], capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            st = subprocess.run([binary("daemonproxy-sheriff"), "--control", control or self.control, "status"],
                                capture_output=True, timeout=10).stdout.decode()
            self.fail(f"{args}: exit {r.returncode}\n{r.stdout.decode()}\n{r.stderr.decode()}\nstatus:\n{st}")
        return r

    def serve(self, *args, control=None):
        log = self.procs.open(os.path.join(self.tmp, f"sheriff-{len(self.procs.procs)}.log"))
        p = self.procs.start([binary("daemonproxy-sheriff"), "--lcm-url", self.url, "--control", control or self.control,
                              *args], stdout=log, stderr=log)
        ctl = control or self.control
        self.assertTrue(wait_until(lambda: os.path.exists(ctl), 5), "sheriff did not bind its socket")
        return p

    def status(self, *args, control=None):
        """{(deputy, command): row fields} from `status` (deputy shown with
        its liveness if not fresh)."""
        out = self.cli("status", *args, control=control).stdout.decode()
        rows = {}
        lines = out.splitlines()
        head = lines[0]
        cols = [m.start() for m in re.finditer(r"\S+(?: \S+)?", head)]
        for l in lines[1:]:
            f = re.split(r"\s{2,}", l.strip())
            rows[(f[0].split(" ")[0], f[1])] = f
        return rows

    def wait_status(self, pred, timeout=10, control=None):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.status(control=control)
            if pred(st):
                return st
            time.sleep(0.2)
        self.fail(f"status never matched: {st}")


class Verbs(SheriffCase):
    def test_every_verb(self):
        d1, d2 = self.deputies("dep-1", "dep-2")
        self.serve("serve", self.config())
        # nothing starts on a config load
        st = self.wait_status(lambda s: ("dep-1", "solo") in s and ("dep-2", "db") in s and
                              s[("dep-1", "solo")][3] != "Unknown")
        self.assertEqual(st[("dep-1", "solo")][3], "Stopped (OK)")
        self.assertEqual(d1.statedump().get("pm.solo", ("down",))[0], "down")

        # start a command, a group (with its subgroups), restart, stop
        r = self.cli("start", "solo", "--wait", "running", "--timeout", "30")
        st = self.status()
        self.assertEqual(st[("dep-1", "solo")][3], "Running")
        solo_pid = st[("dep-1", "solo")][4]
        self.assertEqual(d1.statedump()["pm.solo"], ("up", solo_pid))
        self.cli("start", "--group", "web", "--wait", "running", "--timeout", "30")
        st = self.status()
        for k in [("dep-1", "front"), ("dep-2", "db"), ("dep-2", "talker")]:
            self.assertEqual(st[k][3], "Running", st[k])
        # logs: the ring keeps recent output
        self.assertTrue(wait_until(lambda: self.cli("logs", "talker").stdout.count(b"\n") == 5, 5))
        out = self.cli("logs", "talker", "-n", "2").stdout.decode()
        self.assertEqual(out, "talk 3\ntalk 4\n")
        out = self.cli("logs", "talker").stdout.decode()
        self.assertEqual(out, "".join(f"talk {i}\n" for i in range(5)))

        self.cli("restart", "db", "--wait", "running", "--timeout", "30")
        st = self.wait_status(lambda s: s[("dep-2", "db")][4] not in ("-", st[("dep-2", "db")][4]))
        self.assertEqual(st[("dep-2", "db")][3], "Running")
        self.cli("stop", "--group", "web/back", "--wait", "stopped", "--timeout", "30")
        st = self.status()
        self.assertTrue(st[("dep-2", "db")][3].startswith("Stopped"), st[("dep-2", "db")])
        self.assertEqual(st[("dep-1", "front")][3], "Running", "web/back only")
        # the bridge's notice of the stop signal is part of the log
        self.assertEqual(self.cli("logs", "talker", "-n", "1").stdout, b"Interrupt\n")

        # queries by name, group and deputy
        only = self.status("--deputy", "dep-2")
        self.assertEqual(sorted(k[1] for k in only), ["db", "talker"])
        self.assertEqual(sorted(k[1] for k in self.status("--group", "web")), ["db", "front", "talker"])
        self.assertEqual(sorted(k[1] for k in self.status("s*")), ["solo"])

        # deputies: load, memory, last heard
        dep = self.cli("deputies").stdout.decode()
        self.assertRegex(dep, r"(?m)^DEPUTY\s+STATE\s+LOAD\s+MEM USED\s+MEM TOTAL")
        self.assertRegex(dep, r"(?m)^dep-1\s+ok\s+\S+\s+\S+\s+\S+")
        self.assertRegex(dep, r"(?m)^dep-2\s+ok\s+")

        # a run-once command, then flush of what is stopped for good
        self.cli("start", "once", "--wait", "stopped", "--timeout", "30")
        st = self.status()
        self.assertEqual((st[("dep-1", "once")][3], st[("dep-1", "once")][8]), ("Stopped (Error)", "exit 3"))
        self.cli("stop", "--all", "--wait", "stopped", "--timeout", "30")
        self.cli("flush")
        self.wait_status(lambda s: not s, 10)
        self.assertNotIn("pm.solo", d1.statedump())

        # an unknown command is an error
        r = self.cli("start", "nonesuch", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"no such command", r.stderr)

    def test_status_watch_redraws_in_place(self):
        self.deputies("dep-1")
        self.serve("serve", self.config())
        # Ctrl-C ends the watch: SIGINT as a terminal sends it, with its
        # default action even where this test was started with SIGINT
        # ignored (a background job of a non-interactive shell is).
        p = subprocess.Popen([binary("daemonproxy-sheriff"), "--lcm-url", self.url, "--control", self.control,
                              "status", "--watch"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.procs.procs.append(p)
        time.sleep(1.6)
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=5)[0].decode()
        frames = out.split("\x1b[H\x1b[2J")
        self.assertGreaterEqual(len([f for f in frames if "DEPUTY" in f]), 2, out)
        self.assertIn("solo", frames[-1])

    def test_logs_follow_loses_nothing(self):
        (d,) = self.deputies("dep-1")
        lines = 30000
        cfg = self.config(f'cmd "flood" {{ exec = "seq {lines}"; deputy = "dep-1"; }}\n', "flood.cfg")
        self.serve("serve", cfg)
        self.wait_status(lambda s: ("dep-1", "flood") in s and s[("dep-1", "flood")][3] != "Unknown")
        f = subprocess.Popen([binary("daemonproxy-sheriff"), "--lcm-url", self.url, "--control", self.control,
                              "logs", "flood", "-n", "0", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        t = time.monotonic()
        self.cli("start", "flood")
        got = b""
        os.set_blocking(f.stdout.fileno(), False)
        end = time.monotonic() + 20
        while got.count(b"\n") < lines and time.monotonic() < end:
            try:
                chunk = f.stdout.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                got += chunk
            else:
                time.sleep(0.02)
        took = time.monotonic() - t
        f.kill()
        f.wait()
        f.stdout.close()
        f.stderr.close()
        want = "".join(f"{i}\n" for i in range(1, lines + 1)).encode()
        self.assertEqual(got.count(b"\n"), lines, f"{got.count(b'{}')} lines")
        self.assertEqual(got, want)
        self.assertLess(took, lines / 10000 + 5, "slower than 10,000 lines/s")


class Scripts(SheriffCase):
    def test_scripts_and_a_failing_wait(self):
        self.deputies("dep-1", "dep-2")
        first = self.serve("serve", self.config())
        self.wait_status(lambda s: len(s) == 5 and all(r[3] != "Unknown" for r in s.values()))
        r = self.cli("run", "up", timeout=30)
        self.assertIn(b"start group \"web\"", r.stderr)
        st = self.status()
        for k in [("dep-1", "front"), ("dep-2", "db"), ("dep-2", "talker"), ("dep-1", "solo")]:
            self.assertEqual(st[k][3], "Running", st[k])
        self.cli("run", "down", timeout=30)
        st = self.status()
        self.assertTrue(all(r[3].startswith("Stopped") for r in st.values()), st)
        # a wait that cannot be met fails the run (with --script-timeout)
        first.send_signal(signal.SIGTERM)
        first.wait(5)
        p = self.serve("--script-timeout", "1", "serve", self.config(), control=os.path.join(self.tmp, "s2.sock"))
        r = self.cli("run", "never", control=os.path.join(self.tmp, "s2.sock"), check=False, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"timed out", r.stderr)
        # standalone: a sheriff for the length of the script, exit status 1
        p.send_signal(signal.SIGTERM)
        p.wait(5)
        r = self.cli("--script-timeout", "1", "run", "never", "--config", self.config(),
                     control=os.path.join(self.tmp, "s3.sock"), check=False, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)

    def test_config_errors_name_file_line_and_column(self):
        bad = self.config('cmd "x" { exec = "a"; deputy = "d"; }\ncmd "y" {\n  exec = "b";\n  nosuch = 1;\n}\n', "bad.cfg")
        r = self.cli("check", bad, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr.decode(), r"bad\.cfg:4:3: ")
        bad2 = self.config('script "s" { run_script "t"; }\n', "bad2.cfg")
        r = self.cli("check", bad2, check=False)
        self.assertRegex(r.stderr.decode(), r"bad2\.cfg:1:14: ")
        r = self.cli("serve", bad, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr.decode(), r"bad\.cfg:4:3: ")

    def test_import_json(self):
        js = self.config('{"deputies": ["udpm://x"], "processes": [{"name": "web/1", "command": "nginx -g x", '
                         '"working_dir": "/srv", "host": "dep-1", "autostart": true, "auto_restart": true}]}', "pm.json")
        r = self.cli("import-json", js)
        text = r.stdout.decode()
        self.assertIn('cmd "web_1"', text)
        self.assertIn('deputy = "dep-1"', text)
        self.assertIn('script "autostart"', text)
        self.assertIn(b"deputies", r.stderr)
        cfg = self.config(text, "imported.cfg")
        self.cli("check", cfg)


class Roles(SheriffCase):
    def test_observer_matches_and_adoption_on_restart(self):
        d1, d2 = self.deputies("dep-1", "dep-2")
        active = self.serve("serve", self.config())
        self.wait_status(lambda s: len(s) == 5 and all(r[3] != "Unknown" for r in s.values()))
        self.cli("start", "--group", "web", "--wait", "running", "--timeout", "30")
        obs_ctl = os.path.join(self.tmp, "obs.sock")
        self.serve("--observe", "serve", control=obs_ctl)

        def same(a, b):
            pick = lambda s: {k: (r[3], r[4]) for k, r in s.items()}  # noqa: E731
            return pick(a) == pick(b)

        end = time.monotonic() + 10
        while True:
            a, o = self.status(), self.status(control=obs_ctl)
            if same(a, o):
                break
            self.assertLess(time.monotonic(), end, f"observer differs:\n{a}\n{o}")
            time.sleep(0.2)
        # an observer refuses to act
        r = self.cli("start", "solo", control=obs_ctl, check=False)
        self.assertNotEqual(r.returncode, 0)
        # the active sheriff restarts: it adopts what runs, no pid changes
        pids = {k: r[4] for k, r in self.status().items() if r[3] == "Running"}
        self.assertEqual(len(pids), 3)
        active.send_signal(signal.SIGTERM)
        active.wait(5)
        self.serve("serve", self.config())
        st = self.wait_status(lambda s: all(s.get(k, [None] * 5)[4] == p for k, p in pids.items()), 10)
        time.sleep(2.5)  # a few rounds of orders: still nothing restarted
        st = self.status()
        for k, p in pids.items():
            self.assertEqual((st[k][3], st[k][4]), ("Running", p), k)
        self.assertEqual(d2.statedump()["pm.db"][1], pids[("dep-2", "db")])

    def test_second_sheriff_demotes_itself(self):
        self.deputies("dep-1")
        self.serve("serve", self.config())
        # the same control socket is never taken over
        r = self.cli("serve", self.config(), check=False, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"already serving", r.stderr)
        self.wait_status(lambda s: ("dep-1", "solo") in s and s[("dep-1", "solo")][3] != "Unknown")
        other = os.path.join(self.tmp, "other.sock")
        p = self.serve("serve", self.config(), control=other)
        deadline = time.monotonic() + 6
        mode = ""
        while time.monotonic() < deadline and "observer" not in mode:
            time.sleep(0.2)
            r = subprocess.run(["python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                                f"s.connect({other!r}); s.sendall(b'id\\n'); print(s.recv(200).decode())"],
                               capture_output=True)
            mode = r.stdout.decode()
        self.assertIn("observer", mode)


class LoneRanger(SheriffCase):
    def serve_local_hello(self):
        """A lone ranger serving one command, `hello`, started and running."""
        cfg = self.config('cmd "hello" { exec = "sh -c \'echo hi; exec sleep 60\'"; deputy = "localhost"; }\n', "local.cfg")
        # its private directory goes in the test's own: a SIGKILL leaves it
        p = subprocess.Popen([binary("daemonproxy-sheriff"), "--local", "--control", self.control, "serve", cfg],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=self.tmp))
        self.procs.procs.append(p)
        self.assertTrue(wait_until(lambda: os.path.exists(self.control), 5))
        r = subprocess.run([binary("daemonproxy-sheriff"), "--control", self.control, "start", "hello", "--wait",
                            "running", "--timeout", "10"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return p

    def test_local_starts_its_own_deputy(self):
        p = self.serve_local_hello()
        out = subprocess.run([binary("daemonproxy-sheriff"), "--control", self.control, "logs", "hello"],
                             capture_output=True, timeout=10).stdout
        self.assertTrue(wait_until(lambda: subprocess.run(
            [binary("daemonproxy-sheriff"), "--control", self.control, "logs", "hello"],
            capture_output=True, timeout=10).stdout == b"hi\n", 5), out)
        st = subprocess.run([binary("daemonproxy-sheriff"), "--control", self.control, "status"],
                            capture_output=True, timeout=10).stdout.decode()
        pid = int(re.search(r"localhost\s+hello\s+-\s+Running\s+(\d+)", st).group(1))
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        # the private deputy went with it
        self.assertTrue(wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
                                   open(f"/proc/{pid}/stat").read().split()[2] == "Z", 5))

    def test_local_deputy_ends_with_a_killed_sheriff(self):
        """A lone ranger ended by SIGKILL (no clean-up code runs) takes its
        private daemonproxy, the bridge and the commands with it: that
        daemonproxy reads its standard input from the sheriff, and at its
        end runs an exit program that kills its process group."""
        p = self.serve_local_hello()
        with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
            (dp,) = [int(x) for x in f.read().split()]
        group = [int(d) for d in os.listdir("/proc") if d.isdigit() and self._pgid(int(d)) == dp]
        self.assertGreaterEqual(len(group), 3, "daemonproxy, the bridge and hello")
        p.kill()
        p.wait(10)

        def gone():
            return all(not os.path.exists(f"/proc/{q}") or open(f"/proc/{q}/stat").read().split()[2] == "Z"
                       for q in group)
        self.assertTrue(wait_until(gone, 5), f"left running: {[q for q in group if os.path.exists(f'/proc/{q}')]}")

    @staticmethod
    def _pgid(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[2])
        except (OSError, ValueError, IndexError):
            return None


if __name__ == "__main__":
    unittest.main()
