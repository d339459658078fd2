#!/usr/bin/env python3
"""jobs.py - a job launcher for a web backend: an HTTP API over daemonproxy.

Each job is a daemonproxy service running one command, with its stdout and
stderr going to a file.  daemonproxy does the forking, reaping and fd
plumbing; this program only translates HTTP requests into protocol commands
and events into JSON.  Standard library only (http.server), Python 3.9+,
and the client module daemonproxy (python/ of the repository: installed
with "pip install ./python", or found there when run from a checkout).

    # talk to a running daemonproxy over its control socket
    python3 jobs.py --socket /run/daemonproxy.sock --token-file /etc/jobs.token
    # or start a private one ("daemonproxy -i"; stopping jobs.py ends it)
    python3 jobs.py --daemonproxy /usr/sbin/daemonproxy --listen 127.0.0.1:0

It prints "listening on HOST:PORT" once it accepts requests (with port 0
the kernel picks the port).  The API, all JSON:

    POST   /jobs        {"argv": ["cmd", "arg", ...], "name": "optional",
                         "output": "optional/path"}         -> 201 job
    GET    /jobs        -> 200 {"jobs": [job, ...]}
    GET    /jobs/NAME   -> 200 job
    GET    /jobs/NAME/output?offset=N&limit=M
                        -> 200 {"name", "offset", "next", "size", "eof",
                           "data"}: at most M bytes (default 65536, at
                           most 1 MiB) of the job's output file from byte
                           N, decoded as UTF-8 (bad bytes replaced); "next"
                           is the offset to ask for next, "eof" whether it
                           reached the end of what is written so far
    DELETE /jobs/NAME   SIGTERM if running, wait for it (SIGKILL after
                        --kill-timeout seconds), then forget it   -> 200 job

    job = {"name", "state" (start|up|down|deleted), "pid", "exit_reason"
           (exit|signal|null), "exit_code" (int, for exit), "signal" (e.g.
           "SIGTERM", for signal), "started", "exited" (seconds of the
           monotonic clock, like daemonproxy's events), "output", "argv"}

Errors: 400 bad JSON, bad name or argv, a program that cannot be found
or run ("command not found: X", checked before the job is made: a failed
exec would otherwise look like a program that exits 3), or daemonproxy
refused it (the text is in "error"), 401 no or wrong token, 404 no such job, 409 name
taken (by a job or any other service), 503 daemonproxy is gone.

What a job is in daemonproxy terms, for "POST /jobs" with name NAME:

    fd.open        NAME.out  write,create,trunc  PATH
    service.tags   NAME  job=1
    service.args   NAME  ARGV...
    service.fds    NAME  null  NAME.out  NAME.out
    service.start  NAME

so names are the protocol's (1-31 bytes of A-Za-z0-9._-), shortened to 27
so that NAME.out is one too; without a name, job-1, job-2, ... is used.
Without "output", PATH is OUTPUT_DIR/NAME.out.  Relative paths are made
absolute here, because daemonproxy resolves them in its own directory.
The "job=1" tag tells jobs from other services: jobs.py lists and touches
only those, and on start-up it adopts the jobs it finds (their output path
is the description of the NAME.out handle).

Security: whoever can make requests can run any command, and write any
file, as the user daemonproxy runs as (often root).  So every request must
carry the token of --token-file (default ./jobs.token) as
"Authorization: Bearer TOKEN", or it gets 401 and nothing happens; the
token is compared in constant time.  A missing token file is created with
32 random bytes (mode 0600, never through a symbolic link, never over an
existing file); an existing one must be a regular file of ours that no
group or other user may read or write, else jobs.py refuses to start.
Give the token to your web backend only.  It listens on 127.0.0.1 by
default: the token is sent in clear text, so do not expose the port
beyond the machine without TLS in front of it.

How it follows daemonproxy: one daemonproxy.Client, used under one lock
by the HTTP threads and by a pump thread that reads events as they come;
every event updates a table of services, and requests answer from it
after a sync() (so a GET sees everything that happened before it).  An
"overflow" (we read too slowly) makes it rebuild the table with statedump.
"""

import argparse
import hmac
import http.server
import json
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import sys
import urllib.parse
import threading
import time

