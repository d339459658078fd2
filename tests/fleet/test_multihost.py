"""Three hosts on one machine (docs/fleet.md §7 "Multi-host"): two
network namespaces each with a daemonproxy and its bridge, a third with a
sheriff made of the real LCM library, joined by veth pairs on a Linux
bridge in the sheriff's namespace, with multicast TTL 1. Loopback-free
traffic never leaves these namespaces."""

import os
import subprocess
import unittest

from support import HERE, PYTHON, have_netns, ip

URL = "udpm://239.255.76.67:7667?ttl=1"


class ThreeHosts(unittest.TestCase):
    def setUp(self):
        why = have_netns()
        if why:
            self.skipTest(why)
        tag = str(os.getpid())
        self.ns = {k: f"dp{k}{tag}" for k in "ABS"}
        self.addCleanup(self.teardown)
        A, B, S = self.ns["A"], self.ns["B"], self.ns["S"]
        for n in (A, B, S):
            ip("netns", "add", n)
            ip("-n", n, "link", "set", "lo", "up")
        ip("-n", S, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", S, "addr", "add", "10.77.0.1/24", "dev", "br0")
        ip("-n", S, "link", "set", "br0", "up")
        ip("-n", S, "route", "add", "224.0.0.0/4", "dev", "br0")
        for k, host, addr in (("A", A, "10.77.0.2"), ("B", B, "10.77.0.3")):
            ip("-n", S, "link", "add", f"s{k}", "type", "veth", "peer", "name", f"v{k}", "netns", host)
            ip("-n", S, "link", "set", f"s{k}", "master", "br0")
            ip("-n", S, "link", "set", f"s{k}", "up")
            ip("-n", host, "addr", "add", f"{addr}/24", "dev", f"v{k}")
            ip("-n", host, "link", "set", f"v{k}", "up")
            ip("-n", host, "route", "add", "224.0.0.0/4", "dev", f"v{k}")

    def teardown(self):
        for n in self.ns.values():
            ip("netns", "del", n, check=False)

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
