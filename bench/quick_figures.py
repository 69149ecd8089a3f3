#!/usr/bin/env python3
"""Quick figures for one Neurite node: start-up time, idle RSS, /send latency.

Usage: bench/quick_figures.py PATH_TO_NEURITE_BINARY [--sends N]

Starts `neurite run` on a free loopback port in a temporary data directory, measures
  * start-up: from spawning the process to the first 200 on /_matrix/client/versions,
  * idle RSS: VmRSS of the process 2 s after start-up, with nothing happening,
  * PUT /send latency: N sequential sends over one keep-alive connection (client overhead
    of Python's http.client included), median / p95 / p99,
  * RSS after the sends,
and prints them. Only loopback traffic; the node is stopped at the end.
"""
import http.client
import socket
import json
import shutil
import os
import statistics
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_node(binary, data):
    """Starts `neurite run` on a free loopback port with `data` as its data folder and waits
    (30 s at most) for the first 200 on /versions. Returns (process, port, start-up in ms)."""
    # Find a free port first so start-up can be timed against a known address.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "run", "--data-dir", data, "--client-addr", f"127.0.0.1:{port}",
         "--registration", "open", "--insecure-fast-passwords", "--no-mdns",
         "--p2p-listen", "/ip4/127.0.0.1/tcp/0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = t0 + 30
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/_matrix/client/versions")
            if c.getresponse().status == 200:
                return proc, port, (time.perf_counter() - t0) * 1000
        except OSError:
            pass
        if time.perf_counter() > deadline:
            stop_node(proc)
            sys.exit("node did not answer within 30 s")
        time.sleep(0.0005)


def stop_node(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    sends = int(sys.argv[sys.argv.index("--sends") + 1]) if "--sends" in sys.argv else 1000
    data = tempfile.mkdtemp(prefix="neurite-bench-")
    proc, port, startup_ms = start_node(binary, data)
    try:
        time.sleep(2)
        idle_rss = rss_kib(proc.pid)

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def call(method, path, body=None, token=None):
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = conn.getresponse()
            payload = json.loads(r.read() or b"null")
            if r.status != 200:
                sys.exit(f"{method} {path}: {r.status} {payload}")
            return payload

        reg = call("POST", "/_matrix/client/v3/register",
                   {"username": "bench", "password": "pw", "auth": {"type": "m.login.dummy"}})
        token = reg["access_token"]
        room = call("POST", "/_matrix/client/v3/createRoom", {"name": "bench"}, token)["room_id"]
        latencies = []
        for i in range(sends):
            t = time.perf_counter()
            call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/b{i}",
                 {"msgtype": "m.text", "body": f"message {i}"}, token)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
        busy_rss = rss_kib(proc.pid)
        print(f"start-up to first /versions 200: {startup_ms:.1f} ms")
        print(f"idle RSS after start-up:         {idle_rss / 1024:.1f} MiB")
        print(f"PUT /send over {sends} sends:      median {statistics.median(latencies):.3f} ms, "
              f"p95 {q(0.95):.3f} ms, p99 {q(0.99):.3f} ms")
        print(f"RSS after the sends:             {busy_rss / 1024:.1f} MiB")
    finally:
        stop_node(proc)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
