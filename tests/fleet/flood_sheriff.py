"""The flood of test_sheriff_trust.Flood: spoofed reports a sheriff on
tcpq URL (argv[1]) receives, over the real LCM library. Prints what it
sent. Every table the reports can grow is pushed past its limit."""

import sys
import time

from support import P, new_lcm

url = sys.argv[1]
phases = sys.argv[2] if len(sys.argv) > 2 else "1234"
lc = new_lcm(url)
sent = 0


def now():
    return int(time.time() * 1e6)


def publish(channel, msg):
    global sent
    data = msg.encode()
    sent += len(data)
    lc.publish(channel, data)
    # Let the hub and the sheriff keep up (the hub drops a copy beyond
    # 16 MiB queued for a client, which would spare the sheriff the flood).
    lc.handle_timeout(0)


def output(deputy, ids, text):
    o = P.output_t()
    o.utime, o.deputy_id = now(), deputy
    ids = list(ids)
    o.command_ids, o.text, o.num_commands = ids, [text] * len(ids), len(ids)
    publish("PM_OUTPUT", o)


def info(deputy, cmds):
    i = P.deputy_info_t()
    i.utime, i.deputy_id, i.cpu_load = now(), deputy, 0.1
    i.phys_mem_total_bytes = i.phys_mem_free_bytes = i.swap_total_bytes = i.swap_free_bytes = 0
    i.cmds, i.ncmds = [], 0
    for cid, exe in cmds:
        s = P.cmd_status_t()
        c = P.cmd_t()
        c.command_id, c.exec_str, c.group = cid, exe, "g"
        c.auto_respawn, c.stop_signal, c.stop_time_allowed = False, 15, 1.0
        s.cmd, s.pid, s.actual_runid, s.exit_code = c, 0, 0, 0
        s.cpu_usage, s.mem_vsize_bytes, s.mem_rss_bytes = 0.0, 0, 0
        i.cmds.append(s)
    i.ncmds = len(i.cmds)
    publish("PM_INFO", i)


def pace(n):
    if n % 20 == 19:
        time.sleep(0.01)


# 1. output of new command ids (the flood, larger): 1,000 x 20.
for m in range(1000 if "1" in phases else 0):
    output("spoof", (f"s{m}-{i}" for i in range(20)), "x" * 2000)
    pace(m)
# 2. new deputies, past the limit, each with a command.
for d in range(1200 if "2" in phases else 0):
    info(f"dep{d}", [("c", "x" * 100)])
    pace(d)
# 3. adopted commands: 40 deputies x 16 x 60 KB, past the fleet's budget.
big = "y" * 60000
for d in range(40 if "3" in phases else 0):
    info(f"dep{d}", [(f"big{k}", big) for k in range(16)])
    time.sleep(0.02)
# 4. output of adopted commands, 256 KiB each, past the output budget.
text = "z" * 65000
for d in range(10 if "4" in phases else 0):
    for k in range(16):
        for _ in range(4):
            output(f"dep{d}", [f"big{k}"], text)
    time.sleep(0.02)
print(f"{sent / 1e6:.0f} MB of reports")
