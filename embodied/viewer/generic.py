"""Recordings of any env with a gymnasium Dict observation that is neither a navigation env (no
`scene`/`agent`) nor a keyframe env: Ballet, Room Ballet, fast-mapping and whatever comes next.

Same API and timeline as `EpisodeRecorder` (step 0 = the reset observation, step t = after the t-th
action). Entities, besides the shared ones (agent/action, scalars/reward, scalars/return,
scalars/value, measures, memory/*):

  static    episode/info                 task, seed, policy, action names, what each observation is
            cameras/{key}                class legend (AnnotationContext) of a segmentation view
  each step cameras/{key}                every image-like observation: uint8 [H, W, 3] -> Image,
                                         integer [H, W] -> SegmentationImage, float [H, W(, 1)] -> DepthImage
            obs/{key}                    other numeric observations (e.g. holding, place): Scalars, one
                                         series per element (BarChart when longer than MAX_SERIES)
            text/log                     TextLog: the step's action, reward, text channel in words and
                                         measure changes
  on change text/instruction             TextLog: the text channel in words

Words come from the env when it implements the viewer protocol of the tasks layer, else from a
fallback: `env.action_names` (one name per discrete action; else "action i"),
`env.observation_text(obs)` (the text channel in words; else its token ids) and `env.classes`
(semantic class names; else "class i").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces as gym_spaces

from embodied.viewer.recording import (_DEPTH, _RGB, _SEMANTIC, EpisodeRecorder, _rr, class_legend, markdown,
                                       scalar_columns, text_columns)

MAX_SERIES = 16  # numeric observations up to this size get one plotted series per element
MAX_CLASSES = 1024  # legend size when neither the env nor the observation space bounds the ids
NO_TEXT = "(no text)"
NUMERIC_SPACES = (gym_spaces.Box, gym_spaces.Discrete, gym_spaces.MultiDiscrete, gym_spaces.MultiBinary)


def image_kind(space) -> str | None:
    """"rgb", "semantic" or "depth" for an image-like Box observation space, else None."""
    shape, dtype = getattr(space, "shape", None), getattr(space, "dtype", None)
    if shape is None or dtype is None or len(shape) not in (2, 3) or min(shape[:2]) < 2:
        return None
    if len(shape) == 3 and shape[2] == 3 and dtype == np.uint8:
        return "rgb"
    if len(shape) == 2 and np.issubdtype(dtype, np.integer):
        return "semantic"
    if np.issubdtype(dtype, np.floating) and (len(shape) == 2 or shape[2] == 1):
        return "depth"
    return None


class GenericRecorder(EpisodeRecorder):
    """Writes one episode of an env with a Dict observation (images, a `text` channel, small numeric
    vectors; discrete or vector actions) to `path` (.rrd)."""

    def __init__(self, path: str | Path, *, recording_id: str | None = None, meta: dict[str, Any] | None = None,
                 flush_every: int = 64, writer: str = "process"):
        super().__init__(path, extra_sensors=(), recording_id=recording_id, meta=meta, flush_every=flush_every,
                         writer=writer)
        self.images: dict[str, str] = {}  # observation key -> rgb | semantic | depth
        self.vectors: list[str] = []
        self.text_key: str | None = None

    def start(self, env, obs: dict, info: dict) -> None:
        if self.stream is not None:
            raise RuntimeError(f"{self.path}: recorder already started")
        spaces = getattr(env.observation_space, "spaces", None)
        if not isinstance(spaces, dict) or not isinstance(obs, dict):
            raise ValueError(f"{self.path}: a generic recording needs a Dict observation space; got "
                             f"{type(env.observation_space).__name__}")
        self.images = {k: kind for k, s in spaces.items() if (kind := image_kind(s)) is not None}
        self.text_key = "text" if "text" in spaces and "text" not in self.images else None
        self.vectors = [k for k, s in spaces.items() if k not in self.images and k != self.text_key
                        and isinstance(s, NUMERIC_SPACES)]  # e.g. gymnasium's Text space has no numbers to plot
        self._open(env)
        self.stream.blueprint(generic_blueprint, list(self.images))
        self._log_static(info)
        self._set_time(info)
        changes = self._log_observation(obs, info)
        self._add("text/log", text_columns, "episode start" + ("; " + ", ".join(changes) if changes else ""))
        self.columns.end_step()

    # -- the env's words (viewer protocol of the tasks layer) ------------------------------------
    def _action_name(self, action) -> str:
        if np.ndim(action) > 0:
            return "action " + np.array2string(np.asarray(action), precision=3, separator=", ")
        index = int(action)
        names = getattr(self.env, "action_names", None)
        return str(names[index]) if names is not None and 0 <= index < len(names) else f"action {index}"

    def _action_text(self, action) -> str:
        name = self._action_name(action)
        return name if np.ndim(action) > 0 else f"{name} ({int(action)})"

    def _text(self, obs: dict) -> str | None:
        if self.text_key is None or self.text_key not in obs:
            return None
        describe = getattr(self.env, "observation_text", None)
        if callable(describe):
            return str(describe(obs)) or NO_TEXT
        tokens = np.asarray(obs[self.text_key]).reshape(-1)
        return "text ids " + " ".join(str(int(t)) for t in tokens)

    def _class_names(self, key: str) -> list[str]:
        named = list(getattr(self.env, "classes", None) or ())
        high = np.asarray(getattr(self.env.observation_space[key], "high", 0))
        bound = int(high.max()) + 1 if high.size and np.all(np.isfinite(high)) and high.max() < MAX_CLASSES else 0
        n = max(len(named), bound) or MAX_CLASSES
        return [named[i] if i < len(named) else f"class {i}" for i in range(n)]

    # -- internals ---------------------------------------------------------------------------
    def _log_static(self, info: dict) -> None:
        rr = _rr()
        env, stream = self.env, self.stream
        for key, kind in self.images.items():
            if kind == "semantic":
                names = tuple(self._class_names(key))
                stream.log_cached(f"cameras/{key}", ("legend", names), class_legend, lambda: (names,))
        for key in self.vectors:
            size = int(np.prod(env.observation_space[key].shape or (1,)))
            if size <= MAX_SERIES:
                names = [key] if size == 1 else [f"{key}[{i}]" for i in range(size)]
                stream.log(f"obs/{key}", rr.SeriesLines, names=names, static=True)
        name = getattr(getattr(env, "cfg", None), "name", None) or type(env).__name__
        n = getattr(env.action_space, "n", None)
        actions = (", ".join(f"{i} {self._action_name(i)}" for i in range(int(n))) if n is not None
                   else str(env.action_space))
        observed = [f"{k} ({self.images.get(k) or ('text' if k == self.text_key else 'vector')}, "
                    f"{tuple(env.observation_space[k].shape)})" for k in env.observation_space.spaces]
        lines = [f"# {name}", "", *(f"- {k}: {v}" for k, v in self.meta.items()),
                 f"- actions: {actions}", f"- observations: {', '.join(observed)}"]
        stream.log("episode/info", markdown, "\n".join(lines), static=True)

    def _log_observation(self, obs: dict, info: dict) -> list[str]:
        """Images, text, vectors and measures of the current step; returns what the text log adds."""
        rr = _rr()
        s = self.state
        # Copies: the env may reuse its observation buffers before the rows are sent.
        for key, kind in self.images.items():
            value = np.asarray(obs[key])
            if kind == "rgb":
                self._add(f"cameras/{key}", _RGB, np.array(value, np.uint8))
            elif kind == "semantic":
                self._add(f"cameras/{key}", _SEMANTIC, value.astype(np.uint16))
            else:
                self._add(f"cameras/{key}", _DEPTH, np.array(value, np.float32).reshape(value.shape[:2]))
        for key in self.vectors:
            value = np.asarray(obs[key], np.float64).reshape(-1)
            if value.size <= MAX_SERIES:
                self._add(f"obs/{key}", scalar_columns, value.tolist())
            else:
                self._log(f"obs/{key}", rr.BarChart, value.astype(np.float32))
        changes = []
        text = self._text(obs)
        if text is not None:
            if text != s.instruction:
                self._add("text/instruction", text_columns, text)
                s.instruction = text
            changes.append(f"text: {text}")
        numeric = {k: float(v) for k, v in info.items() if isinstance(v, (bool, int, float, np.number))}
        if s.measure_names is None:  # the series names are fixed by the reset's info
            s.measure_names = list(numeric)
            self.stream.log("measures", rr.SeriesLines, names=s.measure_names, static=True)
        if s.measure_names:
            self._add("measures", scalar_columns, [numeric.get(k, float("nan")) for k in s.measure_names])
        # Counts and flags (integer values) are events worth a line; continuous measures would be noise.
        changes += [f"{k} {s.measures[k]:g} -> {v:g}" for k, v in numeric.items()
                    if k in s.measures and s.measures[k] != v and float(v).is_integer() and s.measures[k].is_integer()]
        s.measures.update(numeric)
        return changes


def generic_blueprint(images: list[str]):
    """Camera views in a grid beside the scalars, memory weights and text."""
    import rerun.blueprint as rrb

    side = rrb.Vertical(
        rrb.TimeSeriesView(origin="/", contents=["scalars/**", "measures", "obs/**"], name="scalars"),
        rrb.BarChartView(origin="memory/weights", name="memory weights"),
        rrb.TextLogView(origin="/", contents=["text/**", "agent/**"], name="text"),
    )
    views = [rrb.Spatial2DView(origin=f"cameras/{k}", name=k) for k in images]
    if not views:
        return rrb.Blueprint(side, collapse_panels=False)
    return rrb.Blueprint(rrb.Horizontal(rrb.Grid(*views), side, column_shares=[3, 2]), collapse_panels=False)
