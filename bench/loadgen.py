#!/usr/bin/env python3
"""Load generator: the figures of the Synapse comparison, against any homeserver URL.

Usage:
    bench/loadgen.py run --name NAME --url http://127.0.0.1:PORT [--db FILE] [--pid PID]
                     [--quick] [--json OUT] [-- COMMAND ...]
    bench/loadgen.py table OUT.json [OUT.json ...]

`run` measures one server. With a COMMAND after `--`, it launches the server itself (on a
fresh data directory prepared by the caller), times start-up and stops it at the end; with
--pid it measures an already running process; with neither, the rows that need the process
(RSS, CPU) are left out. --db names the server's SQLite file, for the database size row.

Rows (sizes in brackets are the full run; --quick shrinks them):
  start-up        spawn to the first 200 on /_matrix/client/versions (polled every 0.5 ms)
  idle RSS        VmRSS 2 s after start-up
  register        POST /register, one account (dominated by the password hash; see README)
  send            PUT /send, [1000] sequential sends on one keep-alive connection
  db growth       logical SQLite size (page_count - freelist_count) before and after those
                  sends, per 1000 messages
  throughput      50 clients, each its own account and keep-alive connection, sending into
                  10 rooms at once, [40] messages each
  initial sync    GET /sync without `since` for a user in [100] rooms of [100] messages
                  (timeline limit 10), cold, repeated [5] times
  incremental     GET /sync?since=…&timeout=0 after one new message, [100] times
  back-pagination GET /messages?dir=b&limit=100 from the end of a [10,000]-event room to its
                  start, per page
  RSS after       VmRSS after all of the above, and VmHWM (peak)
  idle CPU        utime+stime (/proc/PID/stat) over [60] s with no requests, after the workload

Clients: sequential rows use Python's http.client on one keep-alive connection; concurrent
rows use a small asyncio HTTP/1.1 client, one keep-alive connection per simulated client.
Both servers get exactly the same client code, so client overhead is the same on both sides;
the throughput row also reports the client's own CPU time so a saturated client shows.
"""
import asyncio
import http.client
import json
import os
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")
FILTER = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 10}}}, separators=(",", ":")))

FULL = dict(sends=1000, clients=50, rooms=10, per_client=40, sync_rooms=100, sync_msgs=100,
            initial_reps=5, incr_reps=100, page_room=10000, page_limit=100, idle=60)
QUICK = dict(sends=200, clients=50, rooms=10, per_client=4, sync_rooms=20, sync_msgs=20,
             initial_reps=3, incr_reps=20, page_room=1000, page_limit=100, idle=10)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p * len(xs))) - 1))]


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted from the state field (3) after the comm.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def db_logical_bytes(path):
    """Size of the live database content, WAL included, whatever the checkpoint state."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page_size
    finally:
        c.close()


class Client:
    """One keep-alive connection, sequential requests."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=120)

    def call(self, method, path, body=None, token=None, ok=(200,)):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, data, headers)
                r = self.conn.getresponse()
                payload = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # A server may close an idle keep-alive connection; reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise
        doc = json.loads(payload or b"null")
        if r.status not in ok:
            raise SystemExit(f"{method} {path}: {r.status} {doc}")
        return r.status, doc


class AsyncClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (JSON bodies only)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def call(self, method, path, body=None, token=None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                "Content-Type: application/json", f"Content-Length: {len(data)}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        status = int((await self.reader.readline()).split()[1])
        length, chunked = None, False
        while True:
            line = (await self.reader.readline()).strip()
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            k = k.lower()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if chunked:
            payload = b""
            while True:
                n = int((await self.reader.readline()).split(b";")[0], 16)
                if n == 0:
                    await self.reader.readline()
                    break
                payload += await self.reader.readexactly(n)
                await self.reader.readline()
        else:
            payload = await self.reader.readexactly(length or 0)
        doc = json.loads(payload or b"null")
        if status != 200:
            raise SystemExit(f"{method} {path}: {status} {doc}")
        return doc

    def close(self):
        if self.writer is not None:
            self.writer.close()


def q(room):
    return urllib.parse.quote(room, safe="")


class Bench:
    def __init__(self, url, sizes):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.s = sizes
        self.c = Client(self.host, self.port)
        self.register_ms = []
        self.n = 0

    def register(self, name):
        body = {"username": name, "password": "bench-password-1",
                "auth": {"type": "m.login.dummy"}}
        t = time.perf_counter()
        status, doc = self.c.call("POST", "/_matrix/client/v3/register", body, ok=(200, 401))
        if status == 401:  # a server that wants the session first
            body["auth"]["session"] = doc["session"]
            status, doc = self.c.call("POST", "/_matrix/client/v3/register", body)
        self.register_ms.append((time.perf_counter() - t) * 1000)
        return doc["access_token"]

    def create_room(self, token, **extra):
        return self.c.call("POST", "/_matrix/client/v3/createRoom",
                           dict({"preset": "public_chat"}, **extra), token)[1]["room_id"]

    def send_path(self, room):
        self.n += 1
        return f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/t{self.n}"

    def fill(self, token, rooms, per_room, conns=8):
        """Puts per_room messages into each room, conns requests in flight (setup only)."""
        jobs = [(r, i) for i in range(per_room) for r in rooms]

        async def worker(k):
            ac = AsyncClient(self.host, self.port)
            try:
                for j in range(k, len(jobs), conns):
                    r, i = jobs[j]
                    await ac.call("PUT", self.send_path(r), {"msgtype": "m.text", "body": f"fill {i}"}, token)
            finally:
                ac.close()

        async def main():
            await asyncio.gather(*(worker(k) for k in range(conns)))

        asyncio.run(main())

    def sends(self, token, db):
        room = self.create_room(token, name="sends")
        before = db_logical_bytes(db) if db else None
        lat = []
        for i in range(self.s["sends"]):
            path = self.send_path(room)
            t = time.perf_counter()
            self.c.call("PUT", path, {"msgtype": "m.text", "body": f"message {i}"}, token)
            lat.append((time.perf_counter() - t) * 1000)
        out = {"send_median_ms": statistics.median(lat), "send_p95_ms": pct(lat, 0.95),
               "send_p99_ms": pct(lat, 0.99)}
        if db:
            out["db_kib_per_1000_msgs"] = (db_logical_bytes(db) - before) / 1024 * 1000 / self.s["sends"]
        return out

    def throughput(self):
        s = self.s
        tokens = [self.register(f"tp{i}") for i in range(s["clients"])]
        rooms = [self.create_room(tokens[0], name=f"tp{k}") for k in range(s["rooms"])]
        for i, tok in enumerate(tokens[1:], 1):
            self.c.call("POST", f"/_matrix/client/v3/join/{q(rooms[i % s['rooms']])}", {}, tok)
        lat = []

        async def client(i):
            ac = AsyncClient(self.host, self.port)
            room = rooms[i % s["rooms"]]
            try:
                for k in range(s["per_client"]):
                    path = self.send_path(room)
                    t = time.perf_counter()
                    await ac.call("PUT", path, {"msgtype": "m.text", "body": f"c{i} m{k}"}, tokens[i])
                    lat.append((time.perf_counter() - t) * 1000)
            finally:
                ac.close()

        async def main():
            await asyncio.gather(*(client(i) for i in range(s["clients"])))

        c0, t0 = os.times(), time.perf_counter()
        asyncio.run(main())
        wall = time.perf_counter() - t0
        c1 = os.times()
        total = s["clients"] * s["per_client"]
        return {"throughput_msgs_per_s": total / wall, "throughput_send_median_ms": statistics.median(lat),
                "throughput_client_cpu_pct": 100 * ((c1.user - c0.user) + (c1.system - c0.system)) / wall}

    def sync_rows(self):
        s = self.s
        tok = self.register("syncer")
        rooms = [self.create_room(tok, name=f"sync{k}") for k in range(s["sync_rooms"])]
        self.fill(tok, rooms, s["sync_msgs"])
        base = f"/_matrix/client/v3/sync?filter={FILTER}"
        init = []
        next_batch = None
        for _ in range(s["initial_reps"]):
            t = time.perf_counter()
            doc = self.c.call("GET", base, token=tok)[1]
            init.append((time.perf_counter() - t) * 1000)
            got = len(doc.get("rooms", {}).get("join", {}))
            if got != s["sync_rooms"]:
                raise SystemExit(f"initial sync holds {got} rooms, expected {s['sync_rooms']}")
            next_batch = doc["next_batch"]
        writer = Client(self.host, self.port)
        incr = []
        for i in range(s["incr_reps"]):
            writer.call("PUT", self.send_path(rooms[i % len(rooms)]), {"msgtype": "m.text", "body": f"new {i}"}, tok)
            t = time.perf_counter()
            doc = self.c.call("GET", f"{base}&timeout=0&since={q(next_batch)}", token=tok)[1]
            incr.append((time.perf_counter() - t) * 1000)
            if rooms[i % len(rooms)] not in doc.get("rooms", {}).get("join", {}):
                raise SystemExit("incremental sync misses the new message")
            next_batch = doc["next_batch"]
        return {"sync_initial_median_ms": statistics.median(init), "sync_initial_first_ms": init[0],
                "sync_incremental_median_ms": statistics.median(incr), "sync_incremental_p95_ms": pct(incr, 0.95)}

    def pagination(self):
        s = self.s
        tok = self.register("pager")
        room = self.create_room(tok, name="history")
        self.fill(tok, [room], s["page_room"])
        one = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 1}}}))
        doc = self.c.call("GET", f"/_matrix/client/v3/sync?filter={one}", token=tok)[1]
        frm = doc["rooms"]["join"][room]["timeline"]["prev_batch"]
        lat, seen = [], 0
        while True:
            t = time.perf_counter()
            page = self.c.call("GET", f"/_matrix/client/v3/rooms/{q(room)}/messages?dir=b&limit={s['page_limit']}&from={q(frm)}",
                               token=tok)[1]
            lat.append((time.perf_counter() - t) * 1000)
            seen += len(page.get("chunk", []))
            if not page.get("chunk") or not page.get("end"):
                break
            frm = page["end"]
        if seen < s["page_room"]:
            raise SystemExit(f"back-pagination returned {seen} events, expected at least {s['page_room']}")
        return {"messages_page_median_ms": statistics.median(lat), "messages_page_p95_ms": pct(lat, 0.95),
                "messages_pages": len(lat)}


