"""Reading `.rrd` recordings back with rerun's own chunk reader (no viewer, no server)."""
from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied.config import InputError

# rerun.datatypes.ChannelDatatype ids -> numpy dtypes
_CHANNEL_DTYPES = {6: np.uint8, 7: np.int8, 8: np.uint16, 9: np.int16, 10: np.uint32, 11: np.int32,
                   12: np.uint64, 13: np.int64, 33: np.float16, 34: np.float32, 35: np.float64}
_COLOR_CHANNELS = {1: 1, 2: 3, 3: 4, 4: 3, 5: 4}  # L, RGB, RGBA, BGR, BGRA


@dataclass
class EntityRows:
    """The rows of one entity: `steps[i]` (None when static) and `components[name][i]`."""

    static: bool = False
    steps: list = field(default_factory=list)
    components: dict = field(default_factory=lambda: defaultdict(list))

    def __len__(self) -> int:
        return len(self.steps)

    def at(self, component: str) -> dict[int, object]:
        """{step: value} of a component on the step timeline (static rows are left out). Where
        several rows share a step (archetypes logged apart to one entity), the last non-empty wins."""
        out: dict[int, object] = {}
        for s, v in zip(self.steps, self.components[component]):
            if s is not None and (v is not None or s not in out):
                out[s] = v
        return out


class RecordingError(InputError):
    """A file that is not a readable rerun recording: names it and what is wrong."""


def _read_failure(path: Path, e: Exception) -> RecordingError:
    msg = " ".join(str(e).split())
    if "without footer" in msg or "no footer" in msg:
        return RecordingError(f"{path}: truncated rerun recording (no footer: its writer was stopped before "
                              "finishing it, or an older rerun wrote it)")
    if "Not an RRD file" in msg:
        return RecordingError(f"{path}: not a rerun recording (.rrd)")
    reason = msg.rsplit(f"{path}: ", 1)[-1][:160]  # rerun's messages repeat the path first
    return RecordingError(f"{path}: unreadable rerun recording (truncated or corrupt?): {reason}")


def read_chunks(path: str | Path) -> tuple[list, list]:
    """(the recording stores, every chunk) of a `.rrd` file, read with rerun's own reader;
    RecordingError naming the file when it is missing, foreign, truncated, corrupt or holds no
    recording."""
    from rerun.chunk import RrdReader

    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: a directory; allowed: a recording file in it (episode_000.rrd, ...)"
                             if path.is_dir() else f"{path}: no such recording")
    try:
        with warnings.catch_warnings():  # "no footer" comes as a warning first, then as an error
            warnings.simplefilter("ignore")
            reader = RrdReader(str(path))
            recordings = [e for e in reader.recordings() if e.kind == "recording"]
            if not recordings:
                raise RecordingError(f"{path}: holds no recording")
            chunks = list(reader.store().stream())  # chunks are decoded here: a corrupt one fails now
    except RecordingError:
        raise
    except (RuntimeError, ValueError, OSError) as e:
        raise _read_failure(path, e) from None
    return recordings, chunks


def check_recording(path: str | Path) -> Path:
    """`path` if rerun reads every chunk of it, else RecordingError naming the file (`embodied view`
    checks this before it serves a file: the viewer would show a broken file as an empty one)."""
    read_chunks(path)
    return Path(path)


