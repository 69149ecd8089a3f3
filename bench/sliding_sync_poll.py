#!/usr/bin/env python3
"""Latency of an idle incremental simplified sliding sync poll, by room count.

Usage:

    bench/sliding_sync_poll.py PATH_TO_NEURITE [--rooms 10,100,1000] [--polls 200]

For each room count, starts a fresh node, registers one user, creates that many named rooms
through the client API, does an initial sliding sync with a room list (range 0-19, timeline
limit 1, the to-device, e2ee, account data, receipts and typing extensions on, as
matrix-rust-sdk asks), then times idle incremental polls (`timeout=0`, nothing changed, each
from the previous `pos`) over one kept-alive connection. Prints median and p95 per room count.
"""
import http.client, json, shutil, statistics, subprocess, sys, tempfile, threading, time, urllib.parse

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default

def start(binary, data):
    p = subprocess.Popen([binary, "run", "--data-dir", data, "--client-addr", "127.0.0.1:0",
                          "--registration", "open", "--insecure-fast-passwords", "--no-mdns",
                          "--p2p-listen", "/ip4/127.0.0.1/tcp/0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(p.stdout.readline())
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    u = urllib.parse.urlparse(info["client_url"])
    return p, http.client.HTTPConnection(u.hostname, u.port, timeout=120)

def call(conn, method, path, token=None, body=None):
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body) if body is not None else None, h)
    r = conn.getresponse(); d = json.loads(r.read() or b"null")
    if r.status != 200: raise SystemExit(f"{method} {path}: {r.status} {d}")
    return d

BODY = {
    "lists": {"all": {"ranges": [[0, 19]], "timeline_limit": 1,
                      "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]]}},
    "extensions": {k: {"enabled": True} for k in ("to_device", "e2ee", "account_data", "receipts", "typing")},
}

def measure(binary, rooms, polls):
    data = tempfile.mkdtemp(prefix="neurite-ssbench-")
    p, conn = start(binary, data)
    try:
        reg = call(conn, "POST", "/_matrix/client/v3/register",
                   body={"username": "bench", "password": "pw", "auth": {"type": "m.login.dummy"}})
        token = reg["access_token"]
        t0 = time.perf_counter()
        for i in range(rooms):
            call(conn, "POST", "/_matrix/client/v3/createRoom", token, {"name": f"room {i}"})
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = call(conn, "POST", PATH + "?timeout=0", token, BODY)
        initial = time.perf_counter() - t0
        count = first["lists"]["all"]["count"]
        assert count == rooms, (count, rooms)
        pos = first["pos"]
        # One poll to settle anything the initial response left for later.
        pos = call(conn, "POST", f"{PATH}?timeout=0&pos={urllib.parse.quote(pos)}", token, BODY)["pos"]
        times = []
        for _ in range(polls):
            t0 = time.perf_counter()
            resp = call(conn, "POST", f"{PATH}?timeout=0&pos={urllib.parse.quote(pos)}", token, BODY)
            times.append((time.perf_counter() - t0) * 1000)
            assert not resp.get("rooms"), f"an idle poll carried rooms: {list(resp['rooms'])[:3]}"
            pos = resp["pos"]
        times.sort()
        return setup, initial * 1000, statistics.median(times), times[int(len(times) * 0.95) - 1]
    finally:
        p.terminate(); p.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)

def main():
    if len(sys.argv) < 2: raise SystemExit(__doc__)
    binary = sys.argv[1]
    counts = [int(n) for n in arg("--rooms", "10,100,1000").split(",")]
    polls = int(arg("--polls", "200"))
    print(f"{'rooms':>6} {'create (s)':>10} {'initial (ms)':>12} {'idle median (ms)':>16} {'idle p95 (ms)':>13}")
    for n in counts:
        setup, initial, med, p95 = measure(binary, n, polls)
        print(f"{n:>6} {setup:>10.1f} {initial:>12.1f} {med:>16.2f} {p95:>13.2f}", flush=True)

if __name__ == "__main__":
    main()
