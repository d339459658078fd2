"""daemonproxy-sheriff serve --http (issue 18; man/daemonproxy-sheriff.1,
"HTTP"): the JSON API against a real lone ranger (--local) and its real
commands: status, actions that start and stop processes, scripts, output
as data, /metrics read by prometheus_client's parser and checked against
`status`, the token off 127.0.0.1, cross-origin and read-only refusals,
a slow event stream dropped, and a flood of connections bounded."""

import os
import socket
import stat
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

from support import Procs, WebSheriff, alive, binary, free_port, recv_until, wait_until

CONFIG = """\
group "web" {
    cmd "front" { exec = "sleep 301"; deputy = "localhost"; }
    cmd "back" { exec = "sleep 302"; deputy = "localhost"; }
}
cmd "fails" { exec = "sh -c 'exit 3'"; deputy = "localhost"; }
cmd "markup" { exec = "sh -c 'echo \\"<script>alert(1)</script> & <b>x</b>\\"; exec sleep 300'"; deputy = "localhost"; }
cmd "flood" { exec = "sh -c 'while :; do head -c 60000 /dev/zero | tr \\"\\\\\\\\000\\" x; echo; sleep 0.005; done'"; deputy = "localhost"; }
script "up" { start group "web" wait "running"; wait ms 100; start cmd "fails"; }
"""

TOKEN = "s3cret-token-0123456789"


