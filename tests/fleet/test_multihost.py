"""Three hosts on one machine (docs/fleet.md §7 "Multi-host"): two
network namespaces each with a daemonproxy and its bridge, a third with a
sheriff made of the real LCM library, joined by veth pairs on a Linux
bridge in the sheriff's namespace, with multicast TTL 1. Loopback-free
traffic never leaves these namespaces."""

import os
import subprocess
import unittest

from support import HERE, PYTHON, three_namespaces

URL = "udpm://239.255.76.67:7667?ttl=1"


class ThreeHosts(unittest.TestCase):
    def setUp(self):
        self.ns = three_namespaces(self)

    def test_sheriff_steers_two_deputies_across_a_link_that_goes_down(self):
        env = dict(os.environ, NS_A=self.ns["A"], NS_B=self.ns["B"], LINK_A="sA")
        r = subprocess.run(["ip", "netns", "exec", self.ns["S"], PYTHON, "scenarios.py", "multihost", URL],
                           cwd=HERE, env=env, capture_output=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-3000:])
        self.assertIn(b"multihost over", r.stdout)

    def test_daemonproxy_sheriff_runs_a_group_across_hosts(self):
        env = dict(os.environ, NS_A=self.ns["A"], NS_B=self.ns["B"])
        r = subprocess.run(["ip", "netns", "exec", self.ns["S"], PYTHON, "scenarios.py", "multihost_sheriff", URL],
                           cwd=HERE, env=env, capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-3000:])
        self.assertIn(b"multihost_sheriff over", r.stdout)


if __name__ == "__main__":
    unittest.main()
