"""daemonproxy - a small Python client for daemonproxy's controller protocol.

Standard library only, Python 3.9 or later.  Install it from the top of a
daemonproxy checkout with "pip install ./python" and "import daemonproxy".
The package is this one file (python/daemonproxy/__init__.py): "make
install" also copies it, as daemonproxy.py, beside the example controllers.

daemonproxy talks in lines of TAB-separated fields: you send commands, it
sends events (service.state, fd.state, ...) and replies (error, warning, the
text of an echo).  See daemonproxy(8) for every command and event.  This
module gives you three ways in:

    # 1. As a controller service, started by daemonproxy itself with
    #        service.args  ctl  python3  /path/to/ctl.py
    #        service.fds   ctl  control.event  control.cmd  stderr
    #    Events arrive on fd 0, commands go out on fd 1.
    client = Client.from_service_fds()

    # 2. Over the control socket (daemonproxy -S PATH, or socket.create).
    client = Client.connect("/run/daemonproxy.sock")

    # 3. Spawning "daemonproxy -i" (for tests and scripts); the 6-line
    #    "info" banner is read and kept in client.banner.
    client = Client.spawn("daemonproxy", ["-c", "daemonproxy.conf"])

Then, for example:

    client.start("web", ["python3", "-m", "http.server"], fds=["null", "stderr", "stderr"],
                 tags=labels(user="ann", session="run42"))
    client.wait_state("web", "up", timeout=5)
    client.query(session="run42", state="up")  # [{"name": "web", "state": "up", "pid": ..., ...}]
    client.stat("web")                        # {"pid", "state", "cpu_ms", "rss_kb", ...} from /proc
    dump = client.statedump()                 # {"services": ..., "handles": ..., "signals": ...}
    for event in client.events():             # blocks; ends when daemonproxy hangs up
        if event.name == "service.state" and event.state == "down":
            print(event.service, event.exit_reason, event.exit_value)
        elif event.name == "overflow":        # daemonproxy dropped events for us:
            dump = client.statedump()         # read the whole state again

How lines are routed.  Lines are read only when you ask for something, and
every line read is either handed to you or kept:

  * sync() sends "echo <token>" and returns every line received before the
    token (commands run in order, so everything your earlier commands caused
    has arrived by then).  Broadcast events among them (service.*, fd.state,
    signal, overflow) are *also* passed to on_event, or kept in a queue that
    events() drains first, so an event loop never misses one.  Replies
    (error, warning, echo text, log.filter) belong to the sync and are not
    queued.  command(), start(), statedump() and friends are built on sync().
  * statedump() output looks exactly like broadcasts (and real broadcasts
    interleave with it), so those lines reach events() too; they describe
    the current state, so applying them in order is always correct.
  * The queue is bounded (max_queue); if it fills because nobody reads
    events(), it is emptied and a single "overflow" event is queued, just as
    daemonproxy does with a controller that stops reading.  The answer to
    both is statedump().

Extensions of daemonproxy 1.2 (see PROTOCOL EXTENSIONS in daemonproxy(8)):
query() selects services by name pattern, labels and state in one round
trip; stat() reads live figures (kernel state, CPU, memory, threads,
descriptors); attach() watches a process daemonproxy did not start;
signal_matching() signals every running service a query selects.
labels() and parse_labels() are the tag conventions (user=, session=,
group=).  A "limit=N/SECONDS" word in service.auto_up caps restarts; the
broadcast service.limit event says when it stopped a service.

Typed (py.typed, clean under "mypy --strict"): the dicts returned are
described by the TypedDicts StateDump (with ServiceInfo, AutoUp,
HandleInfo, SignalInfo), Match and Figures; Value is a field converted to
Python (None, int, float or str).

Errors: DaemonproxyError (error text in .text, the message without the
', for command "..."' suffix in .message); DaemonproxyTimeout (also a
TimeoutError) when a wait runs out; ConnectionClosed when daemonproxy hangs
up.  A field containing TAB or LF, or a command line over 1023 bytes, raises
ValueError before anything is sent.

A Client is not thread-safe: use it from one thread, or hold a lock around
every call (controllers/jobs.py shows how).
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import select
import socket
import stat
import struct
import subprocess
import sys
import time
from typing import (
    IO,
    Any,
    Callable,
    Collection,
    Container,
    Iterable,
    Iterator,
    Literal,
    Mapping,
    Optional,
    Sequence,
    TextIO,
    TypedDict,
    TypeVar,
    Union,
    cast,
    overload,
)

#: The daemonproxy release this client belongs to (the package's version).
__version__ = "1.2.0"

__all__ = [
    "Client",
    "Event",
    "DaemonproxyError",
    "DaemonproxyTimeout",
    "ConnectionClosed",
    "valid_name",
    "parse_statedump",
    "labels",
    "parse_labels",
    "glob_quote",
    "Value",
    "AutoUp",
    "ServiceInfo",
    "HandleInfo",
    "SignalInfo",
    "StateDump",
    "Match",
    "Figures",
]

#: Longest command line daemonproxy accepts, LF not counted.
MAX_LINE = 1023

#: Lines daemonproxy broadcasts (or sends in a statedump); the rest are replies.
BROADCASTS = frozenset(
    {
        "service.state",
        "service.tags",
        "service.args",
        "service.fds",
        "service.auto_up",
        "service.limit",
        "fd.state",
        "signal",
        "overflow",
    }
)

#: Tag keys with a conventional meaning (see labels()).
LABEL_KEYS = ("user", "session", "group")

#: Fields of a service.stat line after the event name, in order.
STAT_FIELDS = ("name", "pid", "state", "start", "uptime", "cpu_ms", "cpu_permille", "rss_kb", "threads", "fds")

#: Default for every wait that has no timeout of its own (seconds).
DEFAULT_TIMEOUT = 10.0

_NAME = re.compile(r"[A-Za-z0-9._-]{1,31}")
_BANNER_LINES = 6

# -- types ---------------------------------------------------------------------
# The dicts this module returns are plain dicts; these TypedDicts describe
# their keys for type checkers.  Value is an assignment that Python 3.9
# evaluates, hence Union and Optional there rather than "|".

#: A field converted by the module: "-" becomes None, "12" 12, "1.5" 1.5,
#: anything else stays text.
Value = Optional[Union[int, float, str]]


class AutoUp(TypedDict):
    """The "auto_up" of a ServiceInfo when set: {"interval", "triggers": [..]}."""

    interval: Value
    triggers: list[str]


class ServiceInfo(TypedDict):
    """One service of a StateDump."""

    state: str
    ts: Value
    pid: Value
    exit_reason: Value
    exit_value: Value
    uptime: Value
    downtime: Value
    tags: list[str]
    args: list[str]
    fds: list[str]
    auto_up: AutoUp | None


class HandleInfo(TypedDict):
    """One handle of a StateDump."""

    type: str
    flags: list[str]
    description: str


class SignalInfo(TypedDict):
    """One pending signal of a StateDump."""

    ts: Value
    count: Value


class StateDump(TypedDict):
    """What parse_statedump() and Client.statedump() return."""

    services: dict[str, ServiceInfo]
    handles: dict[str, HandleInfo]
    signals: dict[str, SignalInfo]


class Match(TypedDict):
    """A service selected by service.query (Event.match, Client.query())."""

    name: str
    state: str
    pid: Value
    tags: list[str]
    labels: dict[str, str]


class Figures(TypedDict):
    """Live figures of a service.stat line (Event.figures, Client.stat()):
    the keys are STAT_FIELDS."""

    name: str
    pid: Value
    state: str | None
    start: Value
    uptime: Value
    cpu_ms: Value
    cpu_permille: Value
    rss_kb: Value
    threads: Value
    fds: Value


_C = TypeVar("_C", bound="Client")


class DaemonproxyError(Exception):
    """daemonproxy refused a command, or the connection failed.

    .text is the full error text (as sent after "error<TAB>"), .message the
    same without the ', for command "..."' suffix.
    """

    text: str
    message: str

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        self.message = text.split(', for command "', 1)[0]


class DaemonproxyTimeout(DaemonproxyError, TimeoutError):
    """A bounded wait ran out."""


class ConnectionClosed(DaemonproxyError):
    """daemonproxy closed the connection (it exited, or dropped us)."""


def valid_name(name: object) -> bool:
    """True if NAME follows the protocol's rule for service and handle names:
    1-31 bytes of A-Z a-z 0-9 . _ -"""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def labels(user: object = None, session: object = None, group: object = None, **more: object) -> list[str]:
    """Tag words for service.tags by the label conventions: KEY=VALUE for
    user, session, group and any other keyword given (None is left out).

        labels(user="ann", session="run42")  ->  ["user=ann", "session=run42"]
    """
    pairs: list[tuple[str, object]] = [("user", user), ("session", session), ("group", group)] + sorted(more.items())
    words = []
    for key, value in pairs:
        if value is None:
            continue
        value = str(value)
        if "\t" in value or "\n" in value or "=" in key or not key:
            raise ValueError("bad label %r=%r" % (key, value))
        words.append("%s=%s" % (key, value))
    return words


def parse_labels(tags: str | Iterable[str]) -> dict[str, str]:
    """The KEY=VALUE words of a tag list (or raw TAB-separated string) as a
    dict; words without "=" are left out."""
    if isinstance(tags, str):
        tags = tags.split("\t") if tags else []
    out: dict[str, str] = {}
    for word in tags:
        key, sep, value = word.partition("=")
        if sep:
            out[key] = value
    return out


def glob_quote(text: object) -> str:
    """TEXT with daemonproxy's glob characters (* ? \\) quoted, to match it
    exactly in a name= or tag= filter."""
    return "".join("\\" + c if c in "*?\\" else c for c in str(text))


def _filters(
    name: str | None = None,
    tags: Iterable[str] = (),
    state: str | Iterable[str] | None = None,
    labels_: Mapping[str, object] | None = None,
) -> list[str]:
    """Filter fields for service.query / service.stat *."""
    fields = []
    if name is not None:
        fields.append("name=" + name)
    for t in tags:
        fields.append("tag=" + t)
    for key, value in sorted((labels_ or {}).items()):
        fields.append("tag=%s=%s" % (key, glob_quote(value)))
    if state is not None:
        fields.append("state=" + (state if isinstance(state, str) else ",".join(state)))
    return fields


def _value(text: str | None) -> Value:
    """A field as Python: "-" -> None, "12" -> 12, "1.5" -> 1.5, else the text."""
    if text is None or text == "-":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


class Event:
    """One line from daemonproxy, split at TABs.

    .name is the first field ("service.state", "error", or an echoed text),
    .fields the rest (a list of str), .raw the whole line without the LF.
    Convenience properties return None when they do not apply; for
    service.state "-" becomes None and numbers become int (or float for
    fractional times).
    """

    __slots__ = ("name", "fields", "raw")

    name: str
    fields: list[str]
    raw: str

    def __init__(self, raw: str) -> None:
        self.raw = raw
        parts = raw.split("\t")
        self.name = parts[0]
        self.fields = parts[1:]

    def __repr__(self) -> str:
        return "Event(%r)" % self.raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def _field(self, i: int) -> str | None:
        return self.fields[i] if i < len(self.fields) else None

    @property
    def is_broadcast(self) -> bool:
        """True for events (service.*, fd.state, signal, overflow), False for replies."""
        return self.name in BROADCASTS

    @property
    def text(self) -> str:
        """Everything after the first TAB: the message of an error or warning."""
        return self.raw.split("\t", 1)[1] if "\t" in self.raw else ""

    @property
    def value(self) -> str:
        """The raw remainder after NAME (service.tags/args/fds/auto_up), TABs included."""
        parts = self.raw.split("\t", 2)
        return parts[2] if len(parts) > 2 else ""

    # -- service.* ---------------------------------------------------------
    @property
    def service(self) -> str | None:
        """Service name of a service.* event."""
        return self._field(0) if self.name.startswith("service.") else None

    def _state(self, i: int) -> str | None:
        return self._field(i) if self.name == "service.state" else None

    @property
    def state(self) -> str | None:
        """service.state: "down", "start", "up" or "deleted"."""
        return self._state(1)

    @property
    def ts(self) -> Value:
        """service.state: monotonic second of the transition (int), or None."""
        return _value(self._state(2))

    @property
    def pid(self) -> Value:
        """service.state: process id (int), or None."""
        return _value(self._state(3))

    @property
    def exit_reason(self) -> Value:
        """service.state: "exit" or "signal" after a process ended, else None."""
        return _value(self._state(4))

    @property
    def exit_value(self) -> Value:
        """service.state: exit status (int) or signal name ("SIGTERM"), or None."""
        return _value(self._state(5))

    @property
    def uptime(self) -> Value:
        """service.state: seconds the process ran (or has run), or None."""
        return _value(self._state(6))

    @property
    def downtime(self) -> Value:
        """service.state: seconds since the process ended, or None."""
        return _value(self._state(7))

    @property
    def figures(self) -> Figures | None:
        """service.stat: a dict of STAT_FIELDS ("-" becomes None, numbers int)."""
        if self.name != "service.stat" or len(self.fields) < len(STAT_FIELDS):
            return None
        out: dict[str, Value] = {k: _value(v) for k, v in zip(STAT_FIELDS, self.fields)}
        out["name"] = self.fields[0]
        out["state"] = self.fields[2] if self.fields[2] != "-" else None
        return cast(Figures, out)  # its keys are STAT_FIELDS

    @property
    def match(self) -> Match | None:
        """service.match: {"name", "state", "pid", "tags": [..], "labels": {..}}."""
        if self.name != "service.match" or len(self.fields) < 3:
            return None
        tags = _split(self.raw.split("\t", 4)[4]) if len(self.fields) >= 4 else []
        return {
            "name": self.fields[0],
            "state": self.fields[1],
            "pid": _value(self.fields[2]),
            "tags": tags,
            "labels": parse_labels(tags),
        }

    @property
    def args(self) -> list[str] | None:
        """service.args: the argv as a list."""
        if self.name != "service.args":
            return None
        return self.value.split("\t") if self.value else []

    # -- fd.state, signal --------------------------------------------------
    @property
    def handle(self) -> str | None:
        """fd.state: the handle name."""
        return self._field(0) if self.name == "fd.state" else None

    @property
    def signal(self) -> str | None:
        """signal: the signal name ("SIGHUP")."""
        return self._field(0) if self.name == "signal" else None

    @property
    def count(self) -> Value:
        """signal: pending count (int)."""
        return _value(self._field(2)) if self.name == "signal" else None


def _new_service() -> ServiceInfo:
    return {
        "state": "down",
        "ts": None,
        "pid": None,
        "exit_reason": None,
        "exit_value": None,
        "uptime": None,
        "downtime": None,
        "tags": [],
        "args": [],
        "fds": ["null", "null", "null"],
        "auto_up": None,
    }


def _split(value: str) -> list[str]:
    return value.split("\t") if value else []


def parse_statedump(events: Iterable[Event | str]) -> StateDump:
    """Build a state dict from statedump lines (Event objects or strings).

    Lines are applied in order, so broadcasts interleaved with the dump
    (and a "deleted" among them) are taken into account.  Result:

        {"services": {NAME: {"state", "ts", "pid", "exit_reason",
                             "exit_value", "uptime", "downtime",
                             "tags": [..], "args": [..], "fds": [..],
                             "auto_up": None or {"interval", "triggers": [..]}}},
         "handles":  {NAME: {"type", "flags": [..], "description"}},
         "signals":  {"SIGHUP": {"ts", "count"}}}
    """
    services: dict[str, ServiceInfo] = {}
    handles: dict[str, HandleInfo] = {}
    signals: dict[str, SignalInfo] = {}
    for ev in events:
        if not isinstance(ev, Event):
            ev = Event(ev)
        f = ev.fields
        # In the service.* branches f[0] is ev.service (and f[1] ev.state).
        if ev.name == "service.state" and len(f) >= 2:
            if ev.state == "deleted":
                services.pop(f[0], None)
                continue
            services.setdefault(f[0], _new_service()).update(
                {
                    "state": f[1],
                    "ts": ev.ts,
                    "pid": ev.pid,
                    "exit_reason": ev.exit_reason,
                    "exit_value": ev.exit_value,
                    "uptime": ev.uptime,
                    "downtime": ev.downtime,
                }
            )
        elif ev.name in ("service.tags", "service.args", "service.fds") and f:
            key = cast('Literal["tags", "args", "fds"]', ev.name.split(".", 1)[1])
            services.setdefault(f[0], _new_service())[key] = _split(ev.value)
        elif ev.name == "service.auto_up" and len(f) >= 2:
            svc = services.setdefault(f[0], _new_service())
            if f[1] == "-":
                svc["auto_up"] = None
            else:
                triggers: list[str] = []
                for t in f[2:]:
                    if not t:  # daemonproxy stops at the first empty trigger
                        break
                    triggers.append(t)
                svc["auto_up"] = {"interval": _value(f[1]), "triggers": triggers}
        elif ev.name == "fd.state" and len(f) >= 2:
            if f[1] == "deleted":
                handles.pop(f[0], None)
            else:
                handles[f[0]] = {
                    "type": f[1],
                    "flags": f[2].split(",") if len(f) > 2 and f[2] else [],
                    "description": "\t".join(f[3:]),
                }
        elif ev.name == "signal" and len(f) >= 3:
            signals[f[0]] = {"ts": _value(f[1]), "count": _value(f[2])}
    return {"services": services, "handles": handles, "signals": signals}


class Client:
    """A connection to daemonproxy as one controller.

    Make one with Client.spawn(), Client.connect() or
    Client.from_service_fds().  on_event, if set, is called with each
    broadcast event that sync() (and the calls built on it) reads, instead
    of queueing it for events().  timeout is the default for every wait
    except events()/next_event(), which wait forever unless told otherwise.
    """

    process: subprocess.Popen[bytes] | None
    on_event: Callable[[Event], object] | None
    timeout: float | None
    max_queue: int
    banner: list[str]

    def __init__(
        self,
        rfd: int,
        wfd: int,
        *,
        sock: socket.socket | None = None,
        process: subprocess.Popen[bytes] | None = None,
        on_event: Callable[[Event], object] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_queue: int = 100000,
        closers: Iterable[Callable[[], object]] = (),
    ) -> None:
        self._rfd = rfd
        self._wfd = wfd
        for fd in {rfd, wfd}:
            os.set_blocking(fd, False)
        self._sock = sock
        self._closers = list(closers)
        self.process = process
        self.on_event = on_event
        self.timeout = timeout
        self.max_queue = max_queue
        self.banner = []
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._queue: collections.deque[Event] = collections.deque()
        self._states: dict[str, Event] = {}
        self._stale_tokens: set[str] = set()
        self._seq = 0

    # -- making a client -------------------------------------------------------
    @classmethod
    def spawn(
        cls: type[_C],
        binary: str | os.PathLike[str] = "daemonproxy",
        args: Iterable[object] = (),
        *,
        stderr: int | IO[Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pass_fds: Collection[int] = (),
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> _C:
        """Start "BINARY -i ARGS..." and talk to it over its stdin/stdout.

        stderr, env, cwd and pass_fds go to subprocess.Popen (stderr None:
        inherit ours).  Descriptors in pass_fds appear in daemonproxy as
        handles fd_N.  The banner is read (at most `timeout` seconds) into
        .banner.  close() ends the session (EOF on its stdin), which makes
        daemonproxy exit 0; the services it runs are left running.
        """
        proc = subprocess.Popen(
            [binary, "-i"] + [str(a) for a in args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
        )
        assert proc.stdin is not None and proc.stdout is not None  # both are PIPE
        client = cls(
            proc.stdout.fileno(),
            proc.stdin.fileno(),
            process=proc,
            timeout=timeout,
            closers=[proc.stdin.close, proc.stdout.close],
            **kwargs
        )
        try:
            client._read_banner(time.monotonic() + timeout)
        except BaseException:
            client.close(timeout=1)
            raise
        return client

    @classmethod
    def connect(
        cls: type[_C],
        path: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        server_uids: Container[int] = (),
        **kwargs: Any,
    ) -> _C:
        """Connect to daemonproxy's control socket at PATH.

        daemonproxy accepts connections from root and its own uid only
        (unless started with an option allowing more).  A new controller
        first receives the pending signals, then live events; call
        statedump() to learn the current state.

        Before anything is sent, the server's uid is read with SO_PEERCRED:
        it must be root, our own effective uid, or one of SERVER_UIDS.
        Otherwise whoever bound PATH first (in a shared directory, say)
        would receive our commands; DaemonproxyError is raised instead.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", cred)
            if uid not in (0, os.geteuid()) and uid not in server_uids:
                raise DaemonproxyError(
                    "refusing to talk to %s: the process listening there runs as uid %d, "
                    "not root or uid %d" % (path, uid, os.geteuid())
                )
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise DaemonproxyError("cannot connect to %s: %s" % (path, e)) from e
        except DaemonproxyError:
            sock.close()
            raise
        fd = sock.fileno()
        return cls(fd, fd, sock=sock, timeout=timeout, closers=[sock.close], **kwargs)

    @classmethod
    def from_service_fds(
        cls: type[_C], event_fd: int = 0, cmd_fd: int = 1, *, detach: bool = True, **kwargs: Any
    ) -> _C:
        """For a controller service: events on EVENT_FD, commands to CMD_FD.

        With detach (the default) both descriptors are moved out of the way
        and /dev/null is put in their place, so print() cannot inject stray
        commands and child processes do not inherit the controller socket
        (daemonproxy frees the controller slot only when every copy of it is
        closed).  Our copies are non-blocking.
        """
        rfd = os.dup(event_fd)  # os.dup() gives close-on-exec descriptors
        wfd = os.dup(cmd_fd)
        closers: list[Callable[[], object]] = [lambda: os.close(rfd), lambda: os.close(wfd)]
        sock = None
        if stat.S_ISSOCK(os.fstat(wfd).st_mode):
            sock = socket.socket(fileno=os.dup(wfd))
            closers.append(sock.close)
        if detach:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (event_fd, cmd_fd):
                if fd != null:
                    os.dup2(null, fd)
            if null not in (event_fd, cmd_fd):
                os.close(null)
        return cls(rfd, wfd, sock=sock, closers=closers, **kwargs)

    def close(self, timeout: float | None = 5.0) -> None:
        """Close the connection.  For a spawned daemonproxy, wait up to
        TIMEOUT seconds for it to exit, then kill it."""
        if self._closed:
            return
        self._closed = True
        for closer in self._closers:
            try:
                closer()
            except OSError:
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The descriptor events are read from (for select/poll).  Lines may
        also be waiting in our buffer already: call pump(0) after a wake-up
        and from time to time."""
        return self._rfd

    # -- low level I/O ---------------------------------------------------------
    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            timeout = self.timeout
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def _left(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _fill(self, deadline: float | None) -> bool:
        """Read what is available, waiting until DEADLINE.  False on timeout."""
        if self._closed:
            raise ConnectionClosed("client is closed")
        r, _, _ = select.select([self._rfd], [], [], self._left(deadline))
        if not r:
            return False
        try:
            data = os.read(self._rfd, 65536)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            data = b""
        if data:
            self._buf += data
        else:
            self._eof = True
        return True

    def _receive(self, deadline: float | None) -> Event | None:
        """The next line as an Event, None on timeout, ConnectionClosed at EOF."""
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                raw = bytes(self._buf[:i]).decode("utf-8", "surrogateescape")
                del self._buf[: i + 1]
                if raw in self._stale_tokens:  # a sync token that arrived late
                    self._stale_tokens.discard(raw)
                    continue
                ev = Event(raw)
                if ev.name == "service.state" and ev.service:
                    self._states[ev.service] = ev
                elif ev.name == "overflow":
                    self._states.clear()  # we missed transitions
                return ev
            if self._eof:
                # daemonproxy ignores a partial last line too
                raise ConnectionClosed("daemonproxy closed the connection")
            if not self._fill(deadline):
                return None

    def _deliver(self, ev: Event) -> None:
        """Hand an event to on_event, or queue it for events()."""
        if self.on_event is not None:
            self.on_event(ev)
            return
        self._queue.append(ev)
        if len(self._queue) > self.max_queue:
            self._queue.clear()
            self._queue.append(Event("overflow"))

    def _write(self, data: bytes, deadline: float | None) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise ConnectionClosed("client is closed")
            rl = [] if self._eof else [self._rfd]
            r, w, _ = select.select(rl, [self._wfd], [], self._left(deadline))
            if not r and not w:
                raise DaemonproxyTimeout("timed out writing to daemonproxy")
            if r:
                # Take in what daemonproxy sends meanwhile: it stops reading
                # our commands while its output to us is backed up.
                self._fill(0)
            if w:
                try:
                    n = os.write(self._wfd, view)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise ConnectionClosed("daemonproxy closed the connection") from e
                view = view[n:]

    @staticmethod
    def _format(fields: Iterable[object]) -> bytes:
        parts = []
        for f in fields:
            if isinstance(f, bytes):
                b = f
            else:
                if not isinstance(f, str):
                    f = str(f)
                b = f.encode("utf-8", "surrogateescape")
            if b"\t" in b or b"\n" in b:
                raise ValueError("field %r contains a TAB or LF" % (f,))
            parts.append(b)
        line = b"\t".join(parts)
        if len(line) > MAX_LINE:
            raise ValueError("command line is %d bytes, the limit is %d" % (len(line), MAX_LINE))
        return line + b"\n"

    def _read_banner(self, deadline: float | None) -> None:
        for _ in range(_BANNER_LINES):
            try:
                ev = self._receive(deadline)
            except ConnectionClosed:
                code = self.process.wait(5) if self.process else None
                raise DaemonproxyError("daemonproxy exited (code %s) before its banner" % code)
            if ev is None:
                raise DaemonproxyTimeout("no banner from daemonproxy")
            if ev.name != "info":
                self._deliver(ev)
                break
            self.banner.append(ev.text)

    # -- commands ---------------------------------------------------------------
    def send(self, *fields: object, timeout: float | None = None) -> None:
        """Send one command, fields joined by TABs; returns at once.

        Replies (error, warning) arrive later: from events(), or from the
        next sync().  ValueError if a field holds a TAB or LF."""
        self._write(self._format(fields), self._deadline(timeout))

    def _send_many(self, commands: Iterable[Iterable[object]], deadline: float | None) -> None:
        data = b"".join(self._format(c) for c in commands)  # validate all first
        self._write(data, deadline)

    def _token(self, deadline: float | None) -> str:
        self._seq += 1
        token = "daemonproxy.py-sync-%d-%d-%s" % (os.getpid(), self._seq, secrets.token_hex(4))
        self._write(self._format(("echo", token)), deadline)
        return token

    def sync(self, timeout: float | None = None) -> list[Event]:
        """Send "echo <token>", wait for the token, return the lines before it.

        Returns a list of Events: replies to earlier commands and the events
        that arrived meanwhile.  The broadcast events among them also go to
        on_event or the events() queue.  If an "overflow" arrives (the token
        may have been dropped with other output), another token is sent and
        either one ends the wait.
        """
        deadline = self._deadline(timeout)
        tokens = {self._token(deadline)}
        lines: list[Event] = []
        try:
            while True:
                ev = self._receive(deadline)
                if ev is None:
                    raise DaemonproxyTimeout(
                        "no reply from daemonproxy within %ss" % (timeout if timeout is not None else self.timeout)
                    )
                if ev.raw in tokens:
                    tokens.discard(ev.raw)
                    return lines
                lines.append(ev)
                if ev.is_broadcast:
                    self._deliver(ev)
                if ev.name == "overflow":
                    tokens.add(self._token(deadline))
        finally:
            self._stale_tokens |= tokens

    @staticmethod
    def _check(lines: Sequence[Event]) -> list[Event]:
        errors = [e for e in lines if e.name == "error"]
        if errors:
            raise DaemonproxyError(errors[0].text)
        return [e for e in lines if e.name == "warning"]

    def command(self, *fields: object, check: bool = False, timeout: float | None = None) -> list[Event]:
        """Send one command, sync(), and return the error and warning replies.

        With check=True an error raises DaemonproxyError instead and the
        warnings are returned.  Replies to commands sent earlier with send()
        and not yet read are counted too."""
        deadline = self._deadline(timeout)
        self._write(self._format(fields), deadline)
        lines = self.sync(self._left(deadline))
        if check:
            return self._check(lines)
        return [e for e in lines if e.name in ("error", "warning")]

    def batch(
        self, commands: Iterable[Iterable[object]], check: bool = False, timeout: float | None = None
    ) -> list[Event]:
        """Like command() for several commands (a list of field tuples):
        every one is validated before any is sent, then they go out
        together, followed by a single sync()."""
        deadline = self._deadline(timeout)
        self._send_many(commands, deadline)
        lines = self.sync(self._left(deadline))
        if check:
            return self._check(lines)
        return [e for e in lines if e.name in ("error", "warning")]

    def statedump(self, timeout: float | None = None, retries: int = 3) -> StateDump:
        """Run "statedump" and return the state as a dict (see parse_statedump).

        If an overflow cuts the dump short it is repeated (up to RETRIES
        times).  The dump lines also reach on_event / events()."""
        deadline = self._deadline(timeout)
        for _ in range(retries):
            self._write(self._format(("statedump",)), deadline)
            lines = self.sync(self._left(deadline))
            if not any(e.name == "overflow" for e in lines):
                return parse_statedump(e for e in lines if e.is_broadcast)
        raise DaemonproxyError("statedump was cut short by overflow %d times" % retries)

    def send_fd(self, name: str, fd: int, timeout: float | None = None) -> list[Event]:
        """Give daemonproxy a descriptor as handle NAME ("fd.take" with the
        descriptor attached, SCM_RIGHTS).  Only over a socket: a control
        socket connection or a controller service.  Returns the warnings;
        DaemonproxyError on error.  FD stays open here: close it yourself."""
        if self._sock is None:
            raise DaemonproxyError("fd.take needs a socket connection to daemonproxy")
        deadline = self._deadline(timeout)
        data = self._format(("fd.take", name))
        while True:
            rl = [] if self._eof else [self._rfd]
            r, w, _ = select.select(rl, [self._wfd], [], self._left(deadline))
            if not r and not w:
                raise DaemonproxyTimeout("timed out writing to daemonproxy")
            if r:
                self._fill(0)
            if w:
                try:
                    n = socket.send_fds(self._sock, [data], [fd])
                    break
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise ConnectionClosed("daemonproxy closed the connection") from e
        if n < len(data):
            self._write(data[n:], deadline)
        return self._check(self.sync(self._left(deadline)))

    # -- helpers ----------------------------------------------------------------
    def start(
        self,
        name: str,
        args: Iterable[object],
        fds: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        when: float | str | None = None,
        timeout: float | None = None,
    ) -> list[Event]:
        """Define and start service NAME: service.tags (if TAGS is given),
        service.args, service.fds (if FDS is given; else the service keeps
        its handles, /dev/null x3 for a new one), service.start [WHEN].
        Returns warnings (e.g. fd "x" is not yet defined); DaemonproxyError
        on error.  The process starts shortly after: see wait_state()."""
        cmds: list[tuple[object, ...]] = []
        if tags is not None:
            cmds.append(("service.tags", name) + tuple(tags))
        cmds.append(("service.args", name) + tuple(args))
        if fds is not None:
            cmds.append(("service.fds", name) + tuple(fds))
        cmds.append(("service.start", name) if when is None else ("service.start", name, when))
        return self.batch(cmds, check=True, timeout=timeout)

    def signal(self, name: str, sig: str | int, group: bool = False, timeout: float | None = None) -> list[Event]:
        """Send SIG (name like "SIGTERM"/"TERM" or a number) to service NAME."""
        fields: list[str | int] = ["service.signal", name, sig] + (["group"] if group else [])
        return self.command(*fields, check=True, timeout=timeout)

    def delete(self, name: str, timeout: float | None = None) -> list[Event]:
        """Delete service NAME (refused while it is up)."""
        return self.command("service.delete", name, check=True, timeout=timeout)

    # -- extensions: queries, figures, attach -------------------------------
    def _listing(
        self, fields: Sequence[object], item: str, end: str, timeout: float | None, retries: int = 3
    ) -> list[Event]:
        """Send a listing command; return the Events named ITEM up to the END
        line (repeated if an overflow cuts it short)."""
        deadline = self._deadline(timeout)
        for _ in range(retries):
            self._write(self._format(fields), deadline)
            lines = self.sync(self._left(deadline))
            self._check(lines)
            if any(e.name == "overflow" for e in lines) or not any(e.name == end for e in lines):
                continue
            return [e for e in lines if e.name == item]
        raise DaemonproxyError("%s was cut short by overflow %d times" % (fields[0], retries))

    def query(
        self,
        name: str | None = None,
        tags: Iterable[str] = (),
        state: str | Iterable[str] | None = None,
        timeout: float | None = None,
        **labels_: object,
    ) -> list[Match]:
        """Services matching every filter, in name order, as dicts
        {"name", "state", "pid", "tags", "labels"} (service.query).

        NAME is a glob (* ? \\) on the service name; TAGS globs on tag words
        ("session=run4*"); STATE "up", "down", "start", "limit" or a list of
        them; keywords match labels exactly: query(session="run42", user="ann").
        No filter at all lists every service."""
        fields = ["service.query"] + _filters(name, tags, state, labels_)
        lines = self._listing(fields, "service.match", "service.query.end", timeout)
        return cast("list[Match]", [e.match for e in lines])  # daemonproxy sends every field

    @overload
    def stat(
        self, name: Literal["*"] = "*", tags: Iterable[str] = (), timeout: float | None = None, **labels_: object
    ) -> list[Figures]: ...

    @overload
    def stat(
        self, name: str, tags: Iterable[str] = (), timeout: float | None = None, **labels_: object
    ) -> Figures | list[Figures]: ...

    def stat(
        self, name: str = "*", tags: Iterable[str] = (), timeout: float | None = None, **labels_: object
    ) -> Figures | list[Figures]:
        """Live figures from /proc (service.stat).  For one NAME: a dict of
        STAT_FIELDS (DaemonproxyError "service is not running" if it is not
        up).  For NAME "*" (or a glob): a list of such dicts for every
        running service that matches, filtered like query()."""
        if name != "*" and valid_name(name) and not tags and not labels_:
            lines = self.sync_command(("service.stat", name), timeout)
            return cast(Figures, next(e.figures for e in lines if e.name == "service.stat"))
        filt = _filters(None if name == "*" else name, tags, None, labels_)
        lines = self._listing(["service.stat", "*"] + filt, "service.stat", "service.stat.end", timeout)
        return cast("list[Figures]", [e.figures for e in lines])  # daemonproxy sends every field

    def sync_command(self, fields: Iterable[object], timeout: float | None = None) -> list[Event]:
        """Send one command and sync(); DaemonproxyError on an error reply;
        returns every line before the sync token."""
        deadline = self._deadline(timeout)
        self._write(self._format(fields), deadline)
        lines = self.sync(self._left(deadline))
        self._check(lines)
        return lines

    def attach(self, name: str, pid: int | str, timeout: float | None = None) -> Event:
        """Watch process PID (not started by daemonproxy) as service NAME
        (service.attach).  Returns its "up" service.state Event.  Its exit
        later shows exit_reason "exit" with exit_value None (unknown)."""
        lines = self.sync_command(("service.attach", name, int(pid)), timeout)
        for e in lines:
            if e.name == "service.state" and e.service == name and e.state == "up":
                return e
        return self.wait_state(name, "up", timeout=timeout)

    def signal_matching(
        self,
        sig: str | int,
        name: str | None = None,
        tags: Iterable[str] = (),
        timeout: float | None = None,
        **labels_: object,
    ) -> list[str]:
        """Send SIG to every running service a query selects, e.g.
        signal_matching("SIGTERM", session="run42"): two round trips
        however many there are.  Returns the names signalled."""
        deadline = self._deadline(timeout)
        names = [m["name"] for m in self.query(name, tags, "up", timeout=self._left(deadline), **labels_)]
        if names:
            self.batch([("service.signal", n, sig) for n in names], timeout=self._left(deadline))
        return names

    def state(self, name: str) -> Event | None:
        """The last service.state Event seen for NAME, or None if unknown.
        Kept up to date by every line this client reads."""
        return self._states.get(name)

    def wait_state(self, name: str, state: str | Iterable[str], timeout: float | None = None) -> Event:
        """Wait until service NAME is in STATE (a string or a tuple of them);
        return the service.state Event that says so.  Does not take events
        away from events(): what it reads is queued as usual.  Raises
        DaemonproxyTimeout, naming the last state seen."""
        states = (state,) if isinstance(state, str) else tuple(state)
        deadline = self._deadline(timeout)
        if name not in self._states:
            self.statedump(timeout=self._left(deadline))
        while True:
            ev = self._states.get(name)
            if ev is not None and ev.state in states:
                return ev
            ev = self._receive(deadline)
            if ev is None:
                last = self._states.get(name)
                raise DaemonproxyTimeout(
                    "service %s not %s in time (last seen: %s)"
                    % (name, "/".join(states), last.raw if last else "nothing")
                )
            self._deliver(ev)
            if ev.name == "overflow":
                self.statedump(timeout=self._left(deadline))

    # -- events -----------------------------------------------------------------
    def pump(self, timeout: float = 0) -> int:
        """Read the lines that are available (waiting up to TIMEOUT seconds
        for the first) and pass each to on_event or the queue.  Returns how
        many were read.  For select()-based loops: see fileno()."""
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            ev = self._receive(deadline if n == 0 else time.monotonic())
            if ev is None:
                return n
            self._deliver(ev)
            n += 1

    def take_events(self) -> list[Event]:
        """Remove and return every queued event (a list)."""
        events = list(self._queue)
        self._queue.clear()
        return events

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event (queued first, then read).  None if TIMEOUT seconds
        pass (TIMEOUT None: wait forever); ConnectionClosed at EOF."""
        if self._queue:
            return self._queue.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._receive(deadline)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Iterate over events: queued ones first, then as they arrive.

        Ends when daemonproxy closes the connection.  With TIMEOUT, raises
        DaemonproxyTimeout after that many seconds without an event.  Lines
        read here that are replies (error, warning, echo text) are yielded
        too."""
        while True:
            try:
                ev = self.next_event(timeout)
            except ConnectionClosed:
                return
            if ev is None:
                raise DaemonproxyTimeout("no event within %ss" % timeout)
            yield ev


class _Tolerant:
    """A text stream whose writes and flushes never raise: a message for a
    reader that has gone is dropped instead of ending the program."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def tolerate_broken_stdio() -> None:
    """Make print() to standard output and standard error survive a reader
    that has gone (a pipe to "tee" killed by the same Ctrl-C, say): for a
    controller whose stdout is not its protocol channel."""
    # A _Tolerant passes everything else on to the stream it wraps.
    sys.stdout = cast(TextIO, _Tolerant(sys.stdout))
    sys.stderr = cast(TextIO, _Tolerant(sys.stderr))
