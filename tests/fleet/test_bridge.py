"""daemonproxy-bridge against the real LCM library (docs/fleet.md §4,
§6, §7): a sheriff made of the Python binding steers real daemonproxy
processes through the bridge, over tcpq and over udpm in a fresh network
namespace."""

import hashlib
import hmac
import os
import signal
import struct
import subprocess
import time
import unittest

import scenarios
from support import HERE, PYTHON, Host, HubProc, Procs, Sheriff, cmd, have_netns, recv_until, wait_until

UDPM = "udpm://239.255.76.67:7667?ttl=0"
NETNS_SETUP = "ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo; "


def pma1(key, channel, message, counter):
    """The 48-byte PMA1 trailer of §6.3, written here from the spec."""
    head = struct.pack(">I4sQ", 0x504D4131, hashlib.sha256(key).digest()[:4], counter)
    mac = hmac.new(key, b"PMA1" + bytes([len(channel)]) + channel.encode() + message + head, hashlib.sha256)
    return head + mac.digest()


def ask(host, data, end):
    """Send `data` on a new control connection to host's daemonproxy and
    return what it answers up to and including `end`."""
    c = host.control()
    c.sendall(data)
    return recv_until(c, end)


class FleetCase(unittest.TestCase):
    def setUp(self):
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)

    def hub(self):
        return HubProc(self.procs)

    def up(self, s, host, cid, timeout=5, resend=None):
        ok = s.wait(lambda: (st := s.status(host.id, cid)) is not None and st.pid > 0, timeout, resend)
        self.assertTrue(ok, f"{cid} not running on {host.id}: {s.status(host.id, cid)}\n{host.bridge_log()}")
        return s.status(host.id, cid)


