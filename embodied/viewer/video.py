"""MP4 export of image sequences (imageio + its bundled ffmpeg: no system ffmpeg needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    import imageio.v2 as imageio

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    # H.264 wants even sizes; pad rather than resample so pixels stay exact.
    ph, pw = h + h % 2, w + w % 2
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for f in frames:
            if f.shape[:2] != (ph, pw):
                f = np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)))
            writer.append_data(np.ascontiguousarray(f))
    return path
