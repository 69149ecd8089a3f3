#!/usr/bin/env python3
"""Fan-out in a room shared by many servers: how long one message takes to reach the last.

Usage (as root, so the nodes get a private network namespace):

    bench/fanout.py PATH_TO_NEURITE [--nodes 10] [--messages 20] [--seed 1]

Starts N `neurite` nodes on loopback (mDNS off), each given one or two earlier nodes as static
peers (a random tree, from the seed), one user per node, all in one room. Then, one message at
a time, a sender (round robin) sends and every other node long-polls /sync for it. Prints, over
the messages, the median and worst time from PUT /send until the last of the other N-1 nodes
has it, and the median time to the first.
"""
import os, random, statistics, sys, tempfile, threading, time, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from federation import arg, bodies, call, in_private_namespace, register, start, sync, until  # noqa: E402

def main():
    if len(sys.argv) < 2: sys.exit(__doc__)
    in_private_namespace()
    binary = os.path.abspath(sys.argv[1])
    n, messages, seed = arg("--nodes", 10), arg("--messages", 20), arg("--seed", 1)
    rng = random.Random(seed)
    procs, nodes, infos = [], [], []
    try:
        for i in range(n):
            peers = []
            for j in sorted(set(rng.sample(range(i), min(i, rng.choice([1, 2]))))):
                peers += ["--peer", infos[j]["p2p_addrs"][0]]
            p, addr, info = start(binary, tempfile.mkdtemp(), peers)
            procs.append(p); nodes.append(addr); infos.append(info)
        users = [register(addr, f"user{i}") for i, addr in enumerate(nodes)]
        room = call(nodes[0], "POST", "/createRoom", users[0][1], {"preset": "private_chat"})["room_id"]
        r = urllib.parse.quote(room, safe="")
        since = [None] * n
        for i in range(1, n):
            call(nodes[0], "POST", f"/rooms/{r}/invite", users[0][1], {"user_id": users[i][0]})
            s = until(nodes[i], users[i][1], None, lambda s: room in s["rooms"]["invite"])
            call(nodes[i], "POST", f"/join/{r}", users[i][1], {})
            since[i] = until(nodes[i], users[i][1], s["next_batch"], lambda s: room in s["rooms"]["join"])["next_batch"]
        until(nodes[0], users[0][1], None,
              lambda s: s["rooms"]["join"].get(room, {}).get("summary", {}).get("m.joined_member_count") == n)
        since[0] = sync(nodes[0], users[0][1], None, 0)["next_batch"]
        last, first = [], []
        for m in range(messages):
            sender = m % n
            body = f"fan-out {m}"
            seen = {}
            def poll(i):
                while True:
                    s = sync(nodes[i], users[i][1], since[i])
                    since[i] = s["next_batch"]
                    if body in bodies(s, room):
                        seen[i] = time.perf_counter(); return
            threads = [threading.Thread(target=poll, args=(i,)) for i in range(n) if i != sender]
            for t in threads: t.start()
            time.sleep(0.05)  # let the long-polls reach the servers before sending
            t0 = time.perf_counter()
            call(nodes[sender], "PUT", f"/rooms/{r}/send/m.room.message/f{m}", users[sender][1],
                 {"msgtype": "m.text", "body": body})
            for t in threads: t.join(120)
            if len(seen) != n - 1: sys.exit(f"message {m} reached {len(seen)} of {n - 1} servers")
            times = sorted((v - t0) * 1000 for v in seen.values())
            first.append(times[0]); last.append(times[-1])
            # The sender's own sync moves on too.
            since[sender] = sync(nodes[sender], users[sender][1], since[sender], 0)["next_batch"]
        print(f"fan-out to {n - 1} other servers over {messages} messages: last server median "
              f"{statistics.median(last):.1f} ms, worst {max(last):.1f} ms; first server median "
              f"{statistics.median(first):.1f} ms")
    finally:
        for p in procs: p.terminate()
        for p in procs:
            try: p.wait(10)
            except Exception: p.kill()

if __name__ == "__main__":
    main()
