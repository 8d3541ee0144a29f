# Plays systemd's side of the notify protocol for test/lab/service.test.ts:
# binds a unix datagram socket (what NOTIFY_SOCKET names) and prints each
# message it receives as one JSON line. Node cannot bind such a socket, so
# this is Python's standard library (Debian package python3).
#
# usage: notify-listener.py SOCKET_PATH NFT_TABLE
#
# When a message says READY=1, it looks at once whether the nft table
# NFT_TABLE (family inet) exists, before reading anything else: that is the
# moment a service manager would start what depends on uplinkd. Run it in the
# namespace whose table matters. Like systemd, it passes its credentials
# through (SO_PASSCRED) to see which process sent each message, and closes
# the descriptors a BARRIER=1 message carries, which is what lets
# systemd-notify exit.
import array
import json
import os
import socket
import struct
import subprocess
import sys
import time

path, table = sys.argv[1], sys.argv[2]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
sock.bind(path)
print(json.dumps({"listening": path}), flush=True)

ucred = struct.calcsize("iII")
while True:
    data, ancillary, _flags, _addr = sock.recvmsg(8192, socket.CMSG_SPACE(ucred) + socket.CMSG_SPACE(16 * 4))
    at_ms = time.monotonic() * 1000
    sender, fds = None, []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            sender = struct.unpack("iII", payload[:ucred])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
    fields = data.decode("utf-8", "replace").split("\n")
    entry = {"at_ms": at_ms, "sender_pid": sender, "fields": fields}
    if "READY=1" in fields:
        listed = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True)
        entry["table_exists"] = listed.returncode == 0
    for fd in fds:
        os.close(fd)
    print(json.dumps(entry), flush=True)
