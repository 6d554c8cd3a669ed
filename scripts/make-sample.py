#!/usr/bin/env python3
"""Builds assets/sample/catalog.jsonl.gz: a small, deterministic, stratified subset of
the arXiv catalogue, embedded in the castwork binary and imported on first start.

Every one of the 8 groups is represented: each gets min(its size, FLOOR) items, and
the rest of the TARGET is shared in proportion to what each group has beyond that
(so Computer Science gets most of it). Within a group, items are sorted by id and
taken at evenly spaced positions, so the same input always gives the same output.
Lines are written unchanged, in the catalogue's order (published_at, then id), and
the gzip header carries no file name and mtime 0, so the output is byte-for-byte
reproducible.

Usage: scripts/make-sample.py [SOURCE] [DEST]
  SOURCE defaults to assets/arxiv/catalog.jsonl.gz (relative to the repository root)
  DEST   defaults to assets/sample/catalog.jsonl.gz (relative to the repository root)
"""

import gzip
import io
import json
import sys
from collections import defaultdict
from pathlib import Path

TARGET = 2000
FLOOR = 60

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "arxiv" / "catalog.jsonl.gz"
DEST = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "assets" / "sample" / "catalog.jsonl.gz"


def evenly(ids, count):
    """`count` ids at evenly spaced positions of the sorted `ids`."""
    ids = sorted(ids)
    if count >= len(ids):
        return ids
    return [ids[(i * len(ids)) // count] for i in range(count)]


def quotas(sizes):
    """Items to take per group: a floor each, the rest proportional to what is left."""
    base = {g: min(n, FLOOR) for g, n in sizes.items()}
    budget = TARGET - sum(base.values())
    extra = {g: n - base[g] for g, n in sizes.items()}
    total_extra = sum(extra.values())
    if budget <= 0 or total_extra == 0:
        return base
    shares = {g: (budget * e) // total_extra for g, e in extra.items()}
    # Hand out what integer division left over, largest remainders first (ties by name).
    left = budget - sum(shares.values())
    order = sorted(extra, key=lambda g: (-((budget * extra[g]) % total_extra), g))
    for g in order[:left]:
        shares[g] += 1
    return {g: base[g] + min(shares[g], extra[g]) for g in sizes}


def main():
    lines = []
    by_group = defaultdict(list)
    with gzip.open(SOURCE, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            item = json.loads(raw)
            lines.append((item["id"], raw if raw.endswith(b"\n") else raw + b"\n"))
            by_group[item["group"]].append(item["id"])

    sizes = {g: len(ids) for g, ids in by_group.items()}
    chosen = set()
    for group, count in sorted(quotas(sizes).items()):
        picked = evenly(by_group[group], count)
        chosen.update(picked)
        print(f"{group}: {len(picked)} of {sizes[group]}", file=sys.stderr)

    out = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that varies.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        for item_id, raw in lines:
            if item_id in chosen:
                gz.write(raw)
    DEST.parent.mkdir(parents=True, exist_ok=True)
    DEST.write_bytes(out.getvalue())
    print(f"wrote {len(chosen)} items to {DEST} ({len(out.getvalue())} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
