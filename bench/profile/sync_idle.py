#!/usr/bin/env python3
"""Incremental /sync latency and idle CPU of `neurite` nodes, for profiling work.

Usage: bench/profile/sync_idle.py PATH_TO_NEURITE [--rooms 100] [--messages 100]
                                  [--syncs 200] [--idle 60] [--skip-sync] [--skip-idle]
                                  [--filter]

  * incremental /sync: one user in ROOMS rooms of MESSAGES messages each; after an initial
    sync, SYNCS rounds of "send one message into a room, then /sync?since=…&timeout=0";
    the latency of the sync is recorded (median, p95). An empty incremental sync (nothing
    new, timeout=0) is measured the same way. --filter sends the load generator's inline
    filter (timeline limit 10) with every sync, as bench/loadgen.py does.
  * idle CPU: utime+stime of the process (from /proc/PID/stat) over IDLE seconds of a node
    doing nothing (mDNS off), then the same for one node of a connected pair.

Sync latency includes Python's http.client on one keep-alive connection. Loopback only.
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from quick_figures import stop_node as stop  # noqa: E402


def arg(name, default):
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def start(binary, extra=()):
    data = tempfile.mkdtemp(prefix="neurite-prof-")
    p = subprocess.Popen(
        [binary, "run", "--data-dir", data, "--client-addr", "127.0.0.1:0",
         "--registration", "open", "--insecure-fast-passwords", "--no-mdns",
         "--p2p-listen", "/ip4/127.0.0.1/tcp/0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(p.stdout.readline())
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    u = urllib.parse.urlparse(info["client_url"])
    return p, (u.hostname, u.port), info


class Client:
    def __init__(self, addr):
        self.conn = http.client.HTTPConnection(*addr, timeout=60)
        self.token = None

    def call(self, method, path, body=None):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        self.conn.request(method, "/_matrix/client/v3" + path,
                          json.dumps(body) if body is not None else None, h)
        r = self.conn.getresponse()
        d = json.loads(r.read() or b"null")
        if r.status != 200:
            sys.exit(f"{method} {path}: {r.status} {d}")
        return d


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def summary(xs):
    xs = sorted(xs)
    return (f"median {statistics.median(xs):.3f} ms, "
            f"p95 {xs[min(len(xs) - 1, int(0.95 * len(xs)))]:.3f} ms")


def sync_figures(binary):
    rooms, messages, syncs = arg("--rooms", 100), arg("--messages", 100), arg("--syncs", 200)
    p, addr, _ = start(binary)
    try:
        c = Client(addr)
        c.token = c.call("POST", "/register", {"username": "bench", "password": "pw",
                                               "auth": {"type": "m.login.dummy"}})["access_token"]
        ids = []
        n = 0
        for r in range(rooms):
            room = c.call("POST", "/createRoom", {"name": f"room {r}"})["room_id"]
            ids.append(room)
            for m in range(messages):
                n += 1
                c.call("PUT", f"/rooms/{room}/send/m.room.message/t{n}",
                       {"msgtype": "m.text", "body": f"message {m}"})
        flt = ""
        if "--filter" in sys.argv:
            flt = "&filter=" + urllib.parse.quote('{"room":{"timeline":{"limit":10}}}')
        t = time.perf_counter()
        since = c.call("GET", f"/sync?timeout=0{flt}")["next_batch"]
        initial = (time.perf_counter() - t) * 1000
        one, empty = [], []
        for i in range(syncs):
            n += 1
            c.call("PUT", f"/rooms/{ids[i % len(ids)]}/send/m.room.message/t{n}",
                   {"msgtype": "m.text", "body": f"new {i}"})
            t = time.perf_counter()
            since = c.call("GET", f"/sync?timeout=0&since={since}{flt}")["next_batch"]
            one.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            since = c.call("GET", f"/sync?timeout=0&since={since}{flt}")["next_batch"]
            empty.append((time.perf_counter() - t) * 1000)
        print(f"initial /sync ({rooms} rooms x {messages} messages): {initial:.1f} ms")
        print(f"incremental /sync, one new message: {summary(one)}")
        print(f"incremental /sync, nothing new:     {summary(empty)}")
    finally:
        stop(p)


def idle_figures(binary):
    idle = arg("--idle", 60)
    a, _, info = start(binary)
    try:
        time.sleep(2)
        c0 = cpu_ms(a.pid)
        time.sleep(idle)
        print(f"idle CPU, lone node: {cpu_ms(a.pid) - c0:.0f} ms over {idle} s")
        b, _, _ = start(binary, ["--peer", info["p2p_addrs"][0]])
        try:
            time.sleep(2)
            a0, b0 = cpu_ms(a.pid), cpu_ms(b.pid)
            time.sleep(idle)
            print(f"idle CPU, connected pair: A {cpu_ms(a.pid) - a0:.0f} ms, "
                  f"B {cpu_ms(b.pid) - b0:.0f} ms over {idle} s")
        finally:
            stop(b)
    finally:
        stop(a)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if "--skip-sync" not in sys.argv:
        sync_figures(sys.argv[1])
    if "--skip-idle" not in sys.argv:
        idle_figures(sys.argv[1])


if __name__ == "__main__":
    main()
