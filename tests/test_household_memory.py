"""The hybrid memory (embodied/memory/hybrid): graph expansion on hand-made rules, versioned graph,
retrieval of a planted case, readers beside a writer, and a writer killed with SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from embodied.memory.hybrid import ExperiencePool, KnowledgeGraph, MemoryStore, MemoryStoreError, features

ROOT = Path(__file__).resolve().parents[1]


def hand_made() -> KnowledgeGraph:
    g = KnowledgeGraph()
    for raw in ("log", "stone", "iron ore", "coal"):
        g.add_raw(raw)
    g.add_recipe("planks", "bench", ["log"])
    g.add_recipe("stick", "bench", ["planks"])
    g.add_recipe("pickaxe", "table", ["planks", "planks", "stick"])
    g.add_recipe("iron", "furnace", ["iron ore", "coal"], tool="pickaxe")
    g.add_recipe("sword", "table", ["iron", "iron", "stick"], tool="pickaxe")
    return g


def test_expansion_is_topological_counts_units_and_subtracts_the_inventory():
    g = hand_made()
    plan = g.expand("sword")
    pos = {step: i for i, step in reversed(list(enumerate(plan)))}  # first occurrence
    for product, recipe in g.recipes.items():
        if ("make", product) in pos:
            for need in recipe.inputs + ((recipe.tool,) if recipe.tool else ()):
                verb = "make" if need in g.recipes else "fetch"
                assert pos[(verb, need)] < pos[("make", product)], (need, product, plan)
    counts = Counter(plan)
    assert counts[("make", "iron")] == 2 and counts[("fetch", "iron ore")] == 2
    assert counts[("make", "pickaxe")] == 1  # a tool is made once, for both uses
    assert counts[("make", "stick")] == 2  # one for the pickaxe, one consumed by the sword
    assert plan[-1] == ("make", "sword")
    held = g.expand("sword", {"pickaxe": 1, "iron": 1, "stick": 1})
    assert ("make", "pickaxe") not in held and Counter(held)[("make", "iron")] == 1
    assert ("make", "stick") not in held and held == [("fetch", "coal"), ("fetch", "iron ore"), ("make", "iron"),
                                                       ("make", "sword")]
    assert g.expand("sword", {"sword": 1}) == []  # (inputs are kept sorted: coal before iron ore)
    assert g.expand("cake") == [("discover", "cake")]  # unknown: neither a recipe nor a raw fact
    g.add_recipe("loop", "bench", ["loop"])
    assert g.expand("loop") == [("discover", "loop"), ("make", "loop")]  # a wrong cyclic fact stops


def test_the_graph_is_versioned_and_readers_can_pin_a_version(tmp_path):
    store = MemoryStore(tmp_path / "m.sqlite")
    g = hand_made()
    v1 = g.commit(store, "w")
    g.add_recipe("planks", "saw", ["log"])  # a corrected fact
    v2 = g.commit(store, "w", "saw")
    assert (v1, v2) == (1, 2) and g.commit(store, "w") == 2  # nothing new: no version
    old, new = KnowledgeGraph.load(store, "w", version=1), KnowledgeGraph.load(store, "w")
    assert old.recipes["planks"].station == "bench" and new.recipes["planks"].station == "saw"
    assert new.version == 2 and new.recipes["sword"] == g.recipes["sword"] and new.raw == g.raw
    assert KnowledgeGraph.load(store, "other world").recipes == {}
    reader = MemoryStore(tmp_path / "m.sqlite", readonly=True)
    assert KnowledgeGraph.load(reader, "w").recipes == new.recipes
    with pytest.raises(Exception):
        reader.commit_graph("w", [("raw", "x", True)])


def test_retrieval_returns_the_planted_nearest_case_and_keeps_outcomes_apart(tmp_path):
    store = MemoryStore(tmp_path / "m.sqlite")
    pool = ExperiencePool(store, "w")
    rng = np.random.default_rng(0)
    items = [f"thing{i}" for i in range(50)]
    contexts = ["tidy", "after a party", "moving day"]
    for i in range(300):
        pool.add("success" if i % 2 else "failure", "fetch", "fetch",
                 {"subgoal": "fetch", "item": str(rng.choice(items)), "context": str(rng.choice(contexts))},
                 {"container": f"c{i}"})
    planted = {"subgoal": "fetch", "item": "flour", "context": "moving day"}
    pool.add("success", "fetch", "fetch flour", planted, {"container": "PLANTED"})
    pool.add("failure", "fetch", "fetch flour", {**planted, "context": "tidy"}, {"container": "NOT HERE"})
    top = pool.retrieve(planted, "success", k=3)
    assert top[0][1]["container"] == "PLANTED" and top[0][0] == pytest.approx(1.0, abs=1e-5)
    assert top[0][0] > top[1][0]
    assert all(r["container"] != "NOT HERE" for _, r in pool.retrieve(planted, "success", k=50))
    assert pool.retrieve(planted, "failure", k=1)[0][1]["container"] == "NOT HERE"
    assert pool.retrieve(planted, "success", k=3, kind="make") == []
    # Another process's view: a fresh pool on the same file indexes the same cases.
    other = ExperiencePool(MemoryStore(tmp_path / "m.sqlite", readonly=True), "w")
    assert len(other) == len(pool) == 302
    assert other.retrieve(planted, "success", k=1)[0][1]["container"] == "PLANTED"
    pool.add("success", "fetch", "fetch egg", {"item": "egg"}, {"container": "late"})
    assert other.refresh() == 1 and other.retrieve({"item": "egg"}, "success", 1)[0][1]["container"] == "late"
    # Among equally similar cases, the newest first.
    for i in range(20):
        pool.add("success", "fetch", "fetch egg", {"item": "egg"}, {"container": f"egg{i}"})
    assert [r["container"] for _, r in pool.retrieve({"item": "egg"}, "success", 3)] == ["egg19", "egg18", "egg17"]
    # Both outcomes together: the k nearest of either, in the same order.
    pool.add("failure", "fetch", "fetch egg", {"item": "egg"}, {"container": "gone"})
    both = pool.nearest({"item": "egg"}, ("success", "failure"), 3)
    assert [(o, r["container"]) for _, o, r in both] == [("failure", "gone"), ("success", "egg19"), ("success", "egg18")]
    assert pool.nearest({"item": "egg"}, ("success", "failure"), 3, kind="make") == []


def test_key_frames_keep_the_different_views_of_an_attempt_and_are_stored_with_their_case(tmp_path):
    from embodied.memory.hybrid import KeyFrames

    rng = np.random.default_rng(0)
    view = lambda: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noqa: E731
    f0, f1, f3 = view(), view(), view()
    f2 = np.clip(f1.astype(int) + 40, 0, 255).astype(np.uint8)  # f1 a little brighter: alike, not the same
    buffer = KeyFrames(capacity=3, similar=0.999)
    assert buffer.push(f0) and not buffer.push(f0.copy())  # the same view again is not kept
    assert buffer.push(f1) and buffer.push(f2) and buffer.push(f3)
    # Over capacity, the frame most like its predecessor (f2 ~ f1) goes; the first and the newest stay.
    assert [f.tobytes() for f in buffer.frames()] == [f0.tobytes(), f1.tobytes(), f3.tobytes()]
    kept = buffer.frames()
    f4 = np.clip(f3.astype(int) + 40, 0, 255).astype(np.uint8)
    assert buffer.push(f4)  # alike to f3, yet the newest view stays
    assert len(buffer.frames()) == 3
    assert buffer.frames()[0].tobytes() == f0.tobytes() and buffer.frames()[-1].tobytes() == f4.tobytes()
    buffer.clear()
    assert buffer.frames() == [] and buffer.push(f0)
    with pytest.raises(ValueError, match="capacity 1"):
        KeyFrames(capacity=1)

    store = MemoryStore(tmp_path / "m.sqlite")
    pool = ExperiencePool(store, "w")
    with_frames = pool.add("success", "fetch", "fetch flour", {"item": "flour"}, {"container": "c"}, kept)
    without = pool.add("success", "fetch", "fetch egg", {"item": "egg"}, {"container": "d"})
    found = pool.retrieve({"item": "flour"}, "success", k=1)[0][1]
    assert found["id"] == with_frames and found["container"] == "c"
    stored = ExperiencePool(MemoryStore(tmp_path / "m.sqlite", readonly=True), "w").frames(with_frames)
    assert [f.tobytes() for f in stored] == [f.tobytes() for f in kept]
    assert stored[0].shape == (64, 64, 3) and stored[0].dtype == np.uint8
    assert pool.frames(without) == []
    # A file written before cases kept frames still reads, with no frames.
    store.db.execute("DROP TABLE frames")
    assert MemoryStore(tmp_path / "m.sqlite", readonly=True).case_frames(with_frames) == []


def test_features_are_stable_across_processes():
    here = features({"item": "flour", "context": "tidy"})
    code = ("from embodied.memory.hybrid.pool import features; import sys; "
            "sys.stdout.write(features({'item': 'flour', 'context': 'tidy'}).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert bytes.fromhex(out.stdout) == here.tobytes()


WRITER = """
import sys
import numpy as np
from embodied.memory.hybrid import ExperiencePool, MemoryStore
pool = ExperiencePool(MemoryStore(sys.argv[1]), "w")
i = 0
while True:
    frames = [np.full((16, 16, 3), (i + k) % 256, np.uint8) for k in range(2)]  # key frames, same transaction
    pool.add("success", "fetch", "fetch x", {"item": f"x{i}"}, {"n": i, "pad": "y" * 2000}, frames)
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_mid_writes_leaves_a_readable_pool(tmp_path):
    path = tmp_path / "m.sqlite"
    MemoryStore(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        reader = MemoryStore(path, readonly=True)  # a reader beside the writer
        seen = []
        deadline = time.time() + 120
        while len(seen) < 200 and time.time() < deadline:
            seen.append(int(proc.stdout.readline()))
            if len(seen) % 50 == 0:
                assert reader.count_cases("w").get("success", 0) >= len(seen)  # committed rows are visible
        assert len(seen) >= 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    acknowledged = seen[-1] + 1 + sum(1 for line in proc.stdout if line.strip())  # printed after a commit
    store = MemoryStore(path)  # recovery of the WAL happens here
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = store.cases_after("w")
    assert acknowledged <= len(rows) <= acknowledged + 1  # at most the entry being written is lost
    assert [r[5]["n"] for r in rows] == list(range(len(rows)))  # no gap, no torn row
    for case, *_, record in rows:  # every case with both its key frames, none without its case
        assert [int(f[0, 0, 0]) for f in store.case_frames(case)] == [record["n"] % 256, (record["n"] + 1) % 256]
    assert store.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 2 * len(rows)
    assert ExperiencePool(store, "w").retrieve({"item": "x7"}, "success", 1)[0][1]["n"] == 7


def test_a_file_that_is_not_a_memory_is_one_line(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("hello" * 100)
    with pytest.raises(MemoryStoreError) as err:
        MemoryStore(bad)
    assert str(err.value).startswith(f"{bad}: not a memory file") and "\n" not in str(err.value)
    with pytest.raises(MemoryStoreError, match="no memory file there"):
        MemoryStore(tmp_path / "missing.sqlite", readonly=True)


def test_bench_hybrid_writes_its_figures(tmp_path):
    import json

    from embodied.memory.hybrid.bench import bench_hybrid

    out = tmp_path / "bench_hybrid.json"
    result = bench_hybrid(out, quick=True)
    saved = json.loads(out.read_text())
    assert saved["entries"] == result["entries"] == 2000 and saved["per_outcome"] == 1000
    for key in ("retrieve", "retrieve_kind_filter", "brute_force_cosine", "add", "add_with_4_frames", "keyframes_push"):
        assert saved[key]["median_ms"] > 0 and saved[key]["p95_ms"] >= saved[key]["median_ms"]
    assert saved["add"]["n"] == saved["add_with_4_frames"]["n"] == 100 and saved["keyframes_push"]["n"] == 100
    assert saved["load_index_s"] > 0 and saved["provenance"]["commit"]
