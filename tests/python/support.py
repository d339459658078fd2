"""Shared helpers for the Python tests of controllers/ (test_*.py here).

Run from the top of the repository:

    python3 -m unittest discover -s tests/python -v

The helpers that run the real daemonproxy binary through the Python client
(binary(), wait_until(), DaemonTestCase) are those of the client's own
tests, python/tests/dptest.py; "daemonproxy" below is the client module as
that file imports it (installed, or python/ of this checkout).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTROLLERS = os.path.join(ROOT, "controllers")
sys.path.insert(0, os.path.join(ROOT, "python", "tests"))

from dptest import DaemonTestCase, binary, daemonproxy, kill_services, wait_until  # noqa: E402,F401
