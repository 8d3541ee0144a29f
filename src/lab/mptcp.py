#!/usr/bin/env python3
"""An MPTCP download server and client for the uplinkd lab.

Node cannot open IPPROTO_MPTCP sockets; Python can (socket.socket(AF_INET,
SOCK_STREAM, 262)).

  mptcp.py server [--host 0.0.0.0] [--port 8444]
  mptcp.py client --server ADDR [--port 8444] --bytes N [--tcp] [--bind ADDR] [--stall-timeout S]

Server: an MPTCP listener (which takes plain TCP clients too). A client
sends its wanted size as one line, "N\\n"; the server answers N bytes of
deterministic pseudo-random data, then the 32-byte SHA-256 of what it sent.
Client: an MPTCP socket (plain TCP with --tcp), optionally bound to a source
address; it downloads, hashes what it got, and prints one JSON line:
  {"bytes": N, "sha256_ok": true, "seconds": 12.3, "mptcp": true,
   "subflows_max": 2, "max_gap_s": 0.1}
`mptcp` is false when the connection fell back to plain TCP (the server or a
middlebox did not speak MPTCP); `subflows_max` is the most subflows the
kernel reported at once besides the first (MPTCP_INFO), `max_gap_s` the
longest wait for data, e.g. while a failed uplink's data is sent again over
another. A stall longer than --stall-timeout ends it with "error" set and
exit status 1.
"""

import argparse
import hashlib
import json
import random
import socket
import struct
import sys
import threading
import time

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_INFO_FLAG_FALLBACK = 1
CHUNK = 64 * 1024
DIGEST = 32
SEED = 20231114  # any fixed number: the same request always gets the same bytes
MAX_REQUEST = 1 << 40


def serve(args):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(64)
    print(json.dumps({"listening": args.port, "host": args.host}), flush=True)
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=answer, args=(conn, peer), daemon=True).start()


def answer(conn, peer):
    try:
        with conn:
            request = b""
            while not request.endswith(b"\n"):
                part = conn.recv(64)
                if not part or len(request) > 64:
                    return
                request += part
            size = int(request.strip())
            if not 0 <= size <= MAX_REQUEST:
                return
            rng = random.Random(SEED)
            digest = hashlib.sha256()
            left = size
            while left:
                block = rng.randbytes(min(CHUNK, left))
                digest.update(block)
                conn.sendall(block)
                left -= len(block)
            conn.sendall(digest.digest())
            conn.shutdown(socket.SHUT_WR)
            # Until the client has read everything and closed.
            while conn.recv(4096):
                pass
    except (OSError, ValueError) as err:
        print(json.dumps({"peer": peer[0], "error": str(err)}), flush=True)


def mptcp_info(sock):
    """(subflows, fell back to TCP); struct mptcp_info starts with six u8 and the u32 flags at offset 8."""
    try:
        info = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)
    except OSError:
        return 0, True  # older kernels refuse MPTCP_INFO on a connection that fell back
    if len(info) < 12:
        return 0, True
    (flags,) = struct.unpack_from("I", info, 8)
    return info[0], bool(flags & MPTCP_INFO_FLAG_FALLBACK)


def download(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP if args.tcp else IPPROTO_MPTCP)
    if args.bind:
        sock.bind((args.bind, 0))
    sock.settimeout(args.stall_timeout)
    result = {"bytes": 0, "sha256_ok": False, "seconds": 0.0, "mptcp": False, "subflows_max": 0, "max_gap_s": 0.0}
    started = time.monotonic()
    digest = hashlib.sha256()
    tail = b""  # the last DIGEST bytes seen: the server's digest once the stream ends
    wanted = args.bytes + DIGEST
    got = 0
    last_data = started
    next_sample = started
    fell_back = args.tcp
    try:
        sock.connect((args.server, args.port))
        sock.sendall(f"{args.bytes}\n".encode())
        while got < wanted:
            data = sock.recv(min(1 << 20, wanted - got))
            now = time.monotonic()
            if not data:
                raise OSError(f"the server closed after {got} of {wanted} bytes")
            result["max_gap_s"] = max(result["max_gap_s"], now - last_data)
            last_data = now
            payload_left = max(0, args.bytes - got)
            digest.update(data[:payload_left])
            tail = (tail + data[payload_left:])[-DIGEST:] if len(data) > payload_left else tail
            got += len(data)
            if not args.tcp and now >= next_sample:
                subflows, fell_back = mptcp_info(sock)
                result["subflows_max"] = max(result["subflows_max"], subflows)
                next_sample = now + 0.2
        result["sha256_ok"] = tail == digest.digest()
    except OSError as err:
        result["error"] = str(err) or type(err).__name__
    finally:
        result["seconds"] = round(time.monotonic() - started, 3)
        result["bytes"] = min(got, args.bytes)
        result["mptcp"] = not fell_back
        result["max_gap_s"] = round(result["max_gap_s"], 3)
        sock.close()
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    server = sub.add_parser("server")
    server.add_argument("--host", default="0.0.0.0")
    server.add_argument("--port", type=int, default=8444)
    client = sub.add_parser("client")
    client.add_argument("--server", required=True)
    client.add_argument("--port", type=int, default=8444)
    client.add_argument("--bytes", type=int, required=True)
    client.add_argument("--tcp", action="store_true", help="plain TCP instead of MPTCP")
    client.add_argument("--bind", help="source address")
    client.add_argument("--stall-timeout", type=float, default=30.0, help="seconds without data before giving up")
    args = parser.parse_args()
    if args.mode == "server":
        serve(args)
        return 0
    return download(args)


if __name__ == "__main__":
    sys.exit(main())
