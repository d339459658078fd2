"""daemonproxy-sheriff's command line as a user meets it (issue 15 §3,
issue 16 #3, #11, #14, #15, #16; docs/fleet.md §5): --help, --version and
unknown words; the options of a verb sent to a serving sheriff take effect
or are refused; the status table's header as its manual page documents
it; waits that do not hang on commands the deputy will not act on; uptime
and last exit; verbs with no sheriff serving; serve going on after its
script. Real binaries on a tcpq hub of the test's own."""

import os
import re
import signal
import subprocess
import time
import unittest

from support import ROOT, Host, binary, have_netns, wait_until
from test_sheriff import SheriffCase

# A local service of daemonproxy's own: the bridge reports it in group
# `local` and, with its default --local observe, will not act on it.
KEEPER = ["service.args\tkeeper\tsleep\t300", "service.start\tkeeper"]

CONFIG = """\
cmd "job" { exec = "sleep 300"; deputy = "dep-1"; }
cmd "quick" { exec = "true"; deputy = "dep-1"; }
cmd "fails" { exec = "sh -c 'sleep 0.5; exit 3'"; deputy = "dep-1"; }
script "never" { start cmd "job"; wait cmd "job" status "stopped"; }
script "bringup" { start cmd "job" wait "running"; }
"""


def version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'(?m)^version = "([^"]+)"', f.read()).group(1)


class Words(unittest.TestCase):
    """Issue 16 #3: no panic, --help and --version the documented way,
    unknown options and verbs named (exit 2)."""

    def run_sheriff(self, *args):
        return subprocess.run([binary("daemonproxy-sheriff"), *args], capture_output=True, timeout=10,
                              env=dict(os.environ, DAEMONPROXY_SHERIFF_CONTROL="/nonexistent/sheriff.sock"))

    def test_help_version_and_unknown_words(self):
        r = self.run_sheriff()
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertNotIn(b"panicked", r.stderr)
        self.assertIn(b"name a verb", r.stderr)
        self.assertIn(b"usage: daemonproxy-sheriff", r.stderr)
        for flag in ("--version", "-V"):
            r = self.run_sheriff(flag)
            self.assertEqual((r.returncode, r.stdout.decode()), (0, f"daemonproxy-sheriff version {version()}\n"), r)
        for flag in ("--help", "-h"):
            r = self.run_sheriff(flag)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith(b"usage: daemonproxy-sheriff"), r.stdout)
        r = self.run_sheriff("status", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"usage:", r.stdout)
        for args, want in ((["bogus"], b"unknown verb bogus"), (["--bogus"], b"unknown option --bogus"),
                           (["run", "--bogus"], b"unknown option --bogus"),
                           (["status", "--bogus"], b"unknown option --bogus")):
            r = self.run_sheriff(*args)
            self.assertEqual(r.returncode, 2, (args, r))
            self.assertIn(want, r.stderr, args)
        # what the manual page says
        with open(os.path.join(ROOT, "man", "daemonproxy-sheriff.1")) as f:
            man = f.read()
        self.assertIn("daemonproxy\\-sheriff version", man)


