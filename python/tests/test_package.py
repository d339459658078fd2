"""The client as a package: what "pip install ./python" gives a user.

Always: the version matches daemonproxy's (Cargo.toml), pyproject.toml
declares no run-time dependency, py.typed marks the package as typed, and
every public function and method has annotations for its parameters and
return.  If mypy is importable here, "mypy --strict" passes on the package
(the venv of "make test" has no mypy: that test is skipped there).
With DAEMONPROXY_CLIENT=installed (the throw-away venv of "make test"):
the module imported is the copy pip installed into that venv, identical to
python/daemonproxy/ of this checkout, with its metadata and py.typed.
"""

import filecmp
import importlib.metadata
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
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


def public_callables():
    """(qualified name, function) for every public function of the module
    (everything in __all__ and any other public name defined there) and
    every method of its public classes that does not start with "_", plus
    __init__; properties count as their getter."""
    names = set(dp.__all__) | {n for n in vars(dp) if not n.startswith("_")}
    out = []
    for name in sorted(names):
        obj = getattr(dp, name)
        if getattr(obj, "__module__", None) != dp.__name__:
            continue  # imported, or not a function or class (constants, aliases)
        if inspect.isfunction(obj):
            out.append((name, obj))
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if inspect.isfunction(member):
                    out.append(("%s.%s" % (name, attr), member))
    return out


class Typed(unittest.TestCase):
    def test_public_functions_are_annotated(self):
        checked = public_callables()
        missing = []
        for qualname, func in checked:
            params = list(inspect.signature(func).parameters.values())
            if "." in qualname and params and params[0].name in ("self", "cls"):
                params = params[1:]  # a method's self or cls (staticmethods have none)
            for p in params:
                if p.annotation is inspect.Parameter.empty:
                    missing.append("%s: parameter %s" % (qualname, p.name))
            if inspect.signature(func).return_annotation is inspect.Signature.empty:
                missing.append("%s: return" % qualname)
        self.assertEqual(missing, [], "public functions without type annotations")
        # The walk found what it should (a broken walk would check nothing).
        names = {q for q, _ in checked}
        for expected in ("labels", "parse_statedump", "Client.__init__", "Client.spawn", "Client.stat", "Event.pid"):
            self.assertIn(expected, names)

    def test_mypy_strict(self):
        if importlib.util.find_spec("mypy") is None:
            self.skipTest("mypy is not installed in this interpreter (pip install mypy to run this test)")
        with tempfile.TemporaryDirectory(prefix="dp-mypy-") as cache:
            result = subprocess.run(
                [sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache, SOURCE],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
                timeout=600,
            )
        self.assertEqual(result.returncode, 0, "mypy --strict %s:\n%s" % (SOURCE, result.stdout))


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