class Http(unittest.TestCase):
    def setUp(self):
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)
        self.tmp = self.procs.tempdir("sheriff-http-")

    def sheriff(self, args=(), **kw):
        return WebSheriff(self.procs, self.tmp, CONFIG, args=("--local", *args), **kw)

    def wait_cmd(self, s, cid, pred, timeout=10):
        c = wait_until(lambda: (lambda c: c if c and pred(c) else None)(s.command(cid)), timeout, 0.05)
        self.assertTrue(c, f"{cid}: {s.command(cid)}")
        return c

    def test_status_actions_and_scripts_move_real_processes(self):
        s = self.sheriff()
        self.assertTrue(wait_until(lambda: s.json("/api/status")["counts"]["Stopped (OK)"] == 5, 5),
                        s.json("/api/status")["counts"])
        st = s.json("/api/status")
        self.assertEqual(sorted(c["id"] for c in st["commands"]), ["back", "fails", "flood", "front", "markup"])
        self.assertEqual(st["sheriff"]["mode"], "active")
        self.assertEqual(st["sheriff"]["scripts"], ["up"])
        self.assertEqual(st["counts"]["Stopped (OK)"], 5, st["counts"])
        # a group, by its name: running within 2 s, pids alive in /proc
        t0 = time.monotonic()
        status, r = s.post("/api/action", {"verb": "start", "group": "web"})
        self.assertEqual((status, r), (200, {"changed": 2, "selected": 2, "skipped": 0}))
        front = self.wait_cmd(s, "front", lambda c: c["status"] == "Running", 2)
        back = self.wait_cmd(s, "back", lambda c: c["status"] == "Running", 2)
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertTrue(alive(front["pid"]) and alive(back["pid"]))
        # one command from a list: stopped, its process gone
        status, r = s.post("/api/action", {"verb": "stop", "commands": [["localhost", "front"]]})
        self.assertEqual((status, r["changed"]), (200, 1))
        self.wait_cmd(s, "front", lambda c: c["status"] == "Stopped (OK)")
        self.assertTrue(wait_until(lambda: not alive(front["pid"]), 5))
        # restart: a new pid
        status, r = s.post("/api/action", {"verb": "restart", "name": "back"})
        self.assertEqual(status, 200)
        new = self.wait_cmd(s, "back", lambda c: c["status"] == "Running" and c["pid"] != back["pid"])
        self.assertTrue(alive(new["pid"]))
        self.assertTrue(wait_until(lambda: not alive(back["pid"]), 5))
        self.assertEqual(new["restarts"], 1)
        # errors come back as errors
        self.assertEqual(s.post("/api/action", {"verb": "start", "name": "nosuch"}),
                         (409, {"error": "no such command"}))
        self.assertEqual(s.post("/api/action", {"verb": "explode", "all": True})[0], 400)
        self.assertEqual(s.post("/api/run", {"script": "nosuch"})[0], 409)
        # a script, its steps visible in the snapshot
        status, r = s.post("/api/run", {"script": "up"})
        self.assertEqual(status, 200, r)
        self.assertTrue(wait_until(lambda: (s.json("/api/status")["script"] or {}).get("outcome") == "done", 10),
                        s.json("/api/status")["script"])
        steps = s.json("/api/status")["script"]["steps"]
        self.assertTrue(any("fails" in x for x in steps), steps)
        self.wait_cmd(s, "fails", lambda c: c["status"] == "Stopped (Error)" and c["exit_text"] == "exit 3")
        # all: everything stops
        self.assertEqual(s.post("/api/action", {"verb": "stop", "all": True})[0], 200)
        self.assertTrue(wait_until(lambda: all(c["pid"] <= 0 for c in s.json("/api/status")["commands"]), 10))
        # the deputies route
        (d,) = s.json("/api/deputies")
        self.assertEqual((d["deputy"], d["live"], d["commands"]), ("localhost", "ok", 5))
        self.assertGreater(d["mem_total"], 0)

    def test_metrics_parse_and_agree_with_status(self):
        s = self.sheriff()
        s.post("/api/action", {"verb": "start", "group": "web"})
        s.post("/api/action", {"verb": "start", "name": "fails"})
        self.wait_cmd(s, "front", lambda c: c["status"] == "Running" and c["rss"] > 0)
        self.wait_cmd(s, "fails", lambda c: c["status"] == "Stopped (Error)")
        status, headers, body = s.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"), headers)
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name in ("daemonproxy_command_status", "daemonproxy_command_pid", "daemonproxy_command_cpu_usage_ratio",
                     "daemonproxy_command_resident_memory_bytes", "daemonproxy_command_restarts",
                     "daemonproxy_command_last_exit_code", "daemonproxy_deputy_up",
                     "daemonproxy_deputy_last_heard_seconds", "daemonproxy_deputy_cpu_load_ratio",
                     "daemonproxy_deputy_memory_total_bytes", "daemonproxy_http_streams_dropped"):
            self.assertIn(name, fams, sorted(fams))
        # one status per command is 1, and it is the one `status` shows
        cur = {}
        for smp in fams["daemonproxy_command_status"].samples:
            if smp.value == 1:
                self.assertNotIn(smp.labels["command"], cur)
                cur[smp.labels["command"]] = smp.labels["status"]
        pids = {x.labels["command"]: int(x.value) for x in fams["daemonproxy_command_pid"].samples}
        table = s.cli("status").stdout.decode().splitlines()
        self.assertTrue(table[0].startswith("DEPUTY"), table)
        seen = {}
        for line in table[1:]:
            f = [x for x in line.split("  ") if x.strip()]
            f = [x.strip() for x in f]
            seen[f[1]] = f
        self.assertEqual(set(seen), set(cur))
        for cid, f in seen.items():
            self.assertEqual(f[3], cur[cid], (cid, f))
            self.assertEqual(f[4], str(pids[cid]) if pids[cid] > 0 else "-", (cid, f))
        self.assertEqual(cur["front"], "Running")
        codes = {x.labels["command"]: x.value for x in fams["daemonproxy_command_last_exit_code"].samples}
        self.assertEqual(codes.get("fails"), 3)
        self.assertIn("exit 3", seen["fails"][-1])
        labels = fams["daemonproxy_command_pid"].samples[0].labels
        self.assertEqual(set(labels), {"deputy", "group", "command"})
        groups = {x.labels["command"]: x.labels["group"] for x in fams["daemonproxy_command_pid"].samples}
        self.assertEqual((groups["front"], groups["fails"]), ("web", ""))
        up = {x.labels["deputy"]: x.value for x in fams["daemonproxy_deputy_up"].samples}
        self.assertEqual(up, {"localhost": 1})
        rss = {x.labels["command"]: x.value for x in fams["daemonproxy_command_resident_memory_bytes"].samples}
        self.assertGreater(rss["front"], 0)

    def test_output_is_data_and_pages_are_locked_down(self):
        s = self.sheriff()
        s.post("/api/action", {"verb": "start", "name": "markup"})
        self.wait_cmd(s, "markup", lambda c: c["status"] == "Running")
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sock.sendall(f"GET /api/output?deputy=localhost&id=markup HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n"
                     .encode())
        buf = recv_until(sock, b"</script>")
        head, _, body = buf.partition(b"\r\n\r\n")
        self.assertIn(b"content-type: text/event-stream", head.lower())
        self.assertIn(b'data: "<script>alert(1)</script> & <b>x</b>\\n"', body)
        for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css"),
                            ("/api/status", "application/json")):
            status, h, body = s.request("GET", path)
            self.assertEqual(status, 200, path)
            self.assertTrue(h["content-type"].startswith(ctype), (path, h))
            csp = h["content-security-policy"]
            for part in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
                self.assertIn(part, csp)
            self.assertNotIn("unsafe-inline", csp)
            self.assertEqual(h["x-content-type-options"], "nosniff")
        page = s.request("GET", "/")[2].decode()
        self.assertNotIn("<script>", page.replace('<script src="/app.js" defer></script>', ""), "no inline script")
        self.assertNotIn("innerHTML", s.request("GET", "/app.js")[2].decode())
        self.assertEqual(s.request("GET", "/api/output?deputy=localhost&id=nosuch")[0], 404)
        self.assertEqual(s.request("GET", "/nosuch")[0], 404)

    def test_cross_origin_and_rebinding_refused(self):
        s = self.sheriff()
        refused = [
            {"Origin": "http://evil.example"},
            {"Origin": None, "Referer": "http://evil.example/"},
            {"X-Daemonproxy-Action": None},
        ]
        import json
        for h in refused:
            headers = {"Content-Type": "application/json", "X-Daemonproxy-Action": "1", "Origin": s.base}
            headers.update(h)
            headers = {k: v for k, v in headers.items() if v is not None}
            status, _, body = s.request("POST", "/api/action", json.dumps({"verb": "start", "all": True}), headers)
            self.assertEqual(status, 403, (h, body))
        # a page of another name pointed at 127.0.0.1 (DNS rebinding)
        status, _, _ = s.request("GET", "/api/status", headers={"Host": f"evil.example:{s.port}"})
        self.assertEqual(status, 403)
        status, _, _ = s.request("GET", "/api/status", headers={"Host": f"localhost:{s.port}"})
        self.assertEqual(status, 200)
        time.sleep(0.5)
        self.assertTrue(all(c["pid"] <= 0 for c in s.json("/api/status")["commands"]), "nothing started")

    def test_read_only_refuses_actions(self):
        s = self.sheriff(args=("--http-read-only",))
        self.assertTrue(s.json("/api/status")["sheriff"]["read_only"])
        for path, body in (("/api/action", {"verb": "start", "all": True}), ("/api/run", {"script": "up"})):
            status, r = s.post(path, body)
            self.assertEqual(status, 403, r)
        self.assertEqual(s.request("GET", "/metrics")[0], 200)
        # the control socket still acts (read-only is the page's)
        r = s.cli("start", "front", "--wait", "running", "--timeout", "10")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_observe_implies_read_only(self):
        # an observer with a hub of its own and no deputy: the page must refuse every action
        s = WebSheriff(self.procs, self.tmp, None, args=("--observe", "--tcpq-listen", str(free_port())),
                       deputies=())
        self.assertTrue(wait_until(lambda: s.json("/api/status")["sheriff"]["mode"] != "", 5))
        st = s.json("/api/status")
        self.assertEqual(st["sheriff"]["mode"], "observer")
        self.assertTrue(st["sheriff"]["read_only"], st["sheriff"])
        for path, body in (("/api/action", {"verb": "start", "all": True}), ("/api/run", {"script": "up"})):
            status, r = s.post(path, body)
            self.assertEqual(status, 403, r)

    def test_token_off_loopback(self):
        def run(*args):
            return __import__("subprocess").run(
                [binary("daemonproxy-sheriff"), "--control", os.path.join(self.tmp, "x.sock"), *args, "serve"],
                capture_output=True, timeout=10)
        r = run("--http", "127.0.0.2:1")
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"needs --http-token-file", r.stderr)
        path = os.path.join(self.tmp, "token")
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(path, 0o644)
        r = run("--http", "127.0.0.2:1", "--http-token-file", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"chmod 600", r.stderr)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        s = self.sheriff(args=("--http-token-file", path), host="127.0.0.2", token=TOKEN)
        routes = [("GET", p) for p in ("/", "/deputies", "/app.js", "/style.css", "/login", "/api/status",
                                       "/api/deputies", "/api/events", "/api/output?deputy=localhost&id=front",
                                       "/metrics", "/nosuch")] + [("POST", "/api/action"), ("POST", "/api/run")]
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                            {"Cookie": "daemonproxy_token=wrong"}):
                status, h, _ = s.request(method, path, body="{}" if method == "POST" else None, headers=headers,
                                         token=False)
                self.assertEqual(status, 401, (method, path, headers))
        self.assertEqual(s.request("GET", "/api/status")[0], 200)
        # the login form sets a cookie that then opens every route
        form = "token=" + TOKEN
        ctype = {"Content-Type": "application/x-www-form-urlencoded"}
        status, h, _ = s.request("POST", "/login", form, dict(ctype, Origin="http://evil.example"), token=False)
        self.assertEqual(status, 403)
        status, h, _ = s.request("POST", "/login", "token=wrong", dict(ctype, Origin=s.base), token=False)
        self.assertEqual(status, 401)
        status, h, _ = s.request("POST", "/login", form, dict(ctype, Origin=s.base), token=False)
        self.assertEqual(status, 303)
        cookie = h["set-cookie"]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        status, _, _ = s.request("GET", "/metrics", headers={"Cookie": cookie.split(";")[0]}, token=False)
        self.assertEqual(status, 200)
        status, r = s.post("/api/action", {"verb": "start", "name": "front"})
        self.assertEqual(status, 200, r)

    def test_served_across_quiet_spells(self):
        """A connection kept alive is answered after quiet spells shorter
        than the idle timeout (10 s), and a new one after them."""
        import http.client
        s = self.sheriff()
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        for pause in (0, 6, 6):
            time.sleep(pause)
            c.request("GET", "/api/deputies")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        c.close()
        self.assertEqual(s.request("GET", "/api/status")[0], 200, "a new connection after a quiet spell")

    def test_a_client_that_stops_reading_is_closed(self):
        """Pipelined requests whose answers are never read: once a write
        has waited 10 s for the client, the connection is closed, and its
        place given back (daemonproxy_http_connections)."""
        s = self.sheriff()

        def connections():
            return s.metric("daemonproxy_http_connections")
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", s.port))
        c.setblocking(False)
        req = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode() * 64
        sent, t0 = 0, time.monotonic()
        # send until the server stops reading (its answers fill the pipe)
        while time.monotonic() - t0 < 5:
            try:
                sent += c.send(req)
            except BlockingIOError:
                time.sleep(0.05)
        self.assertEqual(connections(), 2, "the stuck client and this request")
        self.assertTrue(wait_until(lambda: connections() == 1, 15, 0.5),
                        "a connection whose answers are not read for 10 s is closed")
        took = time.monotonic() - t0
        self.assertGreater(took, 5)
        c.close()
        print(f"\nstuck reader closed {took:.1f} s after it started ({sent} request bytes sent)")

    def test_slow_stream_dropped_and_flood_bounded(self):
        s = self.sheriff()
        s.post("/api/action", {"verb": "start", "name": "flood"})
        self.wait_cmd(s, "flood", lambda c: c["status"] == "Running")
        # A client that never reads: its stream is dropped, not buffered.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", s.port))
        slow.sendall(f"GET /api/output?deputy=localhost&id=flood HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n"
                     .encode())

        def dropped():
            return s.metric("daemonproxy_http_streams_dropped_total")
        t0 = time.monotonic()
        self.assertTrue(wait_until(lambda: dropped() >= 1, 20, 0.2), "the slow stream was never dropped")
        took = time.monotonic() - t0
        # the sheriff answered all along: its control socket too
        t = time.monotonic()
        self.assertEqual(s.cli("status").returncode, 0)
        self.assertLess(time.monotonic() - t, 2)
        s.post("/api/action", {"verb": "stop", "name": "flood"})
        slow.close()
        # A flood: many idle connections, more streams than allowed, then
        # more connections than allowed (src/sheriff/http/mod.rs:
        # MAX_CONNECTIONS 256, MAX_STREAMS 32).
        t_flood = time.monotonic()
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=15) for _ in range(200)]
        streams, codes = [], []
        for k in range(40):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
            try:
                line = c.recv(64).split(b"\r\n")[0]
            except socket.timeout:
                self.fail(f"stream {k}: no answer in 5 s; {codes}")
            codes.append(line.split()[1])
            streams.append(c)
        self.assertEqual(codes.count(b"200"), 32, codes)
        self.assertEqual(codes.count(b"503"), 8, codes)
        # 240 connections are open: of 30 more, 16 are served and 14 told
        # 503 and closed as they arrive.
        extra, answers = [], []
        for k in range(30):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(f"GET /api/deputies HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
            extra.append(c)
            answers.append(recv_until(c, b"\r\n\r\n", close=False))
        self.assertLess(time.monotonic() - t_flood, 8, "the flood took too long to test the cap before timeouts")
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
        self.assertEqual((len(served), len(refused)), (16, 14), answers)
        self.assertTrue(all(b"Connection: close" in a for a in refused), refused)
        for c in streams + extra:
            c.close()
        self.assertTrue(wait_until(lambda: s.metric("daemonproxy_http_streams") == 0, 10),
                        "closed streams end")
        # Idle connections are closed by the server once they have sent no
        # request head for 10 s; then new ones are served again.
        for c in idle:
            try:
                self.assertEqual(c.recv(10), b"")
            except ConnectionResetError:
                pass
            c.close()
        self.assertLess(time.monotonic() - t_flood, 14, "idle connections held longer than the 10 s timeout")
        self.assertEqual(s.request("GET", "/api/status")[0], 200)
        with open(f"/proc/{s.p.pid}/status") as f:
            threads = int([l for l in f if l.startswith("Threads:")][0].split()[1])
        # the loop and the HTTP thread: no thread per connection
        self.assertLessEqual(threads, 3)
        print(f"\nslow stream dropped after {took:.1f} s; sheriff threads after the flood: {threads}")


if __name__ == "__main__":
    unittest.main()
