"""The image of "make image" booted as PID 1 (issue 17 §2).

    make image-test

boots target/image/rootfs (DAEMONPROXY_ROOTFS) the way a container engine
would: new PID, mount, UTS and IPC namespaces (unshare), /proc and /dev
mounted inside the root file system, then chroot to it and exec the static
/sbin/daemonproxy, which reads the image's /etc/daemonproxy.conf
(image/daemonproxy.conf). The test checks that the main service runs, sends
SIGTERM from outside to the namespace's PID 1 (as "docker stop" does), and
sees container-stop stop everything within the grace period, the namespace
end with the main service's status (143: its sh dies of SIGTERM), and no
process of the namespace left.

It needs root (namespaces, mounts, chroot): without it the test fails, it
never skips. Every wait has a timeout.
"""

import os
import signal
import subprocess
import threading
import time
import unittest

ROOTFS = os.environ.get("DAEMONPROXY_ROOTFS", "")
GRACE = 5  # image/daemonproxy.conf: GRACE=5
MAIN_STATUS = 128 + signal.SIGTERM

# The namespaces' first process mounts what a container engine or the
# kernel would (/proc, and /dev for daemonproxy's /dev/null) in the new
# mount namespace, then becomes daemonproxy inside the image: exec keeps
# it PID 1.
BOOT = 'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && exec chroot "$1" /sbin/daemonproxy'
UNSHARE = ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--kill-child", "sh", "-c", BOOT, "boot"]


def wait_until(timeout, pred, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def children(pid):
    return [int(c) for c in read(f"/proc/{pid}/task/{pid}/children").split()]


def status_field(pid, key):
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return None


def ns_pid(pid):
    f = status_field(pid, "NSpid")
    return int(f.split()[-1]) if f else None


def ns(pid, kind):
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def cmdline(pid):
    return read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def in_namespace(pidns):
    """Host pids of every process in PID namespace `pidns`."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and ns(int(p), "pid") == pidns]


class BootTest(unittest.TestCase):
    def test_image_boots_and_stops_with_the_main_service_status(self):
        self.assertTrue(ROOTFS, "DAEMONPROXY_ROOTFS is not set: run it with make image-test")
        self.assertTrue(os.path.isfile(os.path.join(ROOTFS, "etc", "daemonproxy.conf")), f"no image at {ROOTFS}")
        self.assertEqual(os.geteuid(), 0, "booting the image needs root (namespaces, mounts, chroot): run as root")

        p = subprocess.Popen(
            UNSHARE + [ROOTFS],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out = []
        reader = threading.Thread(target=lambda: out.extend(ln.decode(errors="replace").rstrip("\n") for ln in p.stdout))
        reader.start()
        try:
            self._boot_and_stop(p, out)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            reader.join(5)
            p.stdout.close()
        self.assertFalse(os.path.ismount(os.path.join(ROOTFS, "proc")), "the image's /proc mount leaked out")

    def _boot_and_stop(self, p, out):
        def text():
            return "\n".join(out)

        # PID 1: unshare's child, once it is daemonproxy.
        init = []

        def found_init():
            init[:] = [c for c in children(p.pid) if ns_pid(c) == 1 and read(f"/proc/{c}/comm").strip() == "daemonproxy"]
            return bool(init)

        self.assertTrue(wait_until(10, found_init), f"no daemonproxy as PID 1 under unshare; output:\n{text()}")
        init = init[0]
        for kind in ("pid", "mnt", "uts", "ipc"):
            self.assertNotEqual(ns(init, kind), ns(os.getpid(), kind), f"PID 1 shares the {kind} namespace")
        self.assertEqual(os.readlink(f"/proc/{init}/root"), os.path.realpath(ROOTFS), "PID 1's root")

        # The main service and the controller, ready (the controller ignores
        # SIGTERM once its trap has run), and the main service's line.
        def ready():
            kids = {c: cmdline(c) for c in children(init)}
            main = any(c.startswith("/bin/sh -c echo") for c in kids.values())
            stop = any(
                "container-stop.sh" in c and int(status_field(k, "SigIgn") or "0", 16) & (1 << (signal.SIGTERM - 1))
                for k, c in kids.items()
            )
            return main and stop and "main service up" in out

        if not wait_until(10, ready):
            kids = {c: cmdline(c) for c in children(init)}
            self.fail(f"the image's services are not running: {kids}\noutput:\n{text()}")
        pidns = ns(init, "pid")
        before = in_namespace(pidns)
        self.assertIn(init, before)

        # docker stop: SIGTERM to PID 1, from outside.
        t0 = time.monotonic()
        os.kill(init, signal.SIGTERM)
        try:
            code = p.wait(GRACE + 5)
        except subprocess.TimeoutExpired:
            self.fail(f"the namespace did not end within {GRACE + 5} s of SIGTERM; output:\n{text()}")
        took = time.monotonic() - t0
        self.assertEqual(code, MAIN_STATUS, f"exit status; output:\n{text()}")
        self.assertLess(took, GRACE, f"the stop took {took:.1f} s, more than the grace period")
        self.assertTrue(wait_until(5, lambda: "container-stop: stopped; exit status 143" in out), text())
        self.assertIn("container-stop: sending SIGTERM to app", out)
        self.assertNotIn("grace period over", text())

        # Nothing of the namespace is left.
        left = [q for q in before if os.path.exists(f"/proc/{q}") and ns(q, "pid") == pidns]
        self.assertEqual(left, [], "processes of the namespace left running")
        self.assertTrue(wait_until(5, lambda: not in_namespace(pidns)), "processes of the namespace left running")


if __name__ == "__main__":
    unittest.main()
