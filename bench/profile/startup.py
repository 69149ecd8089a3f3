#!/usr/bin/env python3
"""Start-up of `neurite run` to the first 200 on /versions: on a fresh data folder (creating
the database and the node key) and on an existing one (a phone app's every launch).

Usage: bench/profile/startup.py PATH_TO_NEURITE   (7 starts of each kind, medians; loopback,
mDNS off)
"""
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from quick_figures import start_node, stop_node  # noqa: E402


def one(binary, data, keep=False):
    proc, _, ms = start_node(binary, data)
    stop_node(proc)
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
    return ms


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    fresh = [one(binary, tempfile.mkdtemp(prefix="neurite-start-")) for _ in range(7)]
    data = tempfile.mkdtemp(prefix="neurite-start-")
    one(binary, data, keep=True)
    again = [one(binary, data, keep=True) for _ in range(7)]
    shutil.rmtree(data, ignore_errors=True)
    print(f"start-up, fresh data folder:    median {statistics.median(fresh):.1f} ms")
    print(f"start-up, existing data folder: median {statistics.median(again):.1f} ms")


if __name__ == "__main__":
    main()