def wait_ready(host, port, proc, deadline_s=120):
    t_end = time.perf_counter() + deadline_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering")
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", "/_matrix/client/versions")
            ok = c.getresponse().status == 200
            c.close()
            if ok:
                return
        except OSError:
            pass
        if time.perf_counter() > t_end:
            raise SystemExit("server did not answer /versions in time")
        time.sleep(0.0005)


def run(argv):
    cmd = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]

    def opt(name, default=None):
        return argv[argv.index(name) + 1] if name in argv else default

    name, url, db = opt("--name", "server"), opt("--url"), opt("--db")
    if not url:
        sys.exit(__doc__)
    sizes = dict(QUICK if "--quick" in argv else FULL)
    for k in sizes:  # every size can be overridden, e.g. --idle 30
        if f"--{k.replace('_', '-')}" in argv:
            sizes[k] = int(opt(f"--{k.replace('_', '-')}"))
    u = urllib.parse.urlparse(url)
    res = {"name": name, "sizes": sizes}
    proc, pid = None, int(opt("--pid")) if opt("--pid") else None
    if cmd:
        log(f"[{name}] launching: {' '.join(shlex.quote(c) for c in cmd)}")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(opt("--log", os.devnull), "w"))
        pid = proc.pid
        wait_ready(u.hostname, u.port, proc)
        res["startup_ms"] = (time.perf_counter() - t0) * 1000
    else:
        wait_ready(u.hostname, u.port, None, 10)
    try:
        if pid:
            time.sleep(2)
            res["idle_rss_mib"] = proc_status(pid, "VmRSS") / 1024
        b = Bench(url, sizes)
        steps = [("send", lambda: b.sends(b.register("sender"), db)), ("throughput", b.throughput),
                 ("sync", b.sync_rows), ("pagination", b.pagination)]
        for label, step in steps:
            t = time.perf_counter()
            res.update(step())
            log(f"[{name}] {label} done in {time.perf_counter() - t:.1f} s")
        res["register_median_ms"] = statistics.median(b.register_ms)
        if pid:
            res["rss_after_mib"] = proc_status(pid, "VmRSS") / 1024
            res["peak_rss_mib"] = proc_status(pid, "VmHWM") / 1024
            b.c.conn.close()
            time.sleep(2)
            c0 = cpu_seconds(pid)
            time.sleep(sizes["idle"])
            res["idle_cpu_ms_per_min"] = (cpu_seconds(pid) - c0) * 1000 * 60 / sizes["idle"]
        if db:
            res["db_total_mib"] = db_logical_bytes(db) / 1024 / 1024
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = json.dumps(res, indent=1)
    if opt("--json"):
        with open(opt("--json"), "w") as f:
            f.write(text)
    print(text)


