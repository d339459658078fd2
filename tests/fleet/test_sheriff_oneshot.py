"""daemonproxy-sheriff verbs with no sheriff serving, across hosts (issue
16 #14, #14b; docs/fleet.md §5.5): two deputies in network namespaces of
their own, the verbs in a third (tests/fleet/scenarios.py
oneshot_sheriff). Needs root (skipped otherwise)."""

import os
import subprocess
import unittest

from support import HERE, PYTHON, three_namespaces

URL = "udpm://239.255.76.67:7667?ttl=1"


class OneShotAcrossHosts(unittest.TestCase):
    def setUp(self):
        self.ns = three_namespaces(self)

    def test_one_shot_verbs_order_every_deputy(self):
        env = dict(os.environ, NS_A=self.ns["A"], NS_B=self.ns["B"])
        r = subprocess.run(["ip", "netns", "exec", self.ns["S"], PYTHON, "scenarios.py", "oneshot_sheriff", URL],
                           cwd=HERE, env=env, capture_output=True, timeout=150)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-3000:])
        self.assertIn(b"oneshot_sheriff over", r.stdout)


if __name__ == "__main__":
    unittest.main()
