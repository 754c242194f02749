"""MP4 export of image sequences (imageio + its bundled ffmpeg: no system ffmpeg needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from embodied.config import InputError


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


def _depth_to_rgb(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Near = bright, far/missing = dark (grey ramp)."""
    d = np.clip(np.nan_to_num(depth.astype(np.float32)) / max(max_depth, 1e-6), 0, 1)
    grey = np.where(depth > 0, 255 * (1 - 0.85 * d), 0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _upscale(image: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor so small observations stay sharp."""
    factor = max(1, height // image.shape[0])
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def recording_frames(path, height: int = 256) -> list[np.ndarray]:
    """One frame per recorded step of an `.rrd` episode: the camera views side by side (RGB, depth,
    semantic; those present) with the instruction, action, reward and measures drawn below.
    Generic recordings (no 3D scene; embodied/viewer/generic.py): see `generic_frames`."""
    from PIL import Image, ImageDraw, ImageFont

    from embodied.viewer.recording import class_colors
    from embodied.viewer.rrd import Recording, RecordingError

    rec = Recording(path)
    if not any(e.startswith("/world/") for e in rec.entities):  # no 3D scene: a GenericRecorder episode
        return generic_frames(rec, height)
    camera = "world/agent/camera"
    views = []
    if f"{camera}/rgb" in rec:
        views.append(rec.images(f"{camera}/rgb"))
    if f"{camera}/depth" in rec:
        depth = rec.images(f"{camera}/depth", "DepthImage")
        top = max((float(d.max()) for d in depth.values()), default=1.0)
        views.append({s: _depth_to_rgb(d, top) for s, d in depth.items()})
    if f"{camera}/semantic" in rec:
        semantic = rec.images(f"{camera}/semantic", "SegmentationImage")
        palette = class_colors(int(max(int(s.max()) for s in semantic.values())) + 1)
        views.append({s: palette[m.astype(np.int64)] for s, m in semantic.items()})
    if not views:  # manipulation recordings: one view per camera under cameras/{name}/rgb
        views = [rec.images(e) for e in sorted(rec.entities) if e.startswith("/cameras/") and e.endswith("/rgb")]
    if not views:
        raise RecordingError(f"{path}: the recording has no camera images under {camera}/ or cameras/")
    steps = sorted(views[0])
    texts = {key: (rec.texts(key) if key in rec else {}) for key in ("text/instruction", "agent/action")}
    scalars = {key: (rec.scalars(key) if key in rec else {}) for key in ("scalars/reward", "scalars/return")}
    measures = rec.series("measures") if "measures" in rec else {}
    scalars.update({f"measures/{k}": measures.get(k, {}) for k in ("success", "spl", "distance_to_goal")})
    font = ImageFont.load_default()
    frames = []
    instruction = ""
    for step in steps:
        tiles = [np.asarray(_upscale(np.asarray(v[step])[..., :3].astype(np.uint8), height)) for v in views if step in v]
        row = np.concatenate(tiles, axis=1)
        instruction = texts["text/instruction"].get(step, instruction)
        lines = [instruction,
                 f"step {step}  action {texts['agent/action'].get(step, '-')}  "
                 f"reward {scalars['scalars/reward'].get(step, 0.0):+.3f}  return {scalars['scalars/return'].get(step, 0.0):+.2f}",
                 f"success {scalars['measures/success'].get(step, 0.0):.0f}  spl {scalars['measures/spl'].get(step, 0.0):.2f}  "
                 f"distance {scalars['measures/distance_to_goal'].get(step, float('nan')):.2f} m" if "spl" in measures else
                 f"success {scalars['measures/success'].get(step, 0.0):.0f}  keyframe {step}"]
        band = Image.new("RGB", (row.shape[1], 14 * len(lines) + 8), (20, 20, 20))
        draw = ImageDraw.Draw(band)
        for i, line in enumerate(lines):
            draw.text((6, 4 + 14 * i), line, fill=(235, 235, 235), font=font)
        frames.append(np.concatenate([row, np.asarray(band)], axis=0))
    return frames


def generic_frames(rec, height: int = 256) -> list[np.ndarray]:
    """Frames of a GenericRecorder episode: every `cameras/{key}` view tiled side by side (RGB as is,
    segmentation through the class palette, depth through the grey ramp; each upscaled by an integer
    factor towards `height`, shorter tiles padded), the text channel, action, reward and return drawn
    below. A recording without images gets the text band alone."""
    from PIL import Image, ImageDraw, ImageFont

    from embodied.viewer.recording import class_colors
    from embodied.viewer.rrd import RecordingError

    kinds = ("Image", "DepthImage", "SegmentationImage")  # tile order: rgb, depth, semantic, as for nav
    entities = {e: next((k for k in kinds if f"{k}:buffer" in rec[e].components), None)
                for e in rec.entities if e.startswith("/cameras/") and e.count("/") == 2}
    views = []
    for entity in sorted((e for e in entities if entities[e]), key=lambda e: (kinds.index(entities[e]), e)):
        components = rec[entity].components
        if "SegmentationImage:buffer" in components:
            semantic = rec.images(entity, "SegmentationImage")
            palette = class_colors(max((int(m.max()) for m in semantic.values()), default=0) + 1)
            views.append({s: palette[m.astype(np.int64)] for s, m in semantic.items()})
        elif "DepthImage:buffer" in components:
            depth = rec.images(entity, "DepthImage")
            top = max((float(np.nan_to_num(d).max()) for d in depth.values()), default=1.0)
            views.append({s: _depth_to_rgb(d, top) for s, d in depth.items()})
        elif "Image:buffer" in components:
            images = rec.images(entity)
            views.append({s: np.repeat(i[..., None], 3, -1) if i.ndim == 2 else i[..., :3] for s, i in images.items()})
    if "text/log" in rec:
        steps = sorted(rec.texts("text/log"))
    elif views:
        steps = sorted(views[0])
    else:
        raise RecordingError(f"{rec.path}: the recording has no camera images under cameras/ and no text/log")
    texts = {key: (rec.texts(key) if key in rec else {}) for key in ("text/instruction", "agent/action")}
    scalars = {key: (rec.scalars(key) if key in rec else {}) for key in ("scalars/reward", "scalars/return")}
    success = (rec.series("measures") if "measures" in rec else {}).get("success", {})
    font = ImageFont.load_default()
    frames, instruction = [], ""
    for step in steps:
        tiles = [_upscale(np.asarray(v[step]).astype(np.uint8), height) for v in views if step in v]
        top = max((t.shape[0] for t in tiles), default=0)
        tiles = [np.pad(t, ((0, top - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
        instruction = texts["text/instruction"].get(step, instruction)
        lines = [instruction, f"step {step}  action {texts['agent/action'].get(step, '-')}",
                 f"reward {scalars['scalars/reward'].get(step, 0.0):+.3f}  "
                 f"return {scalars['scalars/return'].get(step, 0.0):+.2f}"
                 + (f"  success {success[step]:.0f}" if step in success else "")]
        width = max(sum(t.shape[1] for t in tiles), int(max(font.getlength(line) for line in lines)) + 12)
        row = np.concatenate(tiles, axis=1) if tiles else np.zeros((0, width, 3), np.uint8)
        row = np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)))  # room for the text
        band = Image.new("RGB", (width, 14 * len(lines) + 8), (20, 20, 20))
        draw = ImageDraw.Draw(band)
        for i, line in enumerate(lines):
            draw.text((6, 4 + 14 * i), line, fill=(235, 235, 235), font=font)
        frames.append(np.concatenate([row, np.asarray(band)], axis=0))
    # One size for the whole video: pad every frame to the largest.
    h, w = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    return [np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0))) for f in frames]


def recording_to_video(path, out=None, fps: int = 10, height: int = 256) -> Path:
    """Write the MP4 of an `.rrd` episode (default: beside it, same name .mp4)."""
    for flag, value in (("--fps", fps), ("--height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{flag}: {value!r}; allowed: a positive integer")
    frames = recording_frames(path, height=height)  # a file that is no recording fails here, first
    out = Path(out) if out is not None else Path(path).with_suffix(".mp4")
    if out.resolve() == Path(path).resolve():
        raise InputError(f"--out {out}: is the recording itself; allowed: another file")
    return write_video(frames, out, fps=fps)
