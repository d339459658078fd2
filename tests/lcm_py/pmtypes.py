"""The procman_lcm Python types as the real lcm-gen generates them.

Generated at import time from tests/lcmtypes/*.lcm into a temporary
directory (removed at exit), using the lcm-gen that sits beside the running
interpreter (the project's .venv), so tests never depend on stale output.
"""

import atexit
import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LCMTYPES = os.path.join(os.path.dirname(HERE), "lcmtypes")
LCM_GEN = os.path.join(os.path.dirname(sys.executable), "lcm-gen")

NAMES = ["cmd_t", "cmd_desired_t", "cmd_status_t", "deputy_info_t", "orders_t", "output_t", "discovery_t"]


def _generate():
    # The first process generates the types and removes them at its exit;
    # the helpers it starts (peers, hubs, attackers, often ended by SIGKILL
    # and so never running atexit) reuse its directory through the
    # environment instead of leaving one of their own behind.
    out = os.environ.get("DAEMONPROXY_PMTYPES_DIR", "")
    if not (out and os.path.isfile(os.path.join(out, "procman_lcm", "__init__.py"))):
        out = tempfile.mkdtemp(prefix="pmtypes-")
        atexit.register(shutil.rmtree, out, True)
        files = sorted(glob.glob(os.path.join(LCMTYPES, "*.lcm")))
        subprocess.run([LCM_GEN, "-p", "--ppath", out] + files, check=True)
        os.environ["DAEMONPROXY_PMTYPES_DIR"] = out
    sys.path.insert(0, out)
    return importlib.import_module("procman_lcm")


procman_lcm = _generate()


def base_hashes():
    """{type name: base hash} as `lcm-gen -d` prints them."""
    files = sorted(glob.glob(os.path.join(LCMTYPES, "*.lcm")))
    text = subprocess.run([LCM_GEN, "-d"] + files, check=True, capture_output=True, text=True).stdout
    hashes = {}
    for line in text.splitlines():
        if line.startswith("struct ") and "[hash=" in line:
            name = line.split()[1].split(".")[-1]
            hashes[name] = int(line.split("[hash=")[1].rstrip("]"), 16)
    return hashes


def type_named(name):
    if name not in NAMES:
        raise KeyError(name)
    return getattr(procman_lcm, name)
