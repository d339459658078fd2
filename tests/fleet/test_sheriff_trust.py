"""daemonproxy-sheriff against another local user and spoofed reports
(issue 14, the sheriff's findings): the lone ranger's private directory
and hub, the control socket, the memory the reports can take, and limits
checked where a configuration enters.

The attacker is a second uid (65534, by setpriv) that plants paths and
listens on sockets before root's sheriff runs; every test asserts that the
attacker got nothing and ran nothing. Needs root (skipped otherwise).
"""

import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from support import HERE, PYTHON, Host, Procs, binary, wait_until

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

# The attacker's helpers, run as NOBODY from a file in the shared directory.
PLANT = r"""
import os, select, sys, time
d, stolen, marker, seconds = sys.argv[1:5]
os.mkdir(d)
os.chmod(d, 0o777)
fifo = os.path.join(d, "local.conf")
os.mkfifo(fifo, 0o666)
fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
print("ready", flush=True)
got = b""
end = time.monotonic() + float(seconds)
while time.monotonic() < end:
    r, _, _ = select.select([fd], [], [], 0.05)
    if not r:
        continue
    chunk = os.read(fd, 65536)
    if not chunk:
        if got:
            break
        time.sleep(0.01)
        continue
    got += chunk
    # Root's configuration is being written: put ours in its place.
    evil = os.path.join(d, "evil.conf")
    with open(evil, "w") as f:
        f.write(f"service.args\tpwn\t/bin/sh\t-c\tid -u > {marker}\nservice.auto_up\tpwn\t1\n")
    os.rename(evil, fifo)
with open(stolen, "wb") as f:
    f.write(got)
"""

LISTEN = r"""
import os, socket, sys, time
path, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
greeting = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else b"ok\t1\t1\n"
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
s.settimeout(0.1)
print("ready", flush=True)
got = b""
conns = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        c, _ = s.accept()
        c.settimeout(0.05)
        conns.append(c)
        if greeting.startswith(b"\x28"):
            try:
                c.sendall(greeting)
            except OSError:
                pass
    except socket.timeout:
        pass
    for c in conns:
        try:
            d = c.recv(65536)
        except (socket.timeout, OSError):
            continue
        if d:
            got += d
            if not greeting.startswith(b"\x28"):
                try:
                    c.sendall(greeting)
                except OSError:
                    pass
    with open(log, "wb") as f:
        f.write(b"%d\n" % len(conns) + got)
"""

ORDERS = r"""
import socket, struct, sys, time
frames, ports, path = open(sys.argv[1], "rb").read(), sys.argv[2], sys.argv[3]
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    print("unix: connected", flush=True)
except OSError as e:
    print(f"unix: {e.__class__.__name__}", flush=True)
for port in filter(None, ports.split(",")):
    t = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
    t.sendall(bytes.fromhex("287617fb00000100"))
    t.recv(8)
    # One PM_ORDERS frame every 0.2 s (each newer than the last).
    for i in range(0, len(frames), len(frames) // 15):
        t.sendall(frames[i:i + len(frames) // 15])
        time.sleep(0.2)
    print(f"tcp {port}: orders sent", flush=True)
"""

# Attackers use only the standard library, so the system Python will do
# (the venv's may live under a directory closed to other users).
ATTACK_PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else PYTHON


def orders_frames(marker):
    """15 tcpq PUBLISH frames of PM_ORDERS for deputy localhost, ordering
    `id -u > marker` (the real library encodes them; utimes 0.2 s apart)."""
    from support import Sheriff, cmd
    enc = Sheriff.__new__(Sheriff)
    enc.id, enc.last_utime = "evil:1:1", 0
    exe = f"sh -c 'id -u > {marker}'"
    out = b""
    for i in range(15):
        data = enc.encode_orders("localhost", [cmd("pwn", exe, 1)], int(time.time() * 1e6) + i * 200000)
        out += struct.pack(">II", 1, len("PM_ORDERS")) + b"PM_ORDERS" + struct.pack(">I", len(data)) + data
    return out


