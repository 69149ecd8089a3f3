#!/usr/bin/env python3
"""Federation figures for two `neurite` nodes on loopback.

Usage (as root, so the pair gets a private network namespace and its loopback counters
count only the pair's traffic):

    bench/federation.py PATH_TO_NEURITE [--messages 200] [--missed 1000] [--idle 60]

Prints
  * delivery latency A->B: for each message, time from PUT /send on A until B's long-polling
    /sync returns it (sequential messages; median and p95),
  * catch-up: B stopped, A's user sends N messages, B restarted: time from spawning B until
    B's /sync has the last one (whatever delivered it: A's outbox or B's catch-up),
  * idle traffic of the connected pair: bytes and packets on the namespace's loopback over
    the idle window (/proc/net/dev), i.e. everything both nodes sent, TCP/ACKs included.
"""
import http.client, json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.parse

def arg(name, default):
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default

def start(binary, data, extra):
    p = subprocess.Popen([binary, "run", "--data-dir", data, "--client-addr", "127.0.0.1:0",
                          "--registration", "open", "--insecure-fast-passwords", "--no-mdns",
                          "--p2p-listen", "/ip4/127.0.0.1/tcp/0"] + extra,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(p.stdout.readline())
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    u = urllib.parse.urlparse(info["client_url"])
    return p, (u.hostname, u.port), info

def call(addr, method, path, token=None, body=None, timeout=60):
    c = http.client.HTTPConnection(*addr, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = "Bearer " + token
    c.request(method, "/_matrix/client/v3" + path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse(); d = json.loads(r.read() or b"null"); c.close()
    return d

def register(addr, name):
    d = call(addr, "POST", "/register", body={"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}})
    return d["user_id"], d["access_token"]

def login(addr, name):
    d = call(addr, "POST", "/login", body={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "pw"})
    return d["access_token"]

FILTER = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 2000}}}))

def sync(addr, token, since, timeout_ms=30000):
    q = f"/sync?timeout={timeout_ms}&filter={FILTER}" + (f"&since={urllib.parse.quote(since)}" if since else "")
    return call(addr, "GET", q, token)

def bodies(s, room):
    return [e.get("content", {}).get("body") for e in s["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", [])]

def until(addr, token, since, pred, limit=120):
    end = time.time() + limit
    while time.time() < end:
        s = sync(addr, token, since, 1000)
        if pred(s): return s
        since = s["next_batch"]
    raise SystemExit("condition not met")

def lo_counters():
    for line in open("/proc/net/dev"):
        if line.strip().startswith("lo:"):
            f = line.split(":")[1].split()
            return int(f[0]), int(f[1])
    return 0, 0

def in_private_namespace():
    """As root, runs this script again inside a network namespace of its own (loopback only),
    so nothing leaves it and its loopback counters count only its nodes; returns there."""
    if os.geteuid() == 0 and "NEURITE_BENCH_NS" not in os.environ:
        ns = f"nbench{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            env = dict(os.environ, NEURITE_BENCH_NS=ns)
            sys.exit(subprocess.run(["ip", "netns", "exec", ns, sys.executable] + sys.argv, env=env).returncode)
        finally:
            subprocess.run(["ip", "netns", "del", ns])

def main():
    if len(sys.argv) < 2: sys.exit(__doc__)
    in_private_namespace()
    binary = os.path.abspath(sys.argv[1])
    n, missed, idle = arg("--messages", 200), arg("--missed", 1000), arg("--idle", 60)
    da, db = tempfile.mkdtemp(), tempfile.mkdtemp()
    pb, b, ib = start(binary, db, [])
    pa, a, ia = start(binary, da, ["--peer", ib["p2p_addrs"][0]])
    procs = [pa, pb]
    try:
        alice, ta = register(a, "alice"); bob, tb = register(b, "bob")
        room = call(a, "POST", "/createRoom", ta, {"preset": "private_chat"})["room_id"]
        r = urllib.parse.quote(room, safe="")
        call(a, "POST", f"/rooms/{r}/invite", ta, {"user_id": bob})
        s = until(b, tb, None, lambda s: room in s["rooms"]["invite"])
        call(b, "POST", f"/join/{r}", tb, {})
        since = until(b, tb, s["next_batch"], lambda s: room in s["rooms"]["join"])["next_batch"]
        until(a, ta, None, lambda s: s["rooms"]["join"].get(room, {}).get("summary", {}).get("m.joined_member_count") == 2)
        lat = []
        for i in range(n):
            body = f"latency {i}"; out = {}
            def poll():
                nonlocal since
                while True:
                    s = sync(b, tb, since)
                    since = s["next_batch"]
                    if body in bodies(s, room): out["t"] = time.perf_counter(); return
            t = threading.Thread(target=poll); t.start()
            time.sleep(0.005)  # let the long-poll reach the server before sending
            t0 = time.perf_counter()
            call(a, "PUT", f"/rooms/{r}/send/m.room.message/l{i}", ta, {"msgtype": "m.text", "body": body})
            t.join(60)
            lat.append((out["t"] - t0) * 1000)
        lat.sort()
        print(f"delivery A->B over {n} messages: median {statistics.median(lat):.2f} ms, p95 {lat[int(len(lat) * 0.95) - 1]:.2f} ms")
        if "NEURITE_BENCH_NS" in os.environ:
            time.sleep(2)
            b0, p0 = lo_counters(); time.sleep(idle); b1, p1 = lo_counters()
            print(f"idle pair over {idle} s: {b1 - b0} bytes, {p1 - p0} packets on loopback (both directions, both nodes)")
        else:
            print("idle traffic: skipped (needs root for a private network namespace)")
        pb.terminate(); pb.wait(10)
        for i in range(missed):
            call(a, "PUT", f"/rooms/{r}/send/m.room.message/m{i}", ta, {"msgtype": "m.text", "body": f"missed {i}"})
        last = f"missed {missed - 1}"
        t0 = time.perf_counter()
        pb, b, ib = start(binary, db, ["--peer", ia["p2p_addrs"][0]])
        procs.append(pb)
        tb = login(b, "bob")
        until(b, tb, since, lambda s: last in bodies(s, room))
        print(f"catch-up of {missed} missed messages: {time.perf_counter() - t0:.2f} s from restarting B to B's /sync holding the last")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try: p.wait(10)
            except Exception: p.kill()

if __name__ == "__main__":
    main()
