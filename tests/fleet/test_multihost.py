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

    def scenario(self, name, timeout, **env):
        """Run scenarios.py NAME in the sheriff's namespace S."""
        env = dict(os.environ, NS_A=self.ns["A"], NS_B=self.ns["B"], **env)
        r = subprocess.run(["ip", "netns", "exec", self.ns["S"], PYTHON, "scenarios.py", name, URL],
                           cwd=HERE, env=env, capture_output=True, timeout=timeout)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-3000:])
        self.assertIn(f"{name} over".encode(), r.stdout)

    def test_sheriff_steers_two_deputies_across_a_link_that_goes_down(self):
        self.scenario("multihost", 90, LINK_A="sA")

    def test_daemonproxy_sheriff_runs_a_group_across_hosts(self):
        self.scenario("multihost_sheriff", 120)

    def test_daemonproxy_sheriff_one_shot_verbs_order_every_deputy(self):
        """Verbs with no sheriff serving (issue 16 #14, #14b; docs/fleet.md
        §5.5): every deputy's commands, orders only after the reports of
        all, and a wait over --all that ends though host-a lists a local
        service its bridge will not stop."""
        self.scenario("oneshot_sheriff", 150)


if __name__ == "__main__":
    unittest.main()
