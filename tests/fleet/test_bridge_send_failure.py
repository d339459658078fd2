"""The bridge says when it cannot send (issue 16 #14c; docs/fleet.md §4.3):
in a network namespace of its own, the route for 224.0.0.0/4 is deleted,
and then lost again the way it is lost in the field (the link goes down
and up, and the route added by hand does not come back). Each episode
gives one log line however many messages fail, and its end one more."""

import os
import time
import unittest

from support import Host, Procs, have_netns, ip, wait_until

URL = "udpm://239.255.76.67:7667?ttl=0"
FAIL = "cannot send on LCM"
BACK = "sending on LCM works again"


class SendFailure(unittest.TestCase):
    def setUp(self):
        why = have_netns()
        if why:
            self.skipTest(why)
        self.ns = f"dpsend{os.getpid()}"
        ip("netns", "add", self.ns)
        self.addCleanup(ip, "netns", "del", self.ns, check=False)
        self.route(True)
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)

    def route(self, add):
        if add:
            ip("-n", self.ns, "link", "set", "lo", "up")
            ip("-n", self.ns, "link", "set", "lo", "multicast", "on")
        ip("-n", self.ns, "route", "add" if add else "del", "224.0.0.0/4", "dev", "lo")

    def test_a_failed_send_is_logged_once_per_episode_and_its_end_too(self):
        h = Host(self.procs, URL, "dep-send", prefix=["ip", "netns", "exec", self.ns])
        count = lambda w: h.bridge_log().count(w)  # noqa: E731
        self.assertTrue(wait_until(lambda: "deputy" in h.bridge_log(), 5), h.bridge_log())
        time.sleep(1.5)  # discovery done, infos going out every second
        self.assertEqual(count(FAIL), 0, h.bridge_log())

        # 1: the route is deleted; three infos fail, one line says so
        self.route(False)
        self.assertTrue(wait_until(lambda: count(FAIL) == 1, 3), h.bridge_log())
        time.sleep(3)
        self.assertEqual((count(FAIL), count(BACK)), (1, 0), h.bridge_log())
        self.route(True)
        self.assertTrue(wait_until(lambda: count(BACK) == 1, 3), h.bridge_log())

        # 2: the link goes down and up; the hand-made route is gone with it
        ip("-n", self.ns, "link", "set", "lo", "down")
        ip("-n", self.ns, "link", "set", "lo", "up")
        self.assertNotIn(b"224.0.0.0/4", ip("-n", self.ns, "route", "show").stdout)
        self.assertTrue(wait_until(lambda: count(FAIL) == 2, 3), h.bridge_log())
        time.sleep(2)
        self.assertEqual((count(FAIL), count(BACK)), (2, 1), h.bridge_log())
        self.route(True)
        self.assertTrue(wait_until(lambda: count(BACK) == 2, 3), h.bridge_log())
        self.assertIsNone(h.bridge.poll(), "the bridge runs on")
        lines = [l for l in h.bridge_log().splitlines() if FAIL in l or BACK in l]
        print("\n  " + "\n  ".join(lines), flush=True)


if __name__ == "__main__":
    unittest.main()
