#!/usr/bin/env python3
"""Live heap per added viewer from two `heaptrack_print --print-leaks` reports (scripts/bench-heap).

Usage: heap.py ONE.txt MANY.txt N. Sites are keyed by the call stack's first library frames and
first mediamesh frames; a site's bytes with N more viewers, less its bytes with one, over N, is
what each viewer holds there.
"""
import re
import sys
from collections import defaultdict

HEAD = re.compile(r"^([\d.]+)([KMG]?)B? leaked over (\d+) calls from:")
SCALE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def sites(path):
    lines = open(path).read().split("\n")
    out = defaultdict(float)
    for i, line in enumerate(lines):
        m = HEAD.match(line)
        if not m:
            continue
        frames = []
        for nxt in lines[i + 1 : i + 400]:
            if "leaked over" in nxt:
                break
            s = nxt.strip()
            if s.startswith("at "):
                frames.append(s[3:])
        ours = [f for f in frames if f.startswith(("crates/", "src/cli", "src/main"))][:2]
        lib = [re.sub(r"^.*index\.crates\.io-[0-9a-f]+/", "", f) for f in frames if "registry" in f][:1]
        out[(" | ".join(lib), " <- ".join(ours))] += float(m.group(1)) * SCALE[m.group(2)]
    return out


def main():
    one, many, n = sites(sys.argv[1]), sites(sys.argv[2]), int(sys.argv[3])
    rows, frames = [], 0.0
    for key in set(one) | set(many):
        per = (many.get(key, 0) - one.get(key, 0)) / n
        if key[1].startswith("crates/tunnel"):
            # The frames in the log: their buffers vary with the moment, not with viewers.
            frames += per
        elif per >= 16:
            rows.append((per, key))
    rows.sort(reverse=True)
    print("live heap per added viewer, by site (>= 16 B):")
    for per, (lib, ours) in rows:
        print(f"{per:8.0f} B  {ours or '(runtime)'}  [{lib}]")
    print(f"{sum(p for p, _ in rows):8.0f} B  in all")
    print(f"(frame buffers differed by {frames * n / 1e3:.0f} KB between the two moments; not counted)")


main()
