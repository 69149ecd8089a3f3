#!/usr/bin/env python3
"""Start-up of `neurite run` to the first 200 on /versions: on a fresh data folder (creating
the database and the node key) and on an existing one (a phone app's every launch).

Usage: bench/profile/startup.py PATH_TO_NEURITE   (7 starts of each kind, medians; loopback,
mDNS off)
"""
import http.client, socket, subprocess, sys, tempfile, time, statistics
if len(sys.argv) < 2:
    sys.exit(__doc__)
b=sys.argv[1]
def one(d):
    s=socket.socket(); s.bind(("127.0.0.1",0)); port=s.getsockname()[1]; s.close()
    t0=time.perf_counter()
    p=subprocess.Popen([b,"run","--data-dir",d,"--client-addr",f"127.0.0.1:{port}","--registration","open","--no-mdns","--p2p-listen","/ip4/127.0.0.1/tcp/0"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    while True:
        try:
            c=http.client.HTTPConnection("127.0.0.1",port,timeout=5); c.request("GET","/_matrix/client/versions")
            if c.getresponse().status==200: break
        except OSError: time.sleep(0.0005)
    ms=(time.perf_counter()-t0)*1000; p.terminate(); p.wait(); return ms
fresh=[one(tempfile.mkdtemp()) for _ in range(7)]
d=tempfile.mkdtemp(); one(d)
again=[one(d) for _ in range(7)]
print(f"start-up, fresh data folder:    median {statistics.median(fresh):.1f} ms")
print(f"start-up, existing data folder: median {statistics.median(again):.1f} ms")