class ThroughTheSocket(SheriffCase):
    """Issue 15 §3: an option a verb accepts takes effect through the
    control socket, or is refused saying why."""

    def test_options_take_effect_or_are_refused(self):
        self.deputies("dep-1")
        cfg = self.config(CONFIG)
        self.serve("serve", cfg)  # no --script-timeout: its waits never end
        self.wait_status(lambda s: ("dep-1", "job") in s and s[("dep-1", "job")][3] != "Unknown")
        t = time.monotonic()
        try:
            r = self.cli("--script-timeout", "1", "run", "never", check=False, timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("run ignored --script-timeout 1 (still waiting after 15 s)")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"timed out", r.stderr)
        self.assertLess(time.monotonic() - t, 8)
        # run --config while a sheriff serves: refused, saying what to do
        r = self.cli("run", "never", "--config", cfg, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"a sheriff is serving on", r.stderr)
        self.assertIn(b"leave --config out", r.stderr)
        # options the serving sheriff cannot apply
        other = "tcpq://127.0.0.1:1"
        r = subprocess.run([binary("daemonproxy-sheriff"), "--lcm-url", other, "--control", self.control, "status"],
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn(f"uses {self.url}".encode(), r.stderr)
        for opts, verb in ((["--local"], "run"), (["--tcpq-listen", "0"], "run"),
                           (["--auth", "sign", "--auth-key-file", "/nonexistent"], "start")):
            r = self.cli(*opts, verb, "job", check=False)
            self.assertEqual(r.returncode, 2, (opts, r))
            self.assertIn(f"{opts[0]}: a sheriff is serving".encode(), r.stderr, opts)
            self.assertIn(b"leave", r.stderr, opts)
        # and options a verb has no use for at all
        for opts, verb in ((["--script-timeout", "1"], "status"), (["--on-script-complete", "exit"], "run"),
                           (["-o"], "stop"), (["--no-demote"], "status"), (["--tcpq-listen", "0"], "deputies")):
            r = self.cli(*opts, verb, "job", check=False)
            self.assertEqual(r.returncode, 2, (opts, r))
            self.assertIn(b"has no effect on " + verb.encode(), r.stderr, opts)

    def test_status_header_is_documented(self):
        self.deputies("dep-1")
        self.serve("serve", self.config(CONFIG))
        self.wait_status(lambda s: ("dep-1", "job") in s)
        head = self.cli("status").stdout.decode().splitlines()[0].split()
        with open(os.path.join(ROOT, "man", "daemonproxy-sheriff.1")) as f:
            man = f.read()
        m = re.search(r"(?m)^\.B \"(DEPUTY .*)\"$", man)
        self.assertIsNotNone(m, "the manual page shows no status header")
        self.assertEqual(m.group(1).split(), head)
        for col in ("DEPUTY", "COMMAND", "GROUP", "STATUS", "PID", "CPU%", "RSS", "UPTIME", "LAST EXIT"):
            self.assertRegex(man, rf"(?m)^\.(TP|B|BR) .*{re.escape(col)}", col)


class Waits(SheriffCase):
    """Issue 16 #14: --all and groups do not wait for a command the deputy
    said it will not act on; naming one fails at once."""

    def test_stop_all_leaves_local_services_alone(self):
        (d,) = [Host(self.procs, self.url, "dep-1", conf_lines=KEEPER, bridge_args=["--local", "observe"])]
        self.serve("serve", self.config(CONFIG))
        self.wait_status(lambda s: ("dep-1", "keeper") in s and ("dep-1", "job") in s)
        keeper = d.statedump()["keeper"]
        self.assertEqual(keeper[0], "up")
        self.cli("start", "job", "--wait", "running", "--timeout", "10")
        t = time.monotonic()
        r = self.cli("stop", "--all", "--wait", "stopped", "--timeout", "10", check=False, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.monotonic() - t, 8)
        self.assertIn(b"will not act on them", r.stderr)
        st = self.status()
        self.assertTrue(st[("dep-1", "job")][3].startswith("Stopped"), st)
        self.assertEqual(st[("dep-1", "keeper")][3], "Running", st)
        self.assertEqual(d.statedump()["keeper"], keeper)
        # a group of such commands only: nothing to do, and status stays true
        r = self.cli("start", "--group", "local", "--wait", "running", "--timeout", "10", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        time.sleep(1.2)
        self.assertEqual(self.status()[("dep-1", "keeper")][3], "Running")
        # named: the deputy's word ends the wait at once
        t = time.monotonic()
        r = self.cli("stop", "keeper", "--wait", "stopped", "--timeout", "10", check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"will not act on it", r.stderr)
        self.assertLess(time.monotonic() - t, 8)
        self.assertEqual(d.statedump()["keeper"], keeper)


class Figures(SheriffCase):
    """Issue 16 #15: UPTIME from the deputy's clock, marked when the run
    began before this sheriff heard of it; LAST EXIT `exit 0` for a clean
    exit and kept across a restart until the next exit."""

    def test_uptime_and_last_exit(self):
        self.deputies("dep-1")
        cfg = self.config(CONFIG)
        first = self.serve("serve", cfg)
        self.wait_status(lambda s: ("dep-1", "job") in s and s[("dep-1", "job")][3] != "Unknown")
        self.cli("start", "job", "--wait", "running", "--timeout", "10")
        st = self.status()
        self.assertRegex(st[("dep-1", "job")][7], r"^[01]s$", "a start this sheriff saw: its real uptime")
        self.assertEqual(st[("dep-1", "job")][8], "-", "no run has ended")
        self.cli("start", "quick", "--wait", "stopped", "--timeout", "10")
        self.assertEqual(self.status()[("dep-1", "quick")][8], "exit 0")
        self.cli("start", "fails", "--wait", "stopped", "--timeout", "10")
        self.assertEqual(self.status()[("dep-1", "fails")][8], "exit 3")
        self.cli("start", "fails", "--wait", "running", "--timeout", "10")
        st = self.status()
        self.assertEqual((st[("dep-1", "fails")][3], st[("dep-1", "fails")][8]), ("Running", "exit 3"),
                         "the last exit is kept while the next run goes")
        time.sleep(2)
        # a fresh sheriff did not see job start: it says "at least"
        first.send_signal(signal.SIGTERM)
        first.wait(5)
        self.serve("serve", cfg)
        st = self.wait_status(lambda s: ("dep-1", "job") in s and s[("dep-1", "job")][3] == "Running")
        self.assertTrue(st[("dep-1", "job")][7].startswith(">"), st[("dep-1", "job")])
        self.assertEqual(st[("dep-1", "quick")][8], "exit 0", "a stopped command's exit is known at once")


class NoSheriff(SheriffCase):
    """Issue 16 #16: with no sheriff serving, a verb says so and what it
    tried, and a table nobody answered for is not a success."""

    def test_no_sheriff_and_no_deputy(self):
        r = self.cli("status", check=False)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stdout, b"")
        err = r.stderr.decode()
        self.assertIn(f"no sheriff is serving on {self.control}", err)
        self.assertIn(f"no deputy answered on {self.url}", err)
        r = self.cli("deputies", check=False)
        self.assertEqual(r.returncode, 1, r)
        r = self.cli("stop", "--all", check=False)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"no sheriff is serving", r.stderr)
        # with a deputy, the table is what it reported, and says so
        self.deputies("dep-1")
        r = self.cli("status", check=False)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(r.stdout.startswith(b"DEPUTY"), r.stdout)
        self.assertIn(b"no sheriff is serving", r.stderr)
        self.assertIn(b"1 deputies reported", r.stderr)

    def test_no_multicast_route(self):
        why = have_netns()
        if why:
            self.skipTest(why)
        sheriff = binary("daemonproxy-sheriff")
        r = subprocess.run(["unshare", "-n", "sh", "-c", f'ip link set lo up; exec "$0" --control {self.control} status',
                            sheriff], capture_output=True, timeout=20,
                           env={k: v for k, v in os.environ.items() if k != "LCM_DEFAULT_URL"})
        self.assertEqual(r.returncode, 1, r)
        err = r.stderr.decode()
        self.assertIn(f"no sheriff is serving on {self.control}", err)
        self.assertIn("udpm://239.255.76.67:7667", err)
        self.assertIn("route for multicast", err)


class ServeGoesOn(SheriffCase):
    """Issue 16 #11: the README's `serve fleet.cfg bringup &` runs the
    script, then goes on steering (--on-script-complete continue)."""

    def test_serve_steers_on_after_its_script(self):
        self.deputies("dep-1")
        p = self.serve("serve", self.config(CONFIG), "bringup")
        st = self.wait_status(lambda s: s.get(("dep-1", "job"), [""] * 4)[3] == "Running", 15)
        time.sleep(1.5)
        self.assertIsNone(p.poll(), "serve exited after its script")
        r = self.cli("restart", "job", "--wait", "running", "--timeout", "10")
        st2 = self.wait_status(lambda s: s[("dep-1", "job")][4] not in ("-", st[("dep-1", "job")][4]))
        self.assertEqual(st2[("dep-1", "job")][3], "Running")
        # the README shows it so
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        self.assertIn("daemonproxy-sheriff serve fleet.cfg bringup &", readme)
        self.assertNotIn("--on-script-complete exit", readme)
        r.check_returncode()


if __name__ == "__main__":
    unittest.main()
