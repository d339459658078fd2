"""A real-library LCM peer driven line by line over stdin/stdout, for the
Rust integration tests. Each command gets exactly one reply line.

    url URL              open lcm.LCM(URL)                    -> ok
    sub CHANNEL          subscribe (regex, as liblcm does)    -> ok
    pub CHANNEL HEX      publish the bytes                    -> ok
    recv MS              wait up to MS ms for a message       -> msg CHANNEL HEX | timeout
    decode TYPE HEX      decode with lcm-gen's code, encode   -> ok HEX | err WHAT
    fingerprints         every type's packed fingerprint and
                         lcm-gen -d base hash                 -> fp NAME FP BASE ... (one line)
    quit                                                      -> bye
"""

import collections
import sys
import time

import lcm

import pmtypes

lc = None
inbox = collections.deque()


def handler(channel, data):
    inbox.append((channel, data))


def reply(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main():
    global lc
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        try:
            if cmd == "url":
                lc = lcm.LCM(args[0])
                reply("ok")
            elif cmd == "sub":
                lc.subscribe(args[0], handler)
                reply("ok")
            elif cmd == "pub":
                lc.publish(args[0], bytes.fromhex(args[1]) if len(args) > 1 else b"")
                reply("ok")
            elif cmd == "recv":
                deadline = time.monotonic() + int(args[0]) / 1000.0
                while not inbox:
                    left = int((deadline - time.monotonic()) * 1000)
                    if left <= 0:
                        break
                    lc.handle_timeout(left)
                if inbox:
                    channel, data = inbox.popleft()
                    reply("msg %s %s" % (channel, data.hex()))
                else:
                    reply("timeout")
            elif cmd == "decode":
                t = pmtypes.type_named(args[0])
                value = t.decode(bytes.fromhex(args[1]))
                reply("ok " + value.encode().hex())
            elif cmd == "fingerprints":
                bases = pmtypes.base_hashes()
                parts = []
                for name in pmtypes.NAMES:
                    fp = pmtypes.type_named(name)._get_packed_fingerprint().hex()
                    parts.append("%s %s %016x" % (name, fp, bases[name]))
                reply("fp " + " ".join(parts))
            elif cmd == "quit":
                reply("bye")
                return
            else:
                reply("err unknown command " + cmd)
        except Exception as e:  # the test reads the reason
            reply("err %s: %s" % (type(e).__name__, str(e).replace("\n", " ")))


if __name__ == "__main__":
    main()