def listening_tcp_ports(pid):
    """Ports of the TCP sockets process `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
class TrustCase(unittest.TestCase):
    def setUp(self):
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)
        # A shared directory like /tmp: everyone writes, the sticky bit on.
        self.shared = tempfile.mkdtemp(prefix="sheriff-trust-")
        os.chmod(self.shared, 0o1777)
        self.addCleanup(shutil.rmtree, self.shared, True)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("XDG_RUNTIME_DIR", "DAEMONPROXY_SHERIFF_CONTROL", "LCM_DEFAULT_URL")}
        self.env["TMPDIR"] = self.shared

    def path(self, name):
        return os.path.join(self.shared, name)

    def attacker(self, script, *args):
        """Run an attacker helper as NOBODY; returns once it says ready."""
        f = self.path(f"attack-{len(self.procs.procs)}.py")
        with open(f, "w") as out:
            out.write(script)
        os.chmod(f, 0o644)
        p = self.procs.start([*AS_NOBODY, ATTACK_PY, f, *args], stdout=subprocess.PIPE, cwd="/")
        return p

    def ready(self, p):
        self.assertEqual(p.stdout.readline(), b"ready\n", "the attacker did not start")

    def sheriff(self, *args, timeout=20, env=None):
        return subprocess.run([binary("daemonproxy-sheriff"), *args], capture_output=True, timeout=timeout,
                              env=env or self.env)

    def serve(self, *args, log="serve.log"):
        logf = self.procs.open(self.path(log))
        return self.procs.start([binary("daemonproxy-sheriff"), *args], stdout=logf, stderr=logf, env=self.env)

    def log(self, name="serve.log"):
        with open(self.path(name), errors="replace") as f:
            return f.read()

    def config(self, text, name="fleet.cfg"):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def hub_url(self, name="serve.log"):
        m = wait_until(lambda: re.search(r"tcpq hub on (\S+)", self.log(name)), 10)
        self.assertTrue(m, self.log(name))
        return m.group(1)


LOCAL_CFG = 'cmd "hello" { exec = "sh -c \'echo hi; exec sleep 60\'"; deputy = "localhost"; }\n'


class LoneRanger(TrustCase):
    def start_local(self, control):
        return self.serve("--local", "--control", control, "serve", self.config(LOCAL_CFG))

    def hello_runs(self, control):
        r = self.sheriff("--control", control, "start", "hello", "--wait", "running", "--timeout", "15", timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr.decode() + self.log())

    def test_local_ignores_a_planted_private_directory(self):
        """#1: the old private directory was $TMPDIR/daemonproxy-sheriff-local.PID,
        taken as found. Planted (mode 777, a FIFO as local.conf) for the
        sheriff's very pid, it gave the attacker root's configuration and
        a command of theirs run as root."""
        control = self.path("root-ctl.sock")
        # The sheriff's pid is known before it runs: a shell execs it.
        p = self.procs.start(["sh", "-c", 'echo $$; read go; exec "$0" "$@"', binary("daemonproxy-sheriff"),
                              "--local", "--control", control, "serve", self.config(LOCAL_CFG)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.procs.open(self.path("serve.log")),
                             env=self.env)
        pid = int(p.stdout.readline())
        planted = self.path(f"daemonproxy-sheriff-local.{pid}")
        stolen, marker = self.path("stolen"), self.path("pwned")
        a = self.attacker(PLANT, planted, stolen, marker, "5")
        self.ready(a)
        p.stdin.write(b"go\n")
        p.stdin.close()
        self.assertTrue(wait_until(lambda: os.path.exists(control) or p.poll() is not None, 10), self.log())
        pwned = wait_until(lambda: os.path.exists(marker), 3)
        a.wait(20)
        with open(stolen, "rb") as f:
            self.assertEqual(f.read(), b"", "the attacker read root's configuration")
        self.assertFalse(pwned, "the attacker's command ran as root")
        self.hello_runs(control)
        # The sheriff's own directory: a fresh name, root's, mode 0700.
        mine = [d for d in os.listdir(self.shared)
                if d.startswith("daemonproxy-sheriff-local.") and os.path.join(self.shared, d) != planted]
        self.assertEqual(len(mine), 1, os.listdir(self.shared))
        st = os.lstat(self.path(mine[0]))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o700))
        conf = os.lstat(self.path(mine[0] + "/local.conf"))
        self.assertEqual((stat.S_ISREG(conf.st_mode), stat.S_IMODE(conf.st_mode)), (True, 0o600))

    def test_local_hub_is_closed_to_other_users(self):
        """#2: the lone ranger's hub was TCP on 127.0.0.1, and one PM_ORDERS
        from any local user for deputy localhost ran a command as root."""
        control = self.path("root-ctl.sock")
        p = self.start_local(control)
        url = self.hub_url()
        self.hello_runs(control)
        ports = listening_tcp_ports(p.pid)
        marker = self.path("pwned")
        hub = url[len("tcpq+unix://"):] if url.startswith("tcpq+unix://") else ""
        frames = self.path("orders.bin")
        with open(frames, "wb") as f:
            f.write(orders_frames(marker))
        os.chmod(frames, 0o644)
        a = self.attacker(ORDERS, frames, ",".join(map(str, ports)), hub or "/nonexistent")
        out = a.communicate(timeout=30)[0].decode()
        time.sleep(1)
        self.assertFalse(os.path.exists(marker), f"another user's orders ran as root: {out}")
        self.assertEqual(ports, [], "the sheriff listens on TCP")
        self.assertTrue(url.startswith("tcpq+unix://"), url)
        self.assertIn("unix: PermissionError", out)
        st = os.lstat(os.path.dirname(hub))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o700))
        self.assertEqual(stat.S_IMODE(os.lstat(hub).st_mode), 0o600)
        # Opened by mistake, the hub still closes another user unheard.
        os.chmod(os.path.dirname(hub), 0o711)
        os.chmod(hub, 0o666)
        r = subprocess.run([*AS_NOBODY, ATTACK_PY, "-c",
                            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
                            "try: s.sendall(bytes.fromhex('287617fb00000100')); print(repr(s.recv(100)))\n"
                            "except (BrokenPipeError, ConnectionResetError): print(repr(b''))", hub],
                           capture_output=True, timeout=20)
        self.assertEqual(r.stdout.strip(), b"b''", r.stderr)
        self.hello_runs(control)  # and serves its own user still

    def test_bridge_greets_only_a_hub_of_its_own_user(self):
        """The client side of the Unix hub: a bridge told to use a socket
        another user listens on sends it nothing (not even the greeting)."""
        evil = self.path("evil-hub.sock")
        log = self.path("evil-hub.log")
        a = self.attacker(LISTEN, evil, log, "4", "287617fa00000100")
        self.ready(a)
        h = Host(self.procs, f"tcpq+unix://{evil}", "victim")
        a.wait(20)
        with open(log, "rb") as f:
            conns, _, got = f.read().partition(b"\n")
        self.assertGreater(int(conns), 0, "the bridge never tried: " + h.bridge_log())
        self.assertEqual(got, b"", "the bridge talked to another user's hub")


    def test_bridge_sends_no_command_to_another_users_daemonproxy_socket(self):
        """The client side of daemonproxy's control socket: a bridge told
        `--socket PATH` where another user listens exits, saying so, and
        sends nothing (issue 14: every client checks its server)."""
        evil = self.path("evil-dp.sock")
        log = self.path("evil-dp.log")
        a = self.attacker(LISTEN, evil, log, "4", "")
        self.ready(a)
        r = subprocess.run([binary("daemonproxy-bridge"), "--socket", evil, "--lcm-url", "tcpq://127.0.0.1:1",
                            "--id", "victim"], capture_output=True, timeout=20)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"served by uid 65534", r.stderr)
        a.wait(20)
        with open(log, "rb") as f:
            conns, _, got = f.read().partition(b"\n")
        self.assertGreater(int(conns), 0, "the bridge never connected")
        self.assertEqual(got, b"", "the bridge sent commands to another user's socket")


class ControlSocket(TrustCase):
    def test_verbs_talk_only_to_their_own_sheriff(self):
        """#7: a verb sent its request to whoever listened on the control
        socket, and took an `ok` from it as success."""
        evil = self.path("evil.sock")
        log = self.path("evil.log")
        a = self.attacker(LISTEN, evil, log, "6")
        self.ready(a)
        for verb in (["stop", "--all"], ["status"], ["flush"], ["logs", "x"], ["run", "s"]):
            r = self.sheriff("--lcm-url", "tcpq://127.0.0.1:9", "--control", evil, *verb)
            self.assertNotEqual(r.returncode, 0, (verb, r.stderr))
            self.assertIn(f"uid {NOBODY}".encode(), r.stderr, verb)
        r = self.sheriff("--control", evil, "serve")
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"not ours", r.stderr)
        a.wait(20)
        with open(log, "rb") as f:
            self.assertEqual(f.read().partition(b"\n")[2], b"", "a request reached another user")

    def test_default_socket_is_in_a_private_directory(self):
        """#7: without XDG_RUNTIME_DIR the default was
        /tmp/daemonproxy-sheriff-UID.sock, a name anyone could take first."""
        # An XDG_RUNTIME_DIR that is not ours is not used either.
        foreign = self.path("xdg")
        os.mkdir(foreign, 0o700)
        os.chown(foreign, NOBODY, NOBODY)
        self.env["XDG_RUNTIME_DIR"] = foreign
        p = self.serve("--lcm-url", "tcpq://127.0.0.1:9", "serve")
        sock = self.path(f"daemonproxy-sheriff-{os.geteuid()}/sheriff.sock")
        self.assertTrue(wait_until(lambda: os.path.exists(sock) or p.poll() is not None, 10), self.log())
        st = os.lstat(os.path.dirname(sock))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (os.geteuid(), 0o700))
        self.assertEqual(os.listdir(foreign), [])
        r = self.sheriff("deputies")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"DEPUTY", r.stdout)

    def test_a_planted_default_directory_is_refused(self):
        d = self.path(f"daemonproxy-sheriff-{os.geteuid()}")
        subprocess.run([*AS_NOBODY, "mkdir", "-m", "777", d], check=True)
        log = self.path("evil.log")
        a = self.attacker(LISTEN, os.path.join(d, "sheriff.sock"), log, "4")
        self.ready(a)
        r = self.sheriff("--lcm-url", "tcpq://127.0.0.1:9", "serve", timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"owned by uid {NOBODY}".encode(), r.stderr)
        r = self.sheriff("--lcm-url", "tcpq://127.0.0.1:9", "stop", "--all")
        self.assertEqual(r.returncode, 2, r.stderr)
        a.wait(20)
        with open(log, "rb") as f:
            self.assertEqual(f.read(), b"0\n", "another user's socket was reached")


class Flood(TrustCase):
    def test_spoofed_reports_take_bounded_memory(self):
        """#8: spoofed PM_OUTPUT with new command ids (and PM_INFO with new
        deputies and commands) grew the sheriff without bound."""
        control = self.path("ctl.sock")
        p = self.serve("--tcpq-listen", "0", "--control", control, "serve")
        url = self.hub_url()
        self.assertTrue(wait_until(lambda: os.path.exists(control), 10))
        time.sleep(2)  # past listening first
        before = vm_rss_kb(p.pid)
        r = subprocess.run([PYTHON, os.path.join(HERE, "flood_sheriff.py"), url], capture_output=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        sent = r.stdout.decode().strip()
        # Let it drain the hub, then read its size.
        time.sleep(2)
        last = [vm_rss_kb(p.pid)]

        def settled():
            time.sleep(0.5)
            now = vm_rss_kb(p.pid)
            same = abs(now - last[0]) < 256
            last[0] = now
            return same
        wait_until(settled, 30)
        after = last[0]
        grew_mb = (after - before) / 1024
        print(f"\nsheriff VmRSS under the flood ({sent}): {before / 1024:.1f} -> {after / 1024:.1f} MB",
              file=sys.stderr)
        dep = self.sheriff("--control", control, "deputies", timeout=30)
        self.assertEqual(dep.returncode, 0, dep.stderr)
        self.assertLessEqual(len(dep.stdout.splitlines()) - 1, 1024)
        # The documented budgets (16 MiB of commands, 16 MiB of output) and
        # the allocator's slack.
        self.assertLess(grew_mb, 48, f"grew by {grew_mb:.1f} MB")


class Limits(TrustCase):
    def test_limits_are_checked_where_input_enters(self):
        """#9: a 70,000-byte command id passed `check`, and then no orders
        could be sent to its deputy while verbs said they succeeded."""
        long_id = self.config('cmd "ok" { exec = "sleep 9"; deputy = "d"; }\n'
                              f'cmd "{"i" * 70000}" {{ exec = "x"; deputy = "d"; }}\n', "long-id.cfg")
        for verb in ("check", "serve"):
            r = self.sheriff("--lcm-url", "tcpq://127.0.0.1:9", "--control", self.path("c.sock"), verb, long_id,
                             timeout=10)
            self.assertEqual(r.returncode, 2, (verb, r.stderr[:300]))
            self.assertRegex(r.stderr.decode(), r"long-id\.cfg:2:5: the command id is 70000 bytes, longer than a "
                                                r"message carries \(65536\)")
        long_exec = self.config(f'cmd "a" {{\n    exec = "{"x" * 70000}";\n    deputy = "d";\n}}\n', "long-exec.cfg")
        r = self.sheriff("check", long_exec)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr.decode(), r"long-exec\.cfg:2:12: exec is 70000 bytes")
        big = "".join(f'cmd "c{i}" {{ exec = "{"x" * 60000}"; deputy = "d"; }}\n' for i in range(18))
        r = self.sheriff("check", self.config(big, "big.cfg"))
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr.decode(), r"big\.cfg:18:5: deputy \"d\"'s commands up to \"c17\" take more than")


if __name__ == "__main__":
    unittest.main()
