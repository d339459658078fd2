"""Tests for controllers/restart-with-backoff.sh.

daemonproxy runs a config in which the script is a controller service
(control.event control.cmd stderr, auto_up always) with BACKOFF_MIN=1,
BACKOFF_MAX=4, BACKOFF_STABLE=2; the test watches over -i and times the
pause between each "down" and the next "up" as it receives them:

  crash  exits at once every time: pauses ~1, 2, 4, then 4 (the cap);
  flip   exits at once, except that its third run lasts 2 s (stable):
         pauses ~1, 2, then 1 again (reset);
  once   tagged nobackoff, auto  has auto_up triggers, gone  deleted while
         its restart is pending: never restarted.

The script schedules each restart at TS + 0.5 + DELAY (TS is a truncated
second), so each pause is DELAY +- 0.5 s; the bounds below allow that plus
some latency.  About 11 s.

A second test starts the controller only after services went down: it must
find them in its statedump and restart the ones it is responsible for.
About 3 s.
Run: python3 -m unittest discover -s tests/python -v
"""

import os
import time
import unittest

from support import CONTROLLERS, DaemonTestCase

SCRIPT = os.path.join(CONTROLLERS, "restart-with-backoff.sh")

CONFIG = """\
service.args\tbackoff\tsh\t{script}
service.fds\tbackoff\tcontrol.event\tcontrol.cmd\tstderr
service.auto_up\tbackoff\t1\talways
"""

# Defined once the controller is up (the config is read concurrently with -i).
FLIP = "n=$(cat flip.count 2>/dev/null || echo 0); n=$((n+1)); echo $n >flip.count; [ $n -ne 3 ] || sleep 2; exit 1"
SERVICES = [
    ("service.args", "crash", "sh", "-c", "exit 1"),
    ("service.args", "flip", "sh", "-c", FLIP),
    ("service.tags", "once", "kind=oneshot", "nobackoff"),
    ("service.args", "once", "sh", "-c", "exit 1"),
    ("service.args", "auto", "sh", "-c", "exit 1"),
    ("service.auto_up", "auto", "1", "SIGUSR2"),
    ("service.args", "gone", "sh", "-c", "exit 1"),
]

SLACK = 0.65  # half a second of truncation, plus latency


class Backoff(DaemonTestCase):
    def test_delays_double_cap_and_reset(self):
        with open(self.path("daemonproxy.conf"), "w") as f:
            f.write(CONFIG.format(script=SCRIPT))
        env = dict(os.environ, BACKOFF_MIN="1", BACKOFF_MAX="4", BACKOFF_STABLE="2")
        # Every event is timed when it is read, whichever call reads it.
        log = []
        c = self.spawn(["-c", "daemonproxy.conf"], env=env, on_event=lambda ev: log.append((time.monotonic(), ev)))

        c.wait_state("backoff", "up", timeout=5)
        c.batch(SERVICES + [("service.start", n) for n in ("crash", "flip", "once", "auto", "gone")], check=True)

        downs = {}  # name -> [down events]
        down_at = {}  # name -> when the last down arrived
        pauses = {}  # name -> [seconds from a down to the next up]
        gone_deleted = False
        deadline = time.monotonic() + 20
        seen = 0
        while time.monotonic() < deadline:
            if len(pauses.get("crash", [])) >= 4 and len(pauses.get("flip", [])) >= 3:
                break
            c.pump(0.1)
            while seen < len(log):  # (command() below may add to log)
                now, ev = log[seen]
                seen += 1
                if ev.name != "service.state":
                    continue
                name = ev.service
                if ev.state == "down" and ev.pid is not None:
                    downs.setdefault(name, []).append(ev)
                    down_at[name] = now
                elif ev.state == "up" and name in down_at:
                    pauses.setdefault(name, []).append(now - down_at.pop(name))
                elif ev.state == "start" and name == "gone" and downs.get(name) and not gone_deleted:
                    # Its restart is pending: delete it; it must stay gone.
                    c.command("service.delete", "gone", check=True)
                    gone_deleted = True

        crash = pauses.get("crash", [])
        flip = pauses.get("flip", [])
        self.assertGreaterEqual(len(crash), 4, "crash pauses: %r" % crash)
        self.assertGreaterEqual(len(flip), 3, "flip pauses: %r" % flip)

        # Doubling from 1 s, capped at 4 s.
        for got, want in zip(crash, (1, 2, 4, 4)):
            self.assertLess(abs(got - want), SLACK, "crash pauses %r, want ~1, 2, 4, 4" % crash)
        self.assertLess(crash[0], crash[1])
        self.assertLess(crash[1], crash[2])

        # A stable run (2 s >= BACKOFF_STABLE) resets the delay to 1 s.
        self.assertGreaterEqual(downs["flip"][2].uptime, 2)
        for got, want in zip(flip, (1, 2, 1)):
            self.assertLess(abs(got - want), SLACK, "flip pauses %r, want ~1, 2, 1" % flip)

        # Left alone: nobackoff, auto_up triggers, deleted.
        self.assertTrue(gone_deleted, "gone never had a restart pending")
        self.assertNotIn("gone", pauses)
        dump = c.statedump()
        self.assertNotIn("once", pauses, "once (nobackoff) was restarted")
        self.assertEqual(dump["services"]["once"]["state"], "down")
        self.assertNotIn("auto", pauses, "auto (auto_up SIGUSR2) was restarted")
        self.assertEqual(dump["services"]["auto"]["state"], "down")
        self.assertNotIn("gone", dump["services"])
        self.assertEqual(dump["services"]["backoff"]["state"], "up")
        self.assertNotIn("restart-with-backoff: daemonproxy:", self.log_text(), "unexpected error")

    def test_services_found_down_at_start_up(self):
        with open(self.path("daemonproxy.conf"), "w") as f:
            f.write(CONFIG.format(script=SCRIPT).replace("service.auto_up", "# service.auto_up"))
        c = self.spawn(["-c", "daemonproxy.conf"], env=dict(os.environ, BACKOFF_MIN="1"))
        c.start("early", ["sh", "-c", "exit 2"])
        c.start("skip", ["sh", "-c", "exit 2"], tags=["nobackoff"])
        c.command("service.args", "never", "true", check=True)
        c.wait_state("early", "down", timeout=5)
        c.wait_state("skip", "down", timeout=5)
        time.sleep(2.1)  # so that early is overdue (2 s down > 1 s delay) when found
        c.command("service.start", "backoff", check=True)
        up = c.wait_state("early", "up", timeout=3)
        self.assertGreater(up.ts, c.statedump()["services"]["skip"]["ts"])
        c.sync()
        self.assertIn("restart-with-backoff: early has been down for 2s; starting it", self.log_text())
        dump = c.statedump()
        self.assertEqual(dump["services"]["skip"]["state"], "down")
        self.assertEqual(dump["services"]["never"]["state"], "down")
        self.assertIsNone(dump["services"]["never"]["pid"])


if __name__ == "__main__":
    unittest.main()
