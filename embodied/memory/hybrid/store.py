"""The persistent store of the hybrid memory: one SQLite file in WAL mode (stdlib sqlite3).

WAL lets several readers (evaluation workers) read while one process writes; every write is its
own transaction, so a writer killed with SIGKILL loses at most the entry it was writing (the WAL
keeps committed transactions, an uncommitted tail is discarded when the file is next opened).

Tables: `graph` holds versioned knowledge-graph facts (kind, node, value) per world: each commit
adds a row to `graph_versions` and the facts it changed with that version; reading at version v
takes, per (kind, node), the latest fact at or below v, so a reader can pin a version while the
writer goes on. `cases` holds experience-pool entries (outcome success | failure kept apart by a
column that every query filters on) with their feature vector as float32 bytes; `frames` the key
frames of a case (embodied.memory.hybrid.frames), written in the case's own transaction and read
only when asked for, so retrieval never loads them.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from embodied.config import InputError
from embodied.memory.hybrid.frames import decode as decode_frame, encode as encode_frame

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graph_versions (world TEXT NOT NULL, version INTEGER NOT NULL, created REAL NOT NULL,
    note TEXT NOT NULL, PRIMARY KEY (world, version));
CREATE TABLE IF NOT EXISTS graph (world TEXT NOT NULL, kind TEXT NOT NULL, node TEXT NOT NULL, version INTEGER NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (world, kind, node, version));
CREATE TABLE IF NOT EXISTS cases (id INTEGER PRIMARY KEY AUTOINCREMENT, world TEXT NOT NULL, outcome TEXT NOT NULL
    CHECK (outcome IN ('success', 'failure')), kind TEXT NOT NULL, subgoal TEXT NOT NULL, features BLOB NOT NULL,
    record TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS cases_by_world ON cases (world, outcome, id);
CREATE TABLE IF NOT EXISTS frames (case_id INTEGER NOT NULL REFERENCES cases (id), idx INTEGER NOT NULL,
    frame BLOB NOT NULL, PRIMARY KEY (case_id, idx));
"""


class MemoryStoreError(InputError):
    """A memory file that is not one (or of another schema version): names the path."""


class MemoryStore:
    """One connection to a memory file. `readonly=True` opens it for reading only (an evaluation
    worker); the file must then exist."""

    def __init__(self, path: str | Path, readonly: bool = False, timeout: float = 30.0):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise MemoryStoreError(f"{self.path}: no memory file there; allowed: a file written by a learning run")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode={'ro' if readonly else 'rwc'}"
        try:
            self.db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")  # durable against a killed process (not power loss)
                self.db.executescript(_SCHEMA)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            version = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(f"{self.path}: not a memory file ({exc})") from None
        if version is None or version[0] != SCHEMA_VERSION:
            raise MemoryStoreError(f"{self.path}: memory schema {version and version[0]!r}; allowed: {SCHEMA_VERSION!r}")
        self.readonly = readonly

    def close(self) -> None:
        self.db.close()

    def nbytes(self) -> int:
        """The database's size (pages x page size, what the write-ahead log holds included)."""
        (pages,), (size,) = self.db.execute("PRAGMA page_count").fetchone(), self.db.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)

    # --- the knowledge graph ----------------------------------------------------------------------------
    def graph_version(self, world: str) -> int:
        row = self.db.execute("SELECT MAX(version) FROM graph_versions WHERE world = ?", (world,)).fetchone()
        return int(row[0] or 0)

    def commit_graph(self, world: str, facts: list[tuple[str, str, object]], note: str = "") -> int:
        """Write changed facts (kind, node, JSON-able value) as one new version; returns it."""
        with self._transaction():
            version = self.graph_version(world) + 1
            self.db.execute("INSERT INTO graph_versions VALUES (?, ?, ?, ?)", (world, version, time.time(), note))
            self.db.executemany("INSERT INTO graph VALUES (?, ?, ?, ?, ?)",
                                [(world, kind, node, version, json.dumps(value)) for kind, node, value in facts])
        return version

    def read_graph(self, world: str, version: int | None = None) -> tuple[int, list[tuple[str, str, object]]]:
        """(version, facts) of the graph at `version` (null: the latest)."""
        with self._snapshot():
            v = self.graph_version(world) if version is None else int(version)
            rows = self.db.execute(
                "SELECT g.kind, g.node, g.value FROM graph g JOIN (SELECT kind, node, MAX(version) AS v FROM graph "
                "WHERE world = ? AND version <= ? GROUP BY kind, node) latest ON g.kind = latest.kind AND "
                "g.node = latest.node AND g.version = latest.v WHERE g.world = ? ORDER BY g.kind, g.node",
                (world, v, world)).fetchall()
        return v, [(kind, node, json.loads(value)) for kind, node, value in rows]

    # --- the experience pool ----------------------------------------------------------------------------
    def add_case(self, world: str, outcome: str, kind: str, subgoal: str, features: np.ndarray, record: dict,
                 frames: list[np.ndarray] = ()) -> int:
        with self._transaction():
            cur = self.db.execute("INSERT INTO cases (world, outcome, kind, subgoal, features, record, created) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  (world, outcome, kind, subgoal, np.asarray(features, np.float32).tobytes(),
                                   json.dumps(record), time.time()))
            case = int(cur.lastrowid)
            self.db.executemany("INSERT INTO frames VALUES (?, ?, ?)",
                                [(case, i, encode_frame(f)) for i, f in enumerate(frames)])
        return case

    def case_frames(self, case: int) -> list[np.ndarray]:
        """The key frames stored with a case, in order (none for a case without, or a file of before them)."""
        try:
            rows = self.db.execute("SELECT frame FROM frames WHERE case_id = ? ORDER BY idx", (case,)).fetchall()
        except sqlite3.OperationalError:  # a read-only file written before the frames table existed
            return []
        return [decode_frame(blob) for (blob,) in rows]

    def cases_after(self, world: str, last_id: int = 0) -> list[tuple[int, str, str, str, np.ndarray, dict]]:
        """(id, outcome, kind, subgoal, features, record) of the cases with id > last_id, in id order."""
        rows = self.db.execute("SELECT id, outcome, kind, subgoal, features, record FROM cases "
                               "WHERE world = ? AND id > ? ORDER BY id", (world, last_id)).fetchall()
        return [(i, o, k, s, np.frombuffer(f, np.float32), json.loads(r)) for i, o, k, s, f, r in rows]

    def count_cases(self, world: str | None = None) -> dict[str, int]:
        where, args = ("WHERE world = ?", (world,)) if world is not None else ("", ())
        return dict(self.db.execute(f"SELECT outcome, COUNT(*) FROM cases {where} GROUP BY outcome", args).fetchall())

    # --- transactions -----------------------------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self.db, "BEGIN IMMEDIATE")

    def _snapshot(self):
        return _Transaction(self.db, "BEGIN")


class _Transaction:
    def __init__(self, db: sqlite3.Connection, begin: str):
        self.db, self.begin = db, begin

    def __enter__(self):
        self.db.execute(self.begin)

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
