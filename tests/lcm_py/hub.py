"""A minimal tcpq hub written from docs/fleet.md section 2.3, so the
Rust tcpq client is also tested against a hub that is not ours.

    .venv/bin/python tests/lcm_py/hub.py PORT   (prints "listening PORT" when ready)

Single-threaded (selectors); relays each PUBLISH once to every client with a
matching subscription (regex full match), the publisher included.
"""

import re
import selectors
import socket
import struct
import sys

CLIENT = struct.pack(">II", 0x287617FB, 0x100)
SERVER = struct.pack(">II", 0x287617FA, 0x100)


class Client:
    def __init__(self, sock):
        self.sock, self.buf, self.greeted, self.subs = sock, b"", False, []

    def frames(self):
        """Yields complete frames (kind, channel, data) from the buffer."""
        while True:
            if not self.greeted:
                if len(self.buf) < 8:
                    return
                if self.buf[:8] != CLIENT:
                    raise ValueError("bad handshake")
                self.buf, self.greeted = self.buf[8:], True
            if len(self.buf) < 8:
                return
            kind, clen = struct.unpack(">II", self.buf[:8])
            if len(self.buf) < 8 + clen:
                return
            channel = self.buf[8 : 8 + clen].decode()
            at, data = 8 + clen, b""
            if kind == 1:
                if len(self.buf) < at + 4:
                    return
                (dlen,) = struct.unpack(">I", self.buf[at : at + 4])
                if len(self.buf) < at + 4 + dlen:
                    return
                data, at = self.buf[at + 4 : at + 4 + dlen], at + 4 + dlen
            self.buf = self.buf[at:]
            yield kind, channel, data


def main():
    port = int(sys.argv[1])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    clients = {}
    print("listening %d" % listener.getsockname()[1], flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                sock, _ = listener.accept()
                sock.sendall(SERVER)
                clients[sock] = Client(sock)
                sel.register(sock, selectors.EVENT_READ)
                continue
            c = clients[key.fileobj]
            data = c.sock.recv(65536)
            try:
                if not data:
                    raise EOFError
                c.buf += data
                for kind, channel, payload in list(c.frames()):
                    if kind == 1:
                        frame = struct.pack(">II", 1, len(channel)) + channel.encode()
                        frame += struct.pack(">I", len(payload)) + payload
                        for other in clients.values():
                            if any(r.fullmatch(channel) for _, r in other.subs):
                                other.sock.sendall(frame)
                    elif kind == 2:
                        c.subs.append((channel, re.compile(channel)))
                    elif kind == 3:
                        c.subs = [s for s in c.subs if s[0] != channel]
            except (EOFError, ValueError, OSError):
                sel.unregister(c.sock)
                c.sock.close()
                del clients[c.sock]


if __name__ == "__main__":
    main()
