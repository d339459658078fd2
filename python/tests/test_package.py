"""The client as a package: what "pip install ./python" gives a user.

Always: the version matches daemonproxy's (Cargo.toml), pyproject.toml
declares no run-time dependency, py.typed marks the package as typed.
With DAEMONPROXY_CLIENT=installed (the throw-away venv of "make test"):
the module imported is the copy pip installed into that venv, identical to
python/daemonproxy/ of this checkout, with its metadata and py.typed.
"""

import filecmp
import importlib.metadata
import os
import re
import sys
import sysconfig
import unittest

from dptest import PACKAGE_SOURCE, ROOT, daemonproxy as dp

INSTALLED = os.environ.get("DAEMONPROXY_CLIENT") == "installed"
SOURCE = os.path.join(PACKAGE_SOURCE, "daemonproxy")


def pyproject():
    with open(os.path.join(PACKAGE_SOURCE, "pyproject.toml"), "rb") as f:
        try:
            import tomllib  # Python 3.11+
        except ModuleNotFoundError:
            raise unittest.SkipTest("tomllib needs Python 3.11")
        return tomllib.load(f)


class Source(unittest.TestCase):
    def test_version_is_daemonproxys(self):
        with open(os.path.join(ROOT, "Cargo.toml")) as f:
            cargo = re.search(r'(?m)^version = "([^"]+)"', f.read()).group(1)
        self.assertEqual(dp.__version__, cargo, "python/daemonproxy/__init__.py's __version__ and Cargo.toml")

    def test_no_run_time_dependencies_and_typed(self):
        project = pyproject()["project"]
        self.assertEqual(project.get("dependencies"), [])
        self.assertIn("version", project["dynamic"])  # from __version__
        self.assertTrue(os.path.isfile(os.path.join(SOURCE, "py.typed")))

    def test_public_names_exist(self):
        for name in dp.__all__:
            self.assertTrue(hasattr(dp, name), name)


@unittest.skipUnless(INSTALLED, "the client is tested from the checkout (DAEMONPROXY_CLIENT=installed: in a venv)")
class Installed(unittest.TestCase):
    def test_the_installed_copy_is_tested(self):
        self.assertNotEqual(sys.prefix, sys.base_prefix, "not running in a venv")
        here = os.path.dirname(os.path.realpath(dp.__file__))
        site = os.path.realpath(sysconfig.get_paths()["purelib"])
        self.assertEqual(here, os.path.join(site, "daemonproxy"), "imported from elsewhere than the venv")
        self.assertFalse(here.startswith(os.path.realpath(PACKAGE_SOURCE) + os.sep))
        # The venv was made by this "make test": the copy is the source.
        self.assertTrue(filecmp.cmp(dp.__file__, os.path.join(SOURCE, "__init__.py"), shallow=False))
        self.assertTrue(os.path.isfile(os.path.join(here, "py.typed")))

    def test_metadata(self):
        self.assertEqual(importlib.metadata.version("daemonproxy"), dp.__version__)
        self.assertFalse(importlib.metadata.requires("daemonproxy"), "run-time dependencies")
        files = {str(p) for p in importlib.metadata.files("daemonproxy")}
        self.assertIn("daemonproxy/py.typed", files)
        self.assertFalse([f for f in files if "tests" in f], "tests installed")


if __name__ == "__main__":
    unittest.main()