try:
    # Installed: "pip install ./python", or the copy "make install" puts
    # beside this file.
    import daemonproxy
except ModuleNotFoundError as e:
    if e.name != "daemonproxy":
        raise
    # Run from a checkout without installing: the package's source is
    # python/daemonproxy/ at the top of the repository.
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
    import daemonproxy

JOB_TAG = "job=1"
OUT_SUFFIX = ".out"
MAX_NAME = 31 - len(OUT_SUFFIX)
MAX_BODY = 1 << 20
OUTPUT_CHUNK = 1 << 16  # GET /jobs/NAME/output: default and largest limit
MAX_OUTPUT_CHUNK = 1 << 20


class HTTPError(Exception):
    """An error reply: status code and message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Jobs:
    """The table of services and handles, kept current from events, and the
    job operations.  Every use of self.client holds self.cond."""

    def __init__(self, client, output_dir, kill_timeout=5.0):
        self.client = client
        self.output_dir = output_dir
        self.kill_timeout = kill_timeout
        self.cond = threading.Condition()
        self.services = {}  # name -> record (every service, not only jobs)
        self.handles = {}  # name -> description
        self.need_resync = False
        self.closed = False
        self.counter = 0
        client.on_event = self._apply
        with self.cond:
            self._resync()

    # -- following daemonproxy ----------------------------------------------
    def _record(self, name):
        return self.services.setdefault(
            name,
            {
                "state": "down",
                "pid": None,
                "exit_reason": None,
                "exit_value": None,
                "started": None,
                "exited": None,
                "tags": [],
                "argv": [],
            },
        )

    def _apply(self, ev):
        """on_event callback: fold one event into the table."""
        if ev.name == "service.state" and len(ev.fields) >= 8:
            name = ev.service
            if ev.state == "deleted":
                self.services.pop(name, None)
            else:
                rec = self._record(name)
                if ev.state == "up":
                    if rec["pid"] != ev.pid or rec["started"] is None:
                        rec["started"] = ev.ts  # the fork second
                    rec["exited"] = None
                elif ev.state == "down" and ev.pid is not None:
                    if rec["pid"] != ev.pid or rec["started"] is None:
                        # Missed the "up" (statedump): start = reap - uptime.
                        rec["started"] = ev.ts - (ev.uptime or 0)
                    rec["exited"] = ev.ts
                else:  # start pending, or a cancelled start
                    rec["started"] = rec["exited"] = None
                rec.update(
                    state=ev.state,
                    pid=ev.pid,
                    exit_reason=ev.exit_reason,
                    exit_value=ev.exit_value,
                )
        elif ev.name == "service.tags" and ev.fields:
            self._record(ev.service)["tags"] = ev.value.split("\t") if ev.value else []
        elif ev.name == "service.args" and ev.fields:
            self._record(ev.service)["argv"] = ev.args
        elif ev.name == "fd.state" and len(ev.fields) >= 2:
            if ev.fields[1] == "deleted":
                self.handles.pop(ev.handle, None)
            else:
                self.handles[ev.handle] = "\t".join(ev.fields[3:])
        elif ev.name == "overflow":
            self.need_resync = True  # not from inside a callback
        self.cond.notify_all()

    def _resync(self):
        """Rebuild the table from a statedump (its lines go through _apply)."""
        self.need_resync = False
        dump = self.client.statedump()
        for name in list(self.services):
            if name not in dump["services"]:
                del self.services[name]
        for name in list(self.handles):
            if name not in dump["handles"]:
                del self.handles[name]
        self.cond.notify_all()

    def refresh(self, sync=True):
        """Take in what daemonproxy has sent; with SYNC, everything up to now."""
        if self.closed:
            raise HTTPError(503, "daemonproxy is gone")
        try:
            if sync:
                self.client.sync()
            else:
                self.client.pump(0)
            if self.need_resync:
                self._resync()
        except daemonproxy.ConnectionClosed:
            self.closed = True
            self.cond.notify_all()
            raise HTTPError(503, "daemonproxy is gone")

    def pump_forever(self, on_close):
        """The pump thread: apply events as they arrive."""
        while True:
            try:
                select.select([self.client.fileno()], [], [], 0.2)
            except (OSError, ValueError):
                pass
            with self.cond:
                if self.closed:
                    break
                try:
                    self.refresh(sync=False)
                except HTTPError:
                    break
        on_close()

    # -- jobs -----------------------------------------------------------------
    def is_job(self, name):
        rec = self.services.get(name)
        return rec is not None and JOB_TAG in rec["tags"]

    def job_json(self, name):
        rec = self.services[name]
        reason = rec["exit_reason"]
        return {
            "name": name,
            "state": rec["state"],
            "pid": rec["pid"],
            "exit_reason": reason,
            "exit_code": rec["exit_value"] if reason == "exit" else None,
            "signal": rec["exit_value"] if reason == "signal" else None,
            "started": rec["started"],
            "exited": rec["exited"],
            "output": self.handles.get(name + OUT_SUFFIX),
            "argv": rec["argv"],
        }

    def get(self, name):
        with self.cond:
            self.refresh()
            if not self.is_job(name):
                raise HTTPError(404, "no such job: %s" % name)
            return self.job_json(name)

    def list(self):
        with self.cond:
            self.refresh()
            return [self.job_json(n) for n in sorted(self.services) if self.is_job(n)]

    def create(self, spec):
        if not isinstance(spec, dict):
            raise HTTPError(400, "expected a JSON object")
        argv = spec.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) for a in argv)
            or not argv[0]
        ):
            raise HTTPError(400, '"argv" must be a non-empty list of strings')
        name = spec.get("name")
        if name is not None:
            check_name(name)
        output = spec.get("output")
        if output is not None and (not isinstance(output, str) or not output):
            raise HTTPError(400, '"output" must be a non-empty string')
        check_program(argv[0])

        with self.cond:
            self.refresh()
            if name is None:
                name = self._new_name()
            elif name in self.services:
                raise HTTPError(409, "name taken: %s" % name)
            handle = name + OUT_SUFFIX
            if handle in self.handles:  # not ours to replace
                raise HTTPError(409, "handle %s exists" % handle)
            path = os.path.abspath(output or os.path.join(self.output_dir, handle))
            cmds = [
                ("fd.open", handle, "write,create,trunc", path),
                ("service.tags", name, JOB_TAG),
                ("service.args", name) + tuple(argv),
                ("service.fds", name, "null", handle, handle),
            ]
            try:
                # ValueError (TAB, LF, too long) comes before anything is sent.
                self.client.batch(cmds, check=True)
                self.client.command("service.start", name, check=True)
            except ValueError as e:
                raise HTTPError(400, str(e))
            except daemonproxy.ConnectionClosed:
                self.closed = True
                raise HTTPError(503, "daemonproxy is gone")
            except daemonproxy.DaemonproxyError as e:
                self._forget(name)
                raise HTTPError(400, "daemonproxy: %s" % e.text)
            return self.job_json(name)

    def _new_name(self):
        while True:
            self.counter += 1
            name = "job-%d" % self.counter
            if name not in self.services and name + OUT_SUFFIX not in self.handles:
                return name

    def _forget(self, name):
        """Delete service NAME and its output handle, ignoring errors."""
        self.client.send("service.delete", name)
        self.client.send("fd.delete", name + OUT_SUFFIX)
        self.client.sync()

    def _wait_not_up(self, name, timeout):
        def done():
            rec = self.services.get(name)
            return self.closed or rec is None or rec["state"] != "up"

        return self.cond.wait_for(done, timeout)

    def delete(self, name):
        with self.cond:
            self.refresh()
            if not self.is_job(name):
                raise HTTPError(404, "no such job: %s" % name)
            for sig, wait in (("SIGTERM", self.kill_timeout), ("SIGKILL", 2.0)):
                if self.services[name]["state"] != "up":
                    break
                # "service is not running": it exited just now; fine.
                self.client.command("service.signal", name, sig)
                self._wait_not_up(name, wait)  # the pump thread applies events
                self.refresh()
            if self.closed:
                raise HTTPError(503, "daemonproxy is gone")
            if name not in self.services:  # someone else deleted it
                raise HTTPError(404, "no such job: %s" % name)
            if self.services[name]["state"] == "up":
                raise HTTPError(500, "job %s did not stop" % name)
            job = self.job_json(name)
            try:
                self.client.command("service.delete", name, check=True)
                self.client.command("fd.delete", name + OUT_SUFFIX)
            except daemonproxy.DaemonproxyError as e:
                raise HTTPError(500, "daemonproxy: %s" % e.text)
            job["state"] = "deleted"
            return job

    def stop_all(self, timeout):
        """SIGTERM every running job and wait up to TIMEOUT for them (used
        when jobs.py ran its own daemonproxy and is going away)."""
        with self.cond:
            try:
                self.refresh()
                running = [n for n in self.services if self.is_job(n) and self.services[n]["state"] == "up"]
                for name in running:
                    self.client.send("service.signal", name, "SIGTERM")
                self.client.sync()
                deadline = time.monotonic() + timeout
                for name in running:
                    self._wait_not_up(name, max(0.0, deadline - time.monotonic()))
            except (HTTPError, daemonproxy.DaemonproxyError):
                pass


def check_program(prog):
    """400 unless PROG is a program exec would find and may run: a path
    with a "/" must be an executable file (a relative one is resolved
    against daemonproxy's directory, unknown here, so only absolute ones
    are checked), a bare name must be found on PATH."""
    if "/" in prog:
        ok = not os.path.isabs(prog) or (os.path.isfile(prog) and os.access(prog, os.X_OK))
    else:
        ok = shutil.which(prog) is not None
    if not ok:
        raise HTTPError(400, "command not found: %s" % prog)


def read_output(path, offset, limit):
    """At most LIMIT bytes of the file PATH from OFFSET (never through a
    FIFO or device: opened non-blocking, regular files only)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise HTTPError(404, "output %s: %s" % (path, e.strerror))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise HTTPError(409, "output %s is not a regular file" % path)
        f.seek(min(offset, st.st_size))
        data = f.read(limit)
    start = min(offset, st.st_size)
    return {
        "offset": start,
        "next": start + len(data),
        "size": st.st_size,
        "eof": start + len(data) >= st.st_size,
        "data": data.decode("utf-8", "replace"),
    }


