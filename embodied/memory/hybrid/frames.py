"""Key frames of a sub-goal attempt, for the experience pool's cases (Optimus-1's AMEP keeps, per
sub-goal, the frames of its video that are not too similar to their neighbours).

The paper compares MineCLIP embeddings; with no pretrained image model here, a frame's descriptor is
its mean-centred thumbnail (8 x 8 colour block means), compared by cosine. A frame is kept when it
differs from the last kept one (cosine below `similar`); beyond `capacity` kept frames, the one most
like its predecessor goes, never the first or the newest (the attempt's start and its latest view,
the pair Optimus-1's reflector compares), so the kept frames stay the most different views.
"""
from __future__ import annotations

import zlib

import numpy as np

THUMB = 8


def descriptor(rgb: np.ndarray) -> np.ndarray:
    """Unit float32 vector of an [H, W, 3] uint8 frame: block sums on a THUMB x THUMB grid, mean-centred."""
    img = np.asarray(rgb)
    h, w = img.shape[0] // THUMB * THUMB, img.shape[1] // THUMB * THUMB
    # Block sums in two passes over contiguous axes (3x faster than one reduction over two strided
    # axes; this runs at every env step of the apartment agent). Sums, not means: the cosine ignores scale.
    rows = img[:h, :w].reshape(THUMB, h // THUMB, w, -1).sum(axis=1, dtype=np.int32)
    blocks = rows.reshape(THUMB, THUMB, w // THUMB, -1).sum(axis=2).astype(np.float32).reshape(-1)
    blocks -= blocks.mean()
    n = float(np.linalg.norm(blocks))
    return blocks / n if n > 0 else blocks


class KeyFrames:
    """The kept frames of the current sub-goal attempt (`push` each observed frame, `clear` at a new
    sub-goal, `frames()` what a case stores)."""

    def __init__(self, capacity: int = 4, similar: float = 0.9):
        if capacity < 2 or not -1.0 <= similar <= 1.0:
            raise ValueError(f"KeyFrames: capacity {capacity} (allowed >= 2), similar {similar} (allowed [-1, 1])")
        self.capacity, self.similar = capacity, similar
        self._frames: list[np.ndarray] = []
        self._desc: list[np.ndarray] = []

    def clear(self) -> None:
        self._frames, self._desc = [], []

    def push(self, rgb: np.ndarray) -> bool:
        """Offer one frame; True if it was kept."""
        d = descriptor(rgb)
        if self._desc and float(d @ self._desc[-1]) >= self.similar:
            return False
        self._frames.append(np.array(rgb, np.uint8, copy=True))
        self._desc.append(d)
        if len(self._frames) > self.capacity:
            redundancy = [float(self._desc[i] @ self._desc[i - 1]) for i in range(1, len(self._desc) - 1)]
            drop = 1 + int(np.argmax(redundancy))
            del self._frames[drop], self._desc[drop]
        return True

    def frames(self) -> list[np.ndarray]:
        return list(self._frames)


def encode(frame: np.ndarray) -> bytes:
    """A uint8 [H, W, C] frame as bytes (shape header + zlib): what the store keeps."""
    frame = np.ascontiguousarray(frame, np.uint8)
    header = np.asarray(frame.shape, np.uint16).tobytes()
    return bytes([frame.ndim]) + header + zlib.compress(frame.tobytes(), 6)


def decode(blob: bytes) -> np.ndarray:
    ndim = blob[0]
    shape = tuple(int(s) for s in np.frombuffer(blob[1:1 + 2 * ndim], np.uint16))
    return np.frombuffer(zlib.decompress(blob[1 + 2 * ndim:]), np.uint8).reshape(shape)


__all__ = ["KeyFrames", "decode", "descriptor", "encode"]
