"""`embodied bench hybrid`: the hybrid memory's experience pool (Optimus-1's AMEP) at scale.

A pool of `entries` cases (half successes, half failures, of four kinds) is written to a fresh
SQLite store in a temporary folder, then timed:
- `retrieve` (k = 8) of random queries, without and with a kind filter;
- the baseline, measured in the same run: the brute-force cosine alone (a matrix of as many unit
  256-d rows as one outcome holds, times a query, then the top 8), the floor under `retrieve`;
- loading the index of the entries from the store (a new `ExperiencePool`), before the last 200;
- one `add` of those last 200 (its own WAL transaction, and the index grown by one row), every other
  one with four 64 x 64 key frames of random pixels (incompressible: the worst case of the frames a
  case keeps in the apartment world);
- one `KeyFrames.push` of a 64 x 64 frame, what the apartment agent pays per env step.
Run it on one thread for the per-core figure: `OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1` (numpy's
BLAS sizes its pool at import); the JSON records those variables.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from embodied.config import provenance
from embodied.memory.hybrid.frames import KeyFrames
from embodied.memory.hybrid.pool import FEATURE_DIM, ExperiencePool, features
from embodied.memory.hybrid.store import MemoryStore

KINDS = ("fetch", "make", "reflect", "task")
WORDS = {"item": [f"item{i}" for i in range(60)], "context": ["tidy", "after a party", "moving day"],
         "room": ["kitchen", "living room", "bedroom", "bathroom", "study", "garage"],
         "reason": ["stuck", "locked", "absent", "missing"]}


def _fields(rng: np.random.Generator) -> dict:
    return {"subgoal": str(rng.choice(["obtain", "fetch", "make", "open"])), "item": str(rng.choice(WORDS["item"])),
            "context": str(rng.choice(WORDS["context"])), "room": str(rng.choice(WORDS["room"])),
            "reason": str(rng.choice(WORDS["reason"])), "inventory": [str(w) for w in rng.choice(WORDS["item"], 3)]}


def _ms(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000.0
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "n": len(a)}


def bench_hybrid(out: str | Path, entries: int = 10_000, queries: int = 300, quick: bool = False) -> dict:
    if quick:
        entries, queries = 2_000, 100
    rng = np.random.default_rng(0)
    timed_adds = min(200, entries // 2)
    with tempfile.TemporaryDirectory() as folder:
        store = MemoryStore(Path(folder) / "bench.sqlite")
        for i in range(entries - timed_adds):  # written as the pool writes them, without indexing each
            fields = _fields(rng)
            store.add_case("bench", ("success", "failure")[i % 2], KINDS[i % len(KINDS)], fields["subgoal"],
                           features(fields), {"n": i, "fields": fields})
        start = time.perf_counter()
        loaded = ExperiencePool(store, "bench")
        load_s = time.perf_counter() - start
        adds, adds_framed = [], []
        frames = list(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
        for i in range(entries - timed_adds, entries):
            fields = _fields(rng)
            framed = i % 2 == 1
            start = time.perf_counter()
            loaded.add(("success", "failure")[i % 2], KINDS[i % len(KINDS)], fields["subgoal"], fields, {"n": i},
                       frames if framed else ())
            (adds_framed if framed else adds).append(time.perf_counter() - start)
        asked = [_fields(rng) for _ in range(queries)]
        plain, by_kind = [], []
        for fields in asked:
            start = time.perf_counter()
            loaded.retrieve(fields, "success", 8)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded.retrieve(fields, "success", 8, kind="fetch")
            by_kind.append(time.perf_counter() - start)
        store.close()
    buffer, pushes = KeyFrames(), []
    for _ in range(queries):
        frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        start = time.perf_counter()
        buffer.push(frame)
        pushes.append(time.perf_counter() - start)
    rows = rng.standard_normal((entries // 2, FEATURE_DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    floor = []
    for fields in asked:
        start = time.perf_counter()
        scores = rows @ features(fields)
        top = np.argpartition(-scores, 7)[:8]
        top = top[np.argsort(-scores[top])]  # ranked, as retrieve ranks its k
        floor.append(time.perf_counter() - start)
    result = {"entries": entries, "per_outcome": entries // 2, "dim": FEATURE_DIM, "k": 8,
              "retrieve": _ms(plain), "retrieve_kind_filter": _ms(by_kind), "brute_force_cosine": _ms(floor),
              "retrieve_over_brute_force": float(np.median(plain) / np.median(floor)),
              "load_index_s": load_s, "add": _ms(adds), "add_with_4_frames": _ms(adds_framed),
              "keyframes_push": _ms(pushes),
              "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
              "provenance": provenance()}
    Path(out).write_text(json.dumps(result, indent=1))
    r, f = result["retrieve"], result["brute_force_cosine"]
    print(f"experience pool, {entries} entries ({entries // 2} per outcome), k=8:\n"
          f"  retrieve                 median {r['median_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms\n"
          f"  retrieve, kind filter    median {result['retrieve_kind_filter']['median_ms']:.3f} ms\n"
          f"  brute-force cosine alone median {f['median_ms']:.3f} ms (retrieve / it: "
          f"{result['retrieve_over_brute_force']:.2f})\n"
          f"  load the index           {load_s * 1000:.0f} ms\n"
          f"  add (one transaction)    median {result['add']['median_ms']:.2f} ms, with 4 key frames "
          f"{result['add_with_4_frames']['median_ms']:.2f} ms\n"
          f"  key frames, one push     median {result['keyframes_push']['median_ms'] * 1000:.0f} us\nwrote {out}")
    return result