ROWS = [  # key, label, unit, lower is better
    ("startup_ms", "start-up to /versions 200", "ms", True),
    ("idle_rss_mib", "idle RSS after start", "MiB", True),
    ("register_median_ms", "register one account (median)", "ms", True),
    ("send_median_ms", "PUT /send median", "ms", True),
    ("send_p95_ms", "PUT /send p95", "ms", True),
    ("send_p99_ms", "PUT /send p99", "ms", True),
    ("throughput_msgs_per_s", "throughput, 50 clients / 10 rooms", "msg/s", False),
    ("throughput_send_median_ms", "  send median under that load", "ms", True),
    ("throughput_client_cpu_pct", "  (load generator CPU during it)", "%", None),
    ("sync_initial_first_ms", "initial /sync, first (cold)", "ms", True),
    ("sync_initial_median_ms", "initial /sync, median", "ms", True),
    ("sync_incremental_median_ms", "incremental /sync median", "ms", True),
    ("sync_incremental_p95_ms", "incremental /sync p95", "ms", True),
    ("messages_page_median_ms", "/messages page of 100, median", "ms", True),
    ("messages_page_p95_ms", "/messages page of 100, p95", "ms", True),
    ("db_kib_per_1000_msgs", "database growth per 1000 messages", "KiB", True),
    ("db_total_mib", "database after the workload", "MiB", True),
    ("rss_after_mib", "RSS after the workload", "MiB", True),
    ("peak_rss_mib", "peak RSS (VmHWM)", "MiB", True),
    ("idle_cpu_ms_per_min", "idle CPU after the workload", "ms/min", True),
]


def table(paths):
    """Median of each row over the runs of each server; ratio = Synapse / Neurite for rows
    where lower is better (so > 1 means Neurite is better), Neurite / Synapse for throughput."""
    runs = [json.load(open(p)) for p in paths]
    names = []
    for r in runs:
        if r["name"] not in names:
            names.append(r["name"])
    if len(names) != 2:
        sys.exit(f"expected two servers, got {names}")
    a, b = names
    sizes = runs[0]["sizes"]
    reps = {n: sum(1 for r in runs if r["name"] == n) for n in names}
    print(f"runs: {reps[a]} x {a}, {reps[b]} x {b} (median of runs); sizes: "
          + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    print(f"| row | {a} | {b} | {b}/{a} |")
    print("|---|---:|---:|---:|")

    def med(n, k):
        xs = [r[k] for r in runs if r["name"] == n and k in r]
        return statistics.median(xs) if xs else None

    for key, label, unit, lower in ROWS:
        x, y = med(a, key), med(b, key)
        if x is None and y is None:
            continue
        fmt = lambda v: "n/a" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}")
        ratio = "" if (x is None or y is None or not x or lower is None) else f"{y / x:.2f}"
        print(f"| {label} ({unit}) | {fmt(x)} | {fmt(y)} | {ratio} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "table":
        table(sys.argv[2:])
    else:
        sys.exit(__doc__)