class Lifecycle(FleetCase):
    def test_over_tcpq(self):
        scenarios.lifecycle(self.procs, self.hub().url)

    def test_over_udpm_in_a_network_namespace(self):
        why = have_netns()
        if why:
            self.skipTest(why)
        r = subprocess.run(["unshare", "-n", "sh", "-c", NETNS_SETUP + 'exec "$0" scenarios.py lifecycle "$1"',
                            PYTHON, UDPM], cwd=HERE, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertIn(b"lifecycle over udpm", r.stdout)


class Behaviour(FleetCase):
    def test_bridge_killed_resyncs_without_touching_a_process(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-k", bridge_as_service=True)
        s = Sheriff(url)
        cmds = [cmd(f"c{i:02d}", "sleep 120", 1) for i in range(20)]
        send = lambda: s.orders("dep-k", cmds)  # noqa: E731
        send()
        ok = s.wait(lambda: s.infos.get("dep-k") and
                    sum(c.pid > 0 for c in s.infos["dep-k"].cmds if c.cmd.group != "local") == 20, 10, send)
        self.assertTrue(ok, h.bridge_log())
        before = {c.cmd.command_id: (c.pid, c.actual_runid) for c in s.infos["dep-k"].cmds if c.cmd.group != "local"}
        self.assertEqual(len(before), 20)
        dump = h.statedump()
        bridge_pid = int(dump["bridge"][1])
        time.sleep(1.1)  # the bridge ran longer than its MIN_INTERVAL: restarted at once
        os.kill(bridge_pid, signal.SIGKILL)
        killed = time.monotonic()
        # Only the new bridge can publish 0.3 s after the kill (a message of
        # the old one still in flight arrives within milliseconds).
        owned = lambda x: {c.cmd.command_id: (c.pid, c.actual_runid) for c in x.cmds if c.cmd.group != "local"}  # noqa: E731
        fresh = lambda: [t for t, x in s.info_log if t > killed + 0.3 and x.deputy_id == "dep-k" and owned(x) == before]  # noqa: E731
        self.assertTrue(s.wait(fresh, 2.5), "view not back within 2 s\n" + h.bridge_log())
        self.assertLess(min(fresh()) - killed, 2.0)
        after = h.statedump()
        self.assertNotEqual(after["bridge"][1], str(bridge_pid), "daemonproxy restarted the bridge")
        for cid, (pid, _) in before.items():
            self.assertEqual(after[f"pm.{cid}"], ("up", str(pid)), f"{cid} restarted or lost")
        # and it still obeys: stop one
        cmds[0] = cmd("c00", "sleep 120", 1, force_quit=True)
        self.assertTrue(s.wait(lambda: s.status("dep-k", "c00").pid == 0, 5, send))
        self.assertEqual(s.status("dep-k", "c01").pid, before["c01"][0])

    def test_adoption_and_desired_zero(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-z")
        s = Sheriff(url)
        first = self.up(s, h, "z", resend=lambda: s.orders("dep-z", [cmd("z", "sleep 60", 1)]))
        # a new sheriff that has no opinion yet (desired 0) changes nothing
        s2 = Sheriff(url, "other-sheriff:2:2")
        for _ in range(3):
            s2.orders("dep-z", [cmd("z", "sleep 60", 0)])
            s2.pump(0.3)
        st = s.status("dep-z", "z")
        self.assertEqual((st.pid, st.actual_runid), (first.pid, 1))
        # a different desired runid while running is a restart (§4.4)
        s2.orders("dep-z", [cmd("z", "sleep 60", 5)])
        self.assertTrue(s.wait(lambda: s.status("dep-z", "z").actual_runid == 5 and s.status("dep-z", "z").pid > 0, 5))
        self.assertNotEqual(s.status("dep-z", "z").pid, first.pid)

    def test_respawn_with_backoff_and_batched_output(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-r")
        s = Sheriff(url)
        self.assertTrue(s.wait_deputy("dep-r"))
        crash = [cmd("crash", "sh -c 'echo crashed; exit 1'", 1, respawn=True),
                 cmd("loud", "sh -c 'i=0; while [ $i -lt 3000 ]; do echo \"loud line $i\"; i=$((i+1)); done; exec sleep 60'", 1)]
        s.orders("dep-r", crash)
        s.pump(2.5)
        s.orders("dep-r", [cmd("crash", "true", 1, force_quit=True, respawn=True), crash[1]])
        s.pump(0.5)
        runs = s.text("crash").count("crashed\n")
        # waits of 10, 20, 40, 80, 160, 320, 640 ms: about 8 runs in 2.5 s,
        # never a tight loop
        self.assertTrue(5 <= runs <= 10, f"{runs} runs in 2.5 s\n{h.bridge_log()}")
        self.assertEqual(s.status("dep-r", "crash").actual_runid, 1, "respawns keep the runid")
        want = "".join(f"loud line {i}\n" for i in range(3000))
        self.assertTrue(s.wait(lambda: s.text("loud") == want, 5), "lost output: %d of %d bytes" % (len(s.text("loud")), len(want)))
        for _, o in s.outputs:
            self.assertLessEqual(sum(len(t) for t in o.text), 4096 + 16 * 1023)
            self.assertEqual(len(o.command_ids), len(set(o.command_ids)), "one entry per command")

    def test_stop_escalates_to_sigkill_after_the_sheriff_vanishes(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-s")
        s = Sheriff(url)
        stubborn = "sh -c 'trap \"\" TERM; echo ready; while :; do sleep 0.1; done'"
        self.up(s, h, "st", resend=lambda: s.orders("dep-s", [cmd("st", stubborn, 1, stop_time=1.0)]))
        self.assertTrue(s.wait(lambda: "ready" in s.text("st"), 3))
        s.orders("dep-s", [cmd("st", stubborn, 1, force_quit=True, stop_time=1.0)])
        t0 = time.monotonic()
        # no further orders: the local timer must do it
        self.assertTrue(s.wait(lambda: s.status("dep-s", "st").pid == 0, 4))
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9)
        self.assertEqual(s.status("dep-s", "st").exit_code, 9, "killed by SIGKILL")
        # the loop's sleep children went too (descendants are signalled)
        time.sleep(0.3)
        leftover = subprocess.run(["pgrep", "-f", "trap \"\" TERM"], capture_output=True).stdout.split()
        self.assertEqual(leftover, [])

    def test_read_only_refuses_every_order(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-ro", bridge_args=["--read-only"])
        s = Sheriff(url)
        send = lambda: s.orders("dep-ro", [cmd("x", "sleep 60", 1)])  # noqa: E731
        self.assertTrue(s.wait(lambda: "deputy dep-ro is read-only; orders ignored" in s.text(""), 5, send))
        s.pump(1.5)
        send()
        s.pump(0.5)
        self.assertEqual(s.infos["dep-ro"].cmds, [])
        self.assertNotIn("pm.x", h.statedump())

    def test_stale_and_out_of_order_orders(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-o")
        s = Sheriff(url)
        self.assertTrue(s.wait_deputy("dep-o"))
        now = int(time.time() * 1e6)
        s.orders("dep-o", [cmd("old", "sleep 60", 1)], utime=now - 61_000_000)
        self.assertTrue(s.wait(lambda: "ignoring stale orders" in s.text("old"), 3), s.text(""))
        self.assertIn("You may want to check the system clocks!", s.text("old"))
        s.orders("dep-o", [cmd("new", "sleep 60", 1)], utime=now)
        self.up(s, h, "new")
        # an older message from the same sheriff is dropped: no stop
        s.orders("dep-o", [cmd("new", "sleep 60", 1, force_quit=True)], utime=now - 1000)
        s.pump(1)
        self.assertGreater(s.status("dep-o", "new").pid, 0)
        self.assertIsNone(s.status("dep-o", "old"))

    def test_discovery_conflict_exits_2(self):
        url = self.hub().url
        h = Host(self.procs, url, "twin")
        s = Sheriff(url)
        self.assertTrue(s.wait(lambda: "twin" in s.infos, 5))
        second = Host(self.procs, url, "other-host")  # its own daemonproxy
        second.bridge.kill()
        second.bridge.wait()
        from support import binary
        p = self.procs.start([binary("daemonproxy-bridge"), "--socket", second.sock, "--lcm-url", url, "--id", "twin"],
                             stderr=subprocess.PIPE)
        self.assertEqual(p.wait(5), 2)
        self.assertIn(b"already taken", p.stderr.read())
        self.assertIsNone(h.bridge.poll(), "the first one runs on")


    def test_environment_figures_and_stop_on_exit(self):
        url = self.hub().url
        env = dict(os.environ, BRIDGE_TEST_WORD="expanded")
        h = Host(self.procs, url, "dep-e", bridge_args=["--stop-on-exit"], env=env)
        s = Sheriff(url)
        self.assertTrue(s.wait_deputy("dep-e"), h.bridge_log() + h.dp_log())
        cmds = [
            # NAME=VALUE for the child; $VAR from the bridge's environment
            cmd("env", "GREETING=hi sh -c 'echo $GREETING $BRIDGE_TEST_WORD; exec sleep 60'", 1),
            cmd("busy", "sh -c 'while :; do :; done'", 1),
        ]
        send = lambda: s.orders("dep-e", cmds)  # noqa: E731
        self.up(s, h, "env", resend=send)
        self.assertTrue(s.wait(lambda: s.text("env") == "hi expanded\n", 3), repr(s.text("env")))
        busy = self.up(s, h, "busy", resend=send)
        ncpu = os.cpu_count() or 1
        # cpu_usage is a share of the whole machine: one busy core of N
        self.assertTrue(s.wait(lambda: 0.5 / ncpu < s.status("dep-e", "busy").cpu_usage <= 1.05 / ncpu, 4, send),
                        s.status("dep-e", "busy").cpu_usage)
        st = s.status("dep-e", "busy")
        with open(f"/proc/{busy.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        self.assertEqual(st.mem_vsize_bytes, int(fields[20]))
        # the resident set is statm's (VmRSS), not stat's field 24, which lags it
        with open(f"/proc/{busy.pid}/statm") as f:
            resident = int(f.read().split()[1])
        self.assertAlmostEqual(st.mem_rss_bytes, resident * os.sysconf("SC_PAGESIZE"), delta=64 * 1024)
        # --stop-on-exit: SIGTERM stops the commands, then the bridge exits 0
        h.bridge.send_signal(signal.SIGTERM)
        self.assertEqual(h.bridge.wait(10), 0)
        dump = h.statedump()
        self.assertEqual(dump["pm.env"][0], "down")
        self.assertEqual(dump["pm.busy"][0], "down")


    def test_local_services_and_discovery_answer(self):
        url = self.hub().url
        h = Host(self.procs, url, "dep-l", bridge_args=["--local", "control"])
        ask(h, b"service.args\tweb\tsleep\t60\nservice.start\tweb\necho\tok\n", b"ok\n")
        s = Sheriff(url)
        self.assertTrue(s.wait(lambda: (st := s.status("dep-l", "web")) is not None and st.pid > 0, 5))
        st = s.status("dep-l", "web")
        self.assertEqual((st.cmd.group, st.cmd.exec_str, st.actual_runid, st.cmd.stop_signal), ("local", "sleep 60", 0, 15))
        # a discovery is answered by an info at once, not at the next second
        d = pmtypes_discovery()
        n = len([1 for _, i in s.info_log if i.deputy_id == "dep-l"])
        s.pump(0.05)
        t = time.monotonic()
        s.lc.publish("PM_DISCOVER", d)
        self.assertTrue(s.wait(lambda: len([1 for _, i in s.info_log if i.deputy_id == "dep-l"]) > n, 0.5))
        self.assertLess(time.monotonic() - t, 0.3)
        # --local control: a local service obeys stop and start, and is never removed
        web = lambda runid, quit: [cmd("web", "sleep 60", runid, force_quit=quit, stop_signal=15)]  # noqa: E731
        self.assertTrue(s.wait(lambda: s.status("dep-l", "web").pid == 0, 5, lambda: s.orders("dep-l", web(0, True))))
        self.assertEqual(h.statedump()["web"][0], "down")
        self.assertTrue(s.wait(lambda: s.status("dep-l", "web").pid > 0, 5, lambda: s.orders("dep-l", web(1, False))))
        # Left out of the orders after being listed (a removal): no longer
        # reported to this sheriff, and the service is not touched.
        running = s.status("dep-l", "web").pid
        s.orders("dep-l", [])
        self.assertTrue(s.wait(lambda: s.status("dep-l", "web") is None, 3), s.infos["dep-l"].cmds)
        self.assertEqual(h.statedump()["web"], ("up", str(running)))


def pmtypes_discovery():
    from support import P
    d = P.discovery_t()
    d.utime, d.transmitter_id, d.nonce = int(time.time() * 1e6), "a-sheriff:1:1", 0
    return d.encode()


class Authentication(FleetCase):
    KEY = bytes(range(32))

    def key_file(self, host_dir):
        path = os.path.join(host_dir, "key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, self.KEY.hex().encode() + b"\n")
        os.close(fd)
        return path

    def test_require_mode(self):
        url = self.hub().url
        d = self.procs.tempdir("fleet-key-")
        h = Host(self.procs, url, "dep-auth", bridge_args=["--auth", "require", "--auth-key-file", self.key_file(d)])
        s = Sheriff(url)
        self.assertTrue(s.wait(lambda: "dep-auth" in s.infos, 5))
        counter = int(time.time() * 1e6)

        def signed(cmds, tamper=False, counter_at=None):
            nonlocal counter
            counter += 1
            msg = s.encode_orders("dep-auth", cmds)
            t = pma1(self.KEY, "PM_ORDERS", msg, counter_at if counter_at is not None else counter)
            if tamper:
                msg = msg.replace(b"sleep 61", b"sleep 62")
            return msg + t

        # unsigned: refused
        s.orders("dep-auth", [cmd("u", "sleep 60", 1)])
        self.assertTrue(s.wait(lambda: "unsigned orders from test-sheriff:1:1 ignored" in s.text(""), 3), s.text(""))
        # tampered: refused
        s.lc.publish("PM_ORDERS", signed([cmd("t", "sleep 61", 1)], tamper=True))
        self.assertTrue(s.wait(lambda: "bad signature" in s.text(""), 3), s.text(""))
        # signed: obeyed
        good = signed([cmd("g", "sleep 60", 1)])
        s.lc.publish("PM_ORDERS", good)
        self.up(s, h, "g")
        # the same datagram again (a replay): refused
        s.lc.publish("PM_ORDERS", good)
        self.assertTrue(s.wait(lambda: "replayed" in s.text(""), 3), s.text(""))
        # a new message with an old counter: refused as well
        s.lc.publish("PM_ORDERS", signed([cmd("g", "sleep 60", 1, force_quit=True)], counter_at=5))
        s.pump(0.5)
        self.assertGreater(s.status("dep-auth", "g").pid, 0)
        self.assertIsNone(s.status("dep-auth", "u"))
        self.assertIsNone(s.status("dep-auth", "t"))
        # its own messages are signed: the info carries a trailer that verifies
        raw = []
        s.lc.subscribe("PM_INFO", lambda ch, data: raw.append(data))
        self.assertTrue(s.wait(lambda: raw, 3))
        from support import P
        n = len(P.deputy_info_t.decode(raw[-1]).encode())
        msg, trailer = raw[-1][:n], raw[-1][n:]
        self.assertEqual(len(trailer), 48)
        self.assertEqual(trailer[:4], b"PMA1")
        mac = hmac.new(self.KEY, b"PMA1" + bytes([7]) + b"PM_INFO" + msg + trailer[:16], hashlib.sha256).digest()
        self.assertEqual(trailer[16:], mac)


if __name__ == "__main__":
    unittest.main()
