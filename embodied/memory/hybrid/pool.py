"""Optimus-1's Abstracted Multimodal Experience Pool (AMEP): one entry per sub-goal attempt (and one
per task) with the sub-goal, the environment (context), the initial state, the plan and the
outcome, and where the world has a camera the attempt's key frames; successes and failures kept
apart. Entries are retrieved by similarity of a hashed bag-of-words feature vector (`features`)
through a brute-force cosine index (numpy), kept per outcome and refreshed from the store by id, so
entries another process wrote are seen too.
"""
from __future__ import annotations

import time
import zlib

import numpy as np

FEATURE_DIM = 256
# How much each field of a case weighs in the similarity: the sub-goal first, then the context.
FIELD_WEIGHTS = {"subgoal": 3.0, "item": 3.0, "context": 2.0, "reason": 1.5, "room": 0.5, "inventory": 0.3}


def features(fields: dict, dim: int = FEATURE_DIM) -> np.ndarray:
    """Unit float32 vector: each word of each field hashed (crc32, stable across processes) into
    `dim` buckets with the field's weight; lists are bags of words."""
    v = np.zeros(dim, np.float32)
    for name, value in fields.items():
        words = value if isinstance(value, (list, tuple)) else [value]
        for word in words:
            if word is None:
                continue
            h = zlib.crc32(f"{name}={word}".encode())
            v[h % dim] += FIELD_WEIGHTS.get(name, 1.0) * (1.0 if (h >> 16) & 1 else -1.0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class ExperiencePool:
    """The cases of one world in a MemoryStore, indexed per outcome."""

    def __init__(self, store, world: str):
        self.store, self.world = store, world
        self.last_id = 0
        self._rows: dict[str, list] = {"success": [], "failure": []}
        self._matrix: dict[str, np.ndarray] = {o: np.zeros((0, FEATURE_DIM), np.float32) for o in self._rows}
        self._kinds: dict[str, np.ndarray] = {o: np.zeros(0, np.int32) for o in self._rows}  # kind codes, for masks
        self._codes: dict[str, int] = {}
        self.read_seconds = 0.0  # spent in retrieve, for the memory's cost per env step
        self.refresh()

    def _append(self, outcome: str, rows: list, vectors: np.ndarray) -> None:
        self._rows[outcome] += rows
        self._matrix[outcome] = np.concatenate([self._matrix[outcome], vectors])
        codes = [self._codes.setdefault(r[1], len(self._codes)) for r in rows]
        self._kinds[outcome] = np.concatenate([self._kinds[outcome], np.asarray(codes, np.int32)])

    def refresh(self) -> int:
        """Index the cases written since the last refresh (by anyone); returns how many."""
        new = self.store.cases_after(self.world, self.last_id)
        for outcome in self._rows:
            mine = [r for r in new if r[1] == outcome]
            if mine:
                rows = [(i, kind, subgoal, {**record, "id": i}) for i, _, kind, subgoal, _, record in mine]
                self._append(outcome, rows, np.stack([r[4] for r in mine]))
        if new:
            self.last_id = new[-1][0]
        return len(new)

    def add(self, outcome: str, kind: str, subgoal: str, fields: dict, record: dict,
            frames: list[np.ndarray] = ()) -> int:
        """Write a case (with its key frames, if any) in one transaction; returns its id."""
        vec = features(fields)
        record = {**record, "fields": fields}
        i = self.store.add_case(self.world, outcome, kind, subgoal, vec, record, frames)
        if i == self.last_id + 1 or not any(self._rows.values()):  # nobody else wrote in between
            self._append(outcome, [(i, kind, subgoal, {**record, "id": i})], vec[None])
            self.last_id = i
        else:
            self.refresh()
        return i

    def frames(self, case: int) -> list[np.ndarray]:
        """The key frames stored with a case."""
        return self.store.case_frames(case)

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def retrieve(self, fields: dict, outcome: str, k: int = 8, kind: str | None = None) -> list[tuple[float, dict]]:
        """The k most similar cases of `outcome` (of `kind` if given): (cosine, record), best first and
        among equals newest first; `record["id"]` names the case (`frames`)."""
        start = time.perf_counter()
        matrix = self._matrix[outcome]
        found = []
        if len(matrix) and k > 0:
            scores = matrix @ features(fields)
            rows = self._rows[outcome]
            if kind is not None:
                scores = np.where(self._kinds[outcome] == self._codes.get(kind, -1), scores, -np.inf)
            k = min(k, len(scores))
            # Among equally similar cases the newest first (rows are in id order): the pool's latest view
            # of a situation it has met many times, not its oldest. Other kinds (-inf) are never sorted.
            kth = -np.partition(-scores, k - 1)[k - 1]
            tied = np.flatnonzero((scores >= kth) & np.isfinite(scores))
            top = tied[np.lexsort((-tied, -scores[tied]))][:k]
            found = [(float(scores[i]), rows[i][3]) for i in top]
        self.read_seconds += time.perf_counter() - start
        return found

    def nearest(self, fields: dict, outcomes: tuple[str, ...], k: int = 8,
                kind: str | None = None) -> list[tuple[float, str, dict]]:
        """The k most similar cases of `outcomes` together: (cosine, outcome, record), ordered as
        `retrieve`. Votes over them keep the outcomes' proportions (k of each would weigh a home found
        9 times in 10 as much against as for)."""
        found = [(s, o, r) for o in outcomes for s, r in self.retrieve(fields, o, k, kind)]
        return sorted(found, key=lambda c: (-c[0], -c[2]["id"]))[:k]