class Recording:
    """Every entity of one recording, read with `rerun.chunk.RrdReader`; `entities[path]` (with a
    leading slash, as rerun prints it) holds the rows of all chunks of that entity. A file rerun
    cannot read raises RecordingError naming it."""

    def __init__(self, path: str | Path, timeline: str = "step"):
        self.path = Path(path)
        self.recordings, chunks = read_chunks(self.path)
        self.entities: dict[str, EntityRows] = {}
        for chunk in chunks:
            batch = chunk.to_record_batch()
            names = batch.schema.names
            rows = self.entities.setdefault(chunk.entity_path, EntityRows(static=chunk.is_static))
            rows.static = rows.static and chunk.is_static
            before = len(rows.steps)
            steps = batch.column(timeline).to_pylist() if timeline in names else [None] * batch.num_rows
            rows.steps.extend(steps)
            # Chunks of one entity may carry different columns (e.g. a static row apart from the
            # per-step rows): keep every column aligned with `steps`, None where a chunk lacks it.
            data = [n for n in names if ":" in n]  # Archetype:component; index/control columns have no ':'
            for name in data:
                column = rows.components[name]
                column.extend([None] * (before - len(column)))
                column.extend(batch.column(name).to_pylist())
            for name, column in rows.components.items():
                if name not in data:
                    column.extend([None] * (len(rows.steps) - len(column)))
        for rows in self.entities.values():  # chunks may arrive out of order
            if rows.steps and all(s is not None for s in rows.steps):
                order = np.argsort(rows.steps, kind="stable")
                rows.steps = [rows.steps[i] for i in order]
                for name, values in rows.components.items():
                    rows.components[name] = [values[i] for i in order]

    def rows(self, entity: str) -> int:
        """Number of rows logged to `entity` (0 if never logged)."""
        return len(self.entities.get(_slash(entity), ()))

    def __getitem__(self, entity: str) -> EntityRows:
        key = _slash(entity)
        if key not in self.entities:
            raise KeyError(f"{self.path}: no entity {key!r}")
        return self.entities[key]

    def __contains__(self, entity: str) -> bool:
        return _slash(entity) in self.entities

    def images(self, entity: str, archetype: str = "Image") -> dict[int, np.ndarray]:
        """{step: image array} of an Image / DepthImage / SegmentationImage entity (steps that cleared it
        hold no image and are left out)."""
        rows = self[entity]
        buffers = rows.at(f"{archetype}:buffer")
        formats = rows.at(f"{archetype}:format")
        return {step: decode_image(buffers[step], formats[step]) for step in buffers if buffers[step] is not None}

    def scalars(self, entity: str) -> dict[int, float]:
        return {s: float(v[0]) for s, v in self[entity].at("Scalars:scalars").items() if v}

    def series(self, entity: str) -> dict[str, dict[int, float]]:
        """{series name: {step: value}} of a Scalars entity logging several series per row, named
        by its static SeriesLines (unnamed series are called "0", "1", ...)."""
        rows = self[entity]
        named = [v for v in rows.components.get("SeriesLines:names", []) if v]  # the static row
        names = list(named[-1]) if named else []
        out: dict[str, dict[int, float]] = {}
        for step, values in rows.at("Scalars:scalars").items():
            for i, value in enumerate(values or []):
                out.setdefault(names[i] if i < len(names) else str(i), {})[step] = float(value)
        return out

    def texts(self, entity: str) -> dict[int, str]:
        return {s: "\n".join(v) for s, v in self[entity].at("TextLog:text").items() if v}

    def bar_charts(self, entity: str) -> dict[int, np.ndarray]:
        out = {}
        for step, value in self[entity].at("BarChart:values").items():
            tensor = value[0] if isinstance(value, list) else value
            data = next(v for v in tensor["buffer"].values() if v is not None) if isinstance(tensor["buffer"], dict) \
                else tensor["buffer"]
            out[step] = np.asarray(data)
        return out


def decode_image(buffer, fmt) -> np.ndarray:
    """An image column value (batch of one) -> [H, W] or [H, W, C] array."""
    buffer = buffer[0] if isinstance(buffer, list) and buffer and isinstance(buffer[0], (list, bytes)) else buffer
    fmt = fmt[0] if isinstance(fmt, list) else fmt
    dtype = _CHANNEL_DTYPES.get(fmt.get("channel_datatype") or 6)
    if dtype is None:
        raise ValueError(f"image channel datatype {fmt.get('channel_datatype')} is not supported")
    if fmt.get("pixel_format") is not None:
        raise ValueError(f"image pixel format {fmt['pixel_format']} (YUV/NV12) is not supported")
    array = np.frombuffer(bytes(bytearray(buffer)), dtype=dtype)
    channels = _COLOR_CHANNELS.get(fmt.get("color_model") or 1, 1)
    shape = (fmt["height"], fmt["width"]) + ((channels,) if channels > 1 else ())
    return array.reshape(shape)


def _slash(entity: str) -> str:
    return entity if entity.startswith("/") else "/" + entity
