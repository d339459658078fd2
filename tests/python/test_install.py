"""`make install` puts each file where a user looks for it (issue 16 #18):
daemons in sbin, the sheriff (a user command, section 1) in bin, the
controllers the documents refer to in share/daemonproxy/controllers (with
the Python client, python/daemonproxy/, beside them as daemonproxy.py, so
the installed jobs.py runs), the man pages in their sections; `make
uninstall` takes them away again.
"""

import filecmp
import os
import subprocess
import sys
import tempfile
import unittest

from support import ROOT, binary


class MakeInstall(unittest.TestCase):
    def test_layout_and_uninstall(self):
        release = os.path.dirname(binary())
        for b in ("daemonproxy", "daemonproxy-poweroff", "daemonproxy-bridge", "daemonproxy-sheriff"):
            if not os.path.exists(os.path.join(release, b)):
                self.fail("%s is not built in %s (run cargo build first)" % (b, release))
        with tempfile.TemporaryDirectory(prefix="dp-inst-") as dest:
            make = ["make", "-s", "-o", "all", "DESTDIR=" + dest, "PREFIX=/usr", "RELEASE=" + release]
            subprocess.run(make + ["install"], cwd=ROOT, check=True, timeout=120)
            files = set()
            for d, _, names in os.walk(dest):
                files.update(os.path.relpath(os.path.join(d, n), dest) for n in names)
            want = {
                "usr/sbin/daemonproxy",
                "usr/sbin/daemonproxy-poweroff",
                "usr/sbin/daemonproxy-bridge",
                "usr/bin/daemonproxy-sheriff",
                "usr/share/daemonproxy/controllers/shutdown.sh",
                "usr/share/daemonproxy/controllers/container-stop.sh",
                "usr/share/daemonproxy/controllers/jobs.py",
                "usr/share/daemonproxy/controllers/daemonproxy.py",
                "usr/share/daemonproxy/controllers/example.conf",
                "usr/share/man/man8/daemonproxy.8",
                "usr/share/man/man1/daemonproxy-sheriff.1",
            }
            self.assertEqual(want - files, set(), "missing after make install")
            self.assertNotIn("usr/sbin/daemonproxy-sheriff", files)
            self.assertTrue(os.access(os.path.join(dest, "usr/bin/daemonproxy-sheriff"), os.X_OK))
            self.assertTrue(os.access(os.path.join(dest, "usr/share/daemonproxy/controllers/shutdown.sh"), os.X_OK))
            controllers = os.path.join(dest, "usr/share/daemonproxy/controllers")
            self.assertTrue(
                filecmp.cmp(
                    os.path.join(controllers, "daemonproxy.py"),
                    os.path.join(ROOT, "python", "daemonproxy", "__init__.py"),
                    shallow=False,
                )
            )
            # The installed jobs.py imports the module beside it (its
            # checkout fallback, ../python, does not exist there).
            r = subprocess.run(
                [sys.executable, os.path.join(controllers, "jobs.py"), "--help"],
                cwd=dest, capture_output=True, text=True, timeout=30,
            )
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("--token-file", r.stdout)
            subprocess.run(make + ["uninstall"], cwd=ROOT, check=True, timeout=120)
            left = [os.path.join(d, n) for d, _, names in os.walk(dest) for n in names]
            self.assertEqual(left, [], "left after make uninstall")


if __name__ == "__main__":
    unittest.main()