def check_name(name):
    if not daemonproxy.valid_name(name) or len(name) > MAX_NAME:
        raise HTTPError(
            400, "invalid job name %r: 1-%d characters of A-Z a-z 0-9 . _ -" % (name, MAX_NAME)
        )


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes /jobs and /jobs/NAME to the Jobs object in server.jobs."""

    server_version = "daemonproxy-jobs/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _reply(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        given = self.headers.get("Authorization", "")
        want = "Bearer " + self.server.token
        return hmac.compare_digest(given.encode("utf-8", "replace"), want.encode())

    def _route(self, method):
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized():
            data = b'{"error": "unauthorized: send Authorization: Bearer TOKEN (see --token-file)"}\n'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="jobs"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            if path == "/jobs":
                if method == "GET":
                    return self._reply(200, {"jobs": self.server.jobs.list()})
                if method == "POST":
                    return self._reply(201, self.server.jobs.create(self._json()))
                raise HTTPError(405, "method not allowed")
            if path.startswith("/jobs/") and path.endswith("/output"):
                name = path[len("/jobs/"):-len("/output")]
                check_name(name)
                if method != "GET":
                    raise HTTPError(405, "method not allowed")
                query = urllib.parse.parse_qs(self.path.partition("?")[2])
                try:
                    offset = int(query.get("offset", ["0"])[0])
                    limit = int(query.get("limit", [str(OUTPUT_CHUNK)])[0])
                except ValueError:
                    raise HTTPError(400, "offset and limit must be integers")
                if offset < 0 or not 0 < limit <= MAX_OUTPUT_CHUNK:
                    raise HTTPError(400, "offset >= 0 and 0 < limit <= %d" % MAX_OUTPUT_CHUNK)
                job = self.server.jobs.get(name)
                body = read_output(job["output"], offset, limit)
                body["name"] = name
                return self._reply(200, body)
            if path.startswith("/jobs/"):
                name = path[len("/jobs/"):]
                check_name(name)
                if method == "GET":
                    return self._reply(200, self.server.jobs.get(name))
                if method == "DELETE":
                    return self._reply(200, self.server.jobs.delete(name))
                raise HTTPError(405, "method not allowed")
            raise HTTPError(404, "not found")
        except HTTPError as e:
            self._reply(e.status, {"error": e.message})
        except daemonproxy.DaemonproxyError as e:
            self._reply(503, {"error": "daemonproxy: %s" % e.text})

    def _json(self):
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HTTPError(411, "Content-Length required")
        if length < 0 or length > MAX_BODY:
            raise HTTPError(413, "request body too large")
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise HTTPError(400, "bad JSON: %s" % e)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def do_PUT(self):
        self._route("PUT")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def load_token(path):
    """The token in PATH, which is created (mode 0600, O_EXCL|O_NOFOLLOW)
    with a fresh random one if missing.  An existing file must be a regular
    file owned by us that nobody else may read or write."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("%s is not a regular file" % path)
        if st.st_uid != os.geteuid():
            raise ValueError("%s belongs to uid %d, not to us (uid %d)" % (path, st.st_uid, os.geteuid()))
        if st.st_mode & 0o077:
            raise ValueError("%s is mode %04o: group and others must have no access" % (path, st.st_mode & 0o7777))
        token = f.read(4096).strip()
    if len(token) < 16:
        raise ValueError("%s holds no token of at least 16 characters" % path)
    return token


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(description="HTTP job launcher on top of daemonproxy.")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--socket", metavar="PATH", help="daemonproxy's control socket")
    how.add_argument(
        "--daemonproxy", metavar="BINARY", help="start BINARY -i and use it (it ends with jobs.py)"
    )
    ap.add_argument(
        "--daemonproxy-arg", metavar="ARG", action="append", default=[],
        help="extra argument for the daemonproxy started by --daemonproxy (repeatable)",
    )
    ap.add_argument(
        "--listen", metavar="HOST:PORT", type=parse_listen, default=("127.0.0.1", 8080),
        help="address to serve HTTP on (default 127.0.0.1:8080; port 0: any free port)",
    )
    ap.add_argument(
        "--output-dir", metavar="DIR", default="jobs-output",
        help="where job output goes when a request names no file (default ./jobs-output)",
    )
    ap.add_argument(
        "--kill-timeout", metavar="SECONDS", type=float, default=5.0,
        help="DELETE: seconds between SIGTERM and SIGKILL (default 5)",
    )
    ap.add_argument(
        "--token-file", metavar="FILE", default="jobs.token",
        help="the token every request must carry (default ./jobs.token; created if missing)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    daemonproxy.tolerate_broken_stdio()
    try:
        token = load_token(args.token_file)
    except (OSError, ValueError) as e:
        print("jobs.py: token file: %s" % e, file=sys.stderr)
        return 1

    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, mode=0o700, exist_ok=True)
    try:
        if args.socket:
            client = daemonproxy.Client.connect(args.socket)
        else:
            client = daemonproxy.Client.spawn(args.daemonproxy, args.daemonproxy_arg)
        jobs = Jobs(client, output_dir, args.kill_timeout)
    except daemonproxy.DaemonproxyError as e:
        print("jobs.py: %s" % e, file=sys.stderr)
        return 1

    host, port = args.listen
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, port), Handler)
    server.jobs = jobs
    server.verbose = args.verbose
    server.token = token

    lost = threading.Event()

    def on_close():  # daemonproxy went away: stop serving
        lost.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    threading.Thread(target=jobs.pump_forever, args=(on_close,), daemon=True).start()

    def on_signal(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    bound = server.server_address
    shown = "[%s]" % bound[0] if ":" in bound[0] else bound[0]
    print("listening on %s:%d" % (shown, bound[1]), flush=True)
    server.serve_forever()
    server.server_close()

    if lost.is_set():
        print("jobs.py: daemonproxy closed the connection", file=sys.stderr)
        return 1
    if args.daemonproxy:
        # Our private daemonproxy ends with us; do not leave jobs running.
        jobs.stop_all(args.kill_timeout)
    with jobs.cond:
        jobs.closed = True
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
