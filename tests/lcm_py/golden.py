"""Writes the golden vectors: each case encoded by the real LCM Python
binding (lcm-gen's code), one lowercase hex line per file, named
<type>-<case>.hex. Rust builds the same values (tests/lcm_util/golden.rs)
and must produce the same bytes.

    .venv/bin/python tests/lcm_py/golden.py [--out DIR]   (default tests/golden)
"""

import os
import sys

from pmtypes import HERE, procman_lcm as pm


def cmd(command_id, exec_str, group, auto_respawn, stop_signal, stop_time_allowed):
    c = pm.cmd_t()
    c.command_id, c.exec_str, c.group = command_id, exec_str, group
    c.auto_respawn, c.stop_signal, c.stop_time_allowed = auto_respawn, stop_signal, stop_time_allowed
    return c


def status(c, pid, actual_runid, exit_code, cpu_usage, vsize, rss):
    s = pm.cmd_status_t()
    s.cmd, s.pid, s.actual_runid, s.exit_code = c, pid, actual_runid, exit_code
    s.cpu_usage, s.mem_vsize_bytes, s.mem_rss_bytes = cpu_usage, vsize, rss
    return s


def desired(c, desired_runid, force_quit):
    d = pm.cmd_desired_t()
    d.cmd, d.desired_runid, d.force_quit = c, desired_runid, force_quit
    return d


def discovery(utime, transmitter_id, nonce):
    d = pm.discovery_t()
    d.utime, d.transmitter_id, d.nonce = utime, transmitter_id, nonce
    return d


def orders(utime, deputy_id, sheriff_id, cmds):
    o = pm.orders_t()
    o.utime, o.deputy_id, o.sheriff_id = utime, deputy_id, sheriff_id
    o.ncmds, o.cmds = len(cmds), cmds
    return o


def output(utime, deputy_id, ids, text):
    o = pm.output_t()
    o.utime, o.deputy_id = utime, deputy_id
    o.num_commands, o.command_ids, o.text = len(ids), ids, text
    return o


def info(utime, deputy_id, cpu_load, mem, cmds):
    i = pm.deputy_info_t()
    i.utime, i.deputy_id, i.cpu_load = utime, deputy_id, cpu_load
    (i.phys_mem_total_bytes, i.phys_mem_free_bytes, i.swap_total_bytes, i.swap_free_bytes) = mem
    i.ncmds, i.cmds = len(cmds), cmds
    return i


CAM = cmd("cam", "camera --side left", "perception/cams", True, 15, 3.5)
ODD = cmd("\u00fcn\u00ef", "echo 'a b' \"$HOME\"", "", False, -128, 0.0)


def big_info():
    """More than 64 KB once encoded: it needs the fragmented udpm form."""
    cmds = []
    for i in range(120):
        c = cmd("cmd-%03d" % i, "run --n %d " % i + "x" * 500, "g/%d" % (i % 7), i % 2 == 0, 2, 7.0)
        cmds.append(status(c, 1000 + i, i, (i % 4) << 8, 0.25, i * 4096, i * 1024))
    return info(1700000000000000, "big-deputy", 0.5, (1 << 34, 1 << 33, 0, 0), cmds)


CASES = {
    # The three vectors of docs/fleet.md section 2.4.
    "discovery_t-spec": discovery(1, "ab", 2),
    "orders_t-spec": orders(1, "d", "s", [desired(cmd("x", "sleep 1", "g", False, 2, 7.0), 1, False)]),
    "output_t-spec": output(3, "d", ["x", ""], ["hi\n", "ok\n"]),
    # More shapes: negative and extreme numbers, empty arrays, UTF-8.
    "discovery_t-sheriff": discovery(1700000000123456, "host:1234:1700000000000000", 0),
    "orders_t-empty": orders(-1, "", "", []),
    "orders_t-two": orders(
        1700000000000001,
        "robot",
        "base:77:1699999999000000",
        [desired(CAM, 2147483647, True), desired(ODD, 0, False)],
    ),
    "deputy_info_t-two": info(
        1700000000000002,
        "robot",
        -1.0,
        (17179869184, 8589934592, 0, 0),
        [status(CAM, 4242, 7, 0, 0.125, 123456789, 4096000), status(ODD, 0, -2147483648, 768, 0.0, -1, 0)],
    ),
    "output_t-notices": output(5, "robot", ["", "cam"], ["Terminated\n", "line1\nline2\n"]),
    "output_t-empty": output(0, "robot", [], []),
    "cmd_t-cam": CAM,
    "cmd_desired_t-odd": desired(ODD, -5, True),
    "cmd_status_t-cam": status(CAM, 1, 2, 3, 1.0, 9223372036854775807, -9223372036854775808),
    "deputy_info_t-big": big_info(),
}


def main(argv):
    out = os.path.join(os.path.dirname(HERE), "golden")
    if len(argv) == 2 and argv[0] == "--out":
        out = argv[1]
    elif argv:
        sys.exit(__doc__)
    os.makedirs(out, exist_ok=True)
    for name, value in CASES.items():
        with open(os.path.join(out, name + ".hex"), "w") as f:
            f.write(value.encode().hex() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
