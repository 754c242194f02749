"""Vectorised envs: worker processes, shared-memory observations, same-step autoreset, restart on crash.

`VectorEnv` is a `gymnasium.vector.VectorEnv`. Each worker hosts a contiguous group of envs, so more
envs than cores works. Observations are written by workers straight into shared-memory arrays
[N, ...]; only rewards, flags and infos travel through the pipes.

Autoreset (`metadata["autoreset_mode"]`): `AutoresetMode.SAME_STEP` by default. When env i's
episode ends, the observation returned for it is the first of its next episode; the finished
episode's final observation is not rendered (the envs skip that frame, so there is no
`infos["final_obs"]`). `AutoresetMode.NEXT_STEP` (opt-in) returns the final observation and resets
on the next step, ignoring that step's action; gymnasium's observation wrappers
(`NormalizeObservation`, `FilterObservation`, ...) accept only that mode.

Infos are gymnasium's dict of arrays: `infos[key][i]` with the mask `infos["_" + key][i]` saying
whether env i reported `key` (numbers -> numeric arrays, strings and other objects -> object arrays,
nested dicts -> nested dicts of arrays). Keys:
- the step's info of each env; in SAME_STEP mode, for an env whose episode just ended, the info of
  its next episode's reset (gymnasium's convention);
- `final_info` / `_final_info`: for each env whose episode ended at this step, that step's info
  (the task's measures: success, spl, question_type, ...) plus `return` (summed reward) and
  `length` (steps). `finished_episodes(infos)` gives them as {env index: {measure: value}};
- `worker_restarted` / `_worker_restarted`: True for the envs of a worker that died and was
  restarted; their episodes are lost (truncated, no `final_info`) and new ones started.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import multiprocessing.util  # noqa: F401  (registers its exit handler before ours)
import os
import pickle
import signal
import sys
import traceback
import types
import weakref
from multiprocessing import shared_memory
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from embodied.config import InputError

log = logging.getLogger(__name__)
RESTART_SEED_STRIDE = 1_000_003


_SCALARS = (bool, int, float, np.bool_, np.number)


def _column(values: list, present: np.ndarray | None, n: int) -> Any:
    """One info key over the envs: `values` of the envs in `present` (None: all); None for dicts."""
    kind = type(values[0])
    same = all([type(v) is kind for v in values])
    if kind is float and same:  # the usual case: a measure
        column = np.array(values)
    elif same and kind is dict or not same and all(isinstance(v, dict) for v in values):
        return None  # caller batches dicts
    elif all(isinstance(v, _SCALARS) for v in values):
        column = np.array(values)
    elif all(isinstance(v, np.ndarray) and v.shape == values[0].shape for v in values):
        column = np.stack(values)
    else:
        column = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):  # element by element: lists and ragged arrays stay whole
            column[i] = v
        if present is None:
            return column
        full = np.full(n, None, dtype=object)
        full[present] = column
        return full
    if present is None:
        return column
    full = np.zeros((n, *column.shape[1:]), column.dtype)
    full[present] = column
    return full


def batch_infos(infos: list[dict]) -> dict[str, Any]:
    """Per-env info dicts -> gymnasium's dict of arrays: `out[key][i]`, with `out["_" + key][i]` True
    where env i reported `key`. Numbers share one numeric array, arrays of one shape are stacked,
    nested dicts are batched in turn, anything else (strings) is an object array (None where absent).
    Built on every step: kept to a few microseconds per key."""
    n = len(infos)
    out: dict[str, Any] = {}
    if not n:
        return out
    keys = list(infos[0])
    uniform = all([list(info) == keys for info in infos])  # the usual case: every env reports the same keys
    if not uniform:
        keys = list(dict.fromkeys(k for info in infos for k in info))
    everywhere = np.ones(n, bool)
    if uniform:  # the measures (floats in every env) as one [n, k] array, split into columns: one conversion
        floats = [k for k in keys if all([type(info[k]) is float for info in infos])]
        if len(floats) > 1:
            table = np.array([[info[k] for k in floats] for info in infos])
            for j, key in enumerate(floats):
                out[key], out["_" + key] = table[:, j], everywhere.copy()
            keys = [k for k in keys if k not in out]
    for key in keys:
        if uniform:
            present = None
            values = [info[key] for info in infos]
        else:
            present = np.fromiter((key in info for info in infos), bool, n)
            values = [info[key] for info in infos if key in info]
        column = _column(values, present, n)
        if column is None:
            column = batch_infos([info.get(key, {}) for info in infos])
        out[key] = column
        out["_" + key] = everywhere.copy() if present is None else present
    return out


def vector_infos(infos: list[dict], finals: list[dict | None]) -> dict[str, Any]:
    """The infos `VectorEnv.step` returns: each env's info, and `final_info` for the envs whose episode ended."""
    out = batch_infos(infos)
    if any(f is not None for f in finals):
        # Not `episode`: gymnasium's RecordEpisodeStatistics writes infos["episode"] = {r, l, t} and
        # raises if the key is already there. `final_info` is gymnasium's own key for a same-step
        # autoreset env's finished step.
        out["final_info"] = batch_infos([f or {} for f in finals])
        out["_final_info"] = np.array([f is not None for f in finals])
    return out


def finished_episodes(infos: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{env index: measures} of the episodes that ended at this step: the scalar values (numbers as
    Python int/float/bool, strings) of `infos["final_info"]`, with `return` and `length`."""
    final = infos.get("final_info")
    if final is None:
        return {}
    scalars = [k for k, v in final.items() if not k.startswith("_") and isinstance(v, np.ndarray) and v.ndim == 1]
    out = {}
    for i in np.flatnonzero(infos["_final_info"]):
        episode = {}
        for k in scalars:
            if final["_" + k][i]:
                v = final[k][i]
                if isinstance(v, np.generic):
                    v = v.item()
                if isinstance(v, (int, float, str)):
                    episode[k] = v
        out[int(i)] = episode
    return out


class EnvGroup:
    """A few envs stepped in sequence, writing observations into caller-owned arrays."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], obs_arrays: dict[str, np.ndarray],
                 autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP) -> None:
        self.envs = [fn() for fn in env_fns]
        self.same_step = autoreset_mode == AutoresetMode.SAME_STEP
        if self.same_step:  # a finished episode's last observation is replaced by the reset's below
            for env in self.envs:
                if hasattr(env.unwrapped, "final_observation"):
                    env.unwrapped.final_observation = False
        self.obs = obs_arrays  # each [len(envs), ...]
        self.returns = np.zeros(len(self.envs))
        self.lengths = np.zeros(len(self.envs), np.int64)
        # NEXT_STEP mode: the envs to reset at the next step (their episode ended), with the seed to use
        self.pending: list[tuple[int | None] | None] = [None] * len(self.envs)

    def _write(self, i: int, obs: dict) -> None:
        for k, arr in self.obs.items():
            arr[i] = obs[k]

    def _reset_one(self, i: int, seed: int | None, options: dict | None = None) -> dict:
        env = self.envs[i]
        obs, info = env.reset(seed=seed) if options is None else env.reset(seed=seed, options=options)
        self._write(i, obs)
        self.returns[i], self.lengths[i] = 0.0, 0
        self.pending[i] = None
        return info

    def reset(self, seeds: list[int | None], options: dict | None = None, mask: list[bool] | None = None,
              defer: bool = False) -> list[dict]:
        """Reset the envs (those in `mask`); `defer`: at their next step instead (NEXT_STEP mode)."""
        infos = []
        for i, seed in enumerate(seeds):
            if mask is not None and not mask[i]:
                infos.append({})
            elif defer:
                self.pending[i] = (seed,)
                infos.append({})
            else:
                infos.append(self._reset_one(i, seed, options))
        return infos

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict], list[dict | None]]:
        """Rewards, terminations, truncations, each env's info and, for each env whose episode ended,
        its final info with `return` and `length` (else None)."""
        n = len(self.envs)
        rew, term, trunc = np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
        infos: list[dict] = []
        finals: list[dict | None] = [None] * n
        for i, env in enumerate(self.envs):
            if self.pending[i] is not None:  # NEXT_STEP: this step resets the env, its action is ignored
                infos.append(self._reset_one(i, self.pending[i][0]))
                continue
            obs, r, te, tr, info = env.step(actions[i])
            self.returns[i] += r
            self.lengths[i] += 1
            rew[i], term[i], trunc[i] = r, te, tr
            if te or tr:
                finals[i] = {**info, "return": float(self.returns[i]), "length": int(self.lengths[i])}
                if self.same_step:
                    obs, info = env.reset()
                    self.returns[i], self.lengths[i] = 0.0, 0
                else:
                    self.pending[i] = (None,)
            self._write(i, obs)
            infos.append(info)
        return rew, term, trunc, infos, finals

    def prefetch(self) -> bool:
        """Let one env prepare its next episode ahead (see NavEnv.prefetch); False when none had work."""
        for env in self.envs:
            prefetch = getattr(env.unwrapped, "prefetch", None)
            if prefetch is not None and prefetch():
                return True
        return False

    def call(self, name: str, args: tuple, kwargs: dict) -> list[Any]:
        out = []
        for env in self.envs:
            attr = getattr(env.unwrapped, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return out

    def set_attr(self, name: str, values: list[Any]) -> None:
        for env, value in zip(self.envs, values):
            setattr(env.unwrapped, name, value)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def available_cpus() -> list[int]:
    """The CPUs this process may run on (a SLURM job's allocation, a taskset), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_plan(cpus: list[int], num_workers: int, local_rank: int = 0) -> list[list[int] | None]:
    """The CPUs each worker is pinned to: one each, from `cpus` (shifted by local_rank x workers),
    when the workers fill them (num_workers >= len(cpus) >= 2); else None for all (not pinned)."""
    if not 2 <= len(cpus) <= num_workers:
        return [None] * num_workers
    offset = local_rank * num_workers
    return [[cpus[(offset + w) % len(cpus)]] for w in range(num_workers)]


def _portable(e: InputError) -> InputError:
    """`e` if it survives the pipe (pickle), else an InputError with its message."""
    try:
        return pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 - a subclass with its own __init__ or unpicklable attributes
        return InputError(str(e))


def _worker(conn, env_fns, shm_specs, lo, hi, render_threads, cpus=None,
            autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP) -> None:
    # Stop and preemption signals are the trainer's to handle (SLURM and `timeout` signal the whole
    # process group): it saves, then closes its workers. A worker killed by them instead would be
    # restarted, rebuilding its scenes, in the seconds the trainer has to save.
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
    os.environ["EMBODIED_RENDER_THREADS"] = str(render_threads)
    if cpus:
        os.sched_setaffinity(0, cpus)
    shms = {k: shared_memory.SharedMemory(name=name) for k, (name, _, _) in shm_specs.items()}
    arrays = {k: np.ndarray(shape, dtype, buffer=shms[k].buf)[lo:hi] for k, (_, shape, dtype) in shm_specs.items()}
    group = None
    try:
        try:
            group = EnvGroup(env_fns, arrays, autoreset_mode)
        except InputError as e:  # bad input (a scene file, a task option): the caller raises it as it is
            conn.send(("input_error", _portable(e)))
            return
        except Exception as e:  # the caller raises it with this traceback instead of a bare EOFError
            conn.send(("error", f"building its envs: {type(e).__name__}: {e}\n{traceback.format_exc()}"))
            return
        conn.send(("ready", None))
        while True:
            # Idle until the trainer's next command (it is computing actions): draw episodes ahead.
            if not conn.poll() and group.prefetch():
                continue
            cmd, payload = conn.recv()
            try:
                if cmd == "reset":
                    conn.send(("ok", group.reset(*payload)))
                elif cmd == "step":
                    conn.send(("ok", group.step(payload)))
                elif cmd == "call":
                    conn.send(("ok", group.call(*payload)))
                elif cmd == "set_attr":
                    conn.send(("ok", group.set_attr(*payload)))
                elif cmd == "close":
                    conn.send(("ok", None))
                    break
            except InputError as e:  # one line naming the input, as when raised in the caller's process
                conn.send(("input_error", _portable(e)))
            except Exception as e:  # an env error is the caller's to see, with the worker's traceback
                conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    except (EOFError, BrokenPipeError):  # the trainer is gone: nothing left to serve
        pass
    finally:
        if group is not None:
            group.close()
        del arrays
        for s in shms.values():
            s.close()


def needs_main(env_fns) -> bool:
    """Whether the env fns refer to the main module (a function or class defined in the script):
    only then must a worker run the script again to unpickle them. Every reference to a global of
    `__main__` writes that name into the pickle; unpicklable fns fail later with their own error."""
    try:
        return b"__main__" in pickle.dumps(env_fns)
    except Exception:  # noqa: BLE001
        return True


@contextlib.contextmanager
def main_hidden():
    """Start processes without the main module. spawn and forkserver children run the parent's main
    script again (as __mp_main__) before they unpickle their target, so a script without an
    `if __name__ == "__main__":` guard would build its envs again in every worker and fail there
    starting another VectorEnv ("An attempt has been made to start a new process before ...")."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__: nothing to run
    try:
        yield
    finally:
        sys.modules["__main__"] = main


# Thread pools a worker's libraries size to the whole machine at import (numpy's OpenBLAS, OpenMP, MKL):
# with one worker per core, 16 workers x 16 spinning BLAS threads compete with the ray casters.
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def worker_threads(n: int):
    """Start processes with the thread pools above capped at n (a variable the user set is kept). The
    child (or the forkserver, which every later child inherits from) reads them when numpy loads."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    for k, v in saved.items():
        if v is None:
            os.environ[k] = str(n)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


_OPEN: "weakref.WeakSet[VectorEnv]" = weakref.WeakSet()


@atexit.register
def _close_open_envs() -> None:
    # Registered after multiprocessing's own exit handler (multiprocessing.util, imported above), so
    # it runs first: that one SIGTERMs daemon workers, which ignore it, and would wait on them for ever.
    for env in list(_OPEN):
        try:
            env.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


class EnvError(RuntimeError):
    """An env raised inside a worker; the message carries the worker's traceback."""


class VectorEnv(gym.vector.VectorEnv):
    """`num_envs` envs in `num_workers` processes (0 = in this process), as a gymnasium vector env;
    autoreset and infos: see the module docstring.

    autoreset_mode: AutoresetMode.SAME_STEP (default; the final observation is never rendered) or
    AutoresetMode.NEXT_STEP (for gymnasium's observation wrappers, which refuse SAME_STEP). A worker
    restarted after a crash resets its envs at once (SAME_STEP) or at their next step (NEXT_STEP: the
    observations reported with the restart are the last ones that worker wrote).

    pin_workers: when the workers fill every CPU this process may use (num_workers >= CPUs), each
    worker is pinned to one CPU (in turn, shifted by torchrun's LOCAL_RANK), so that two never
    share one core while another idles (on 2 cores, 8 envs in 2 workers, alternating runs: 3574-3786
    env steps/s pinned, 3249-3563 not). Fewer workers than CPUs are never pinned (another run on the same
    machine would be pinned to the same CPUs)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], num_workers: int | None = None,
                 start_method: str = "forkserver", pin_workers: bool = True,
                 autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP) -> None:
        if not env_fns:
            raise ValueError("VectorEnv needs at least one env")
        if autoreset_mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
            raise ValueError(f"autoreset_mode={autoreset_mode}; allowed: AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP")
        self.env_fns = env_fns
        self.num_envs = len(env_fns)
        self.autoreset_mode = autoreset_mode
        probe = env_fns[0]()
        self.single_observation_space: gym.spaces.Dict = probe.observation_space
        self.single_action_space = probe.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**probe.metadata, "autoreset_mode": autoreset_mode}
        self.render_mode = probe.render_mode
        probe.close()
        cpus = available_cpus()
        workers = min(self.num_envs, len(cpus)) if num_workers is None else num_workers
        if workers < 0:
            raise ValueError(f"num_workers={workers}; allowed: >= 0 (0 runs envs in this process)")
        self.num_workers = min(workers, self.num_envs)
        # Workers share the cores: each casts rays on one thread unless there are spare cores.
        self.render_threads = max(1, len(cpus) // max(1, self.num_workers))
        self.worker_cpus: list[list[int] | None] = [None] * self.num_workers
        if pin_workers and hasattr(os, "sched_setaffinity"):
            self.worker_cpus = pin_plan(cpus, self.num_workers, int(os.environ.get("LOCAL_RANK", "0") or 0))
        self.restarts = 0
        self._seeds: list[int | None] = [None] * self.num_envs
        shapes = {k: ((self.num_envs, *s.shape), np.dtype(s.dtype)) for k, s in self.single_observation_space.items()}
        if self.num_workers == 0:
            self._arrays = {k: np.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()}
            self._group = EnvGroup(env_fns, self._arrays, autoreset_mode)
            return
        self._ctx = mp.get_context(start_method)
        # Workers skip the main script when the env fns do not live in it (make_vector_env's never do).
        self._hide_main = start_method != "fork" and not needs_main(env_fns)
        _OPEN.add(self)
        self._shms = {k: shared_memory.SharedMemory(create=True, size=max(1, int(np.prod(shape)) * dtype.itemsize))
                      for k, (shape, dtype) in shapes.items()}
        self._arrays = {k: np.ndarray(shape, dtype, buffer=self._shms[k].buf) for k, (shape, dtype) in shapes.items()}
        self._shm_specs = {k: (self._shms[k].name, shape, dtype) for k, (shape, dtype) in shapes.items()}
        bounds = np.linspace(0, self.num_envs, self.num_workers + 1).round().astype(int)
        self._slices = [(int(bounds[w]), int(bounds[w + 1])) for w in range(self.num_workers)]
        self._procs: list[Any] = [None] * self.num_workers
        self._conns: list[Any] = [None] * self.num_workers
        try:
            for w in range(self.num_workers):
                self._start_worker(w)
            for w in range(self.num_workers):
                self._recv_started(w)
        except BaseException:
            self.close()
            raise

    # -- workers ---------------------------------------------------------------------------
    def _start_worker(self, w: int) -> None:
        lo, hi = self._slices[w]
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(child, self.env_fns[lo:hi], self._shm_specs, lo, hi,
                                                       self.render_threads, self.worker_cpus[w], self.autoreset_mode),
                                 daemon=True, name=f"embodied-env-{w}")
        with main_hidden() if self._hide_main else contextlib.nullcontext(), worker_threads(self.render_threads):
            proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent

    def _recv(self, w: int):
        conn, proc = self._conns[w], self._procs[w]
        while not conn.poll(1.0):
            if not proc.is_alive():
                raise EOFError
        status, payload = conn.recv()
        if status == "input_error":
            raise payload
        if status == "error":
            raise EnvError(f"env worker {w}: {payload}")
        return payload

    def _recv_started(self, w: int) -> None:
        """The worker's "ready"; an error if it died first (an import or bootstrap failure, whose
        traceback the worker printed) or failed to build its envs."""
        try:
            self._recv(w)
        except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
            self._procs[w].join(timeout=5)
            raise EnvError(f"env worker {w} exited while starting (exit code {self._procs[w].exitcode}) before "
                           "reporting; its traceback, if any, is in the output above") from None

    def _restart(self, w: int, defer: bool = False) -> list[dict]:
        """Start worker w again and reset its envs (`defer`: at their next step, NEXT_STEP mode's way)."""
        lo, hi = self._slices[w]
        code = self._procs[w].exitcode if self._procs[w] is not None else None
        self.restarts += 1
        log.warning("env worker %d (envs %d-%d) died (exit code %s); restarting it, run continues", w, lo, hi - 1, code)
        try:
            self._procs[w].kill()
        except Exception:
            pass
        self._start_worker(w)
        self._recv_started(w)  # a worker that cannot start again is an error, not a restart loop
        seeds = [None if s is None else s + RESTART_SEED_STRIDE * self.restarts for s in self._seeds[lo:hi]]
        self._conns[w].send(("reset", (seeds, None, None, defer)))
        return self._recv(w)

    def _broadcast(self, cmd: str, payloads: list) -> list:
        for w in range(self.num_workers):
            try:
                self._conns[w].send((cmd, payloads[w]))
            except (BrokenPipeError, OSError):
                pass  # noticed on receive
        results = []
        for w in range(self.num_workers):
            try:
                results.append(self._recv(w))
            except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
                defer = cmd == "step" and self.autoreset_mode == AutoresetMode.NEXT_STEP
                results.append(("restarted", self._restart(w, defer)))
        return results

    # -- API -------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(observations, infos). seed: an int seeds env i with seed + i, a list one seed per env.
        options: passed to every env's reset; `options["reset_mask"]` (bool [N]) resets only those envs."""
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: {len(seeds)} seeds for {self.num_envs} envs; allowed: an int or one per env")
        options = dict(options) if options else None
        mask = None
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options.pop("reset_mask"))
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask']: shape {mask.shape}, dtype {mask.dtype}; "
                                 f"allowed: a bool array of shape ({self.num_envs},)")
            options = options or None
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        self._seeds = [s if mask is None or mask[i] else self._seeds[i] for i, s in enumerate(seeds)]
        if self.num_workers == 0:
            infos = self._group.reset(seeds, options, mask)
        else:
            infos = []
            payloads = [(seeds[lo:hi], options, None if mask is None else mask[lo:hi].tolist(), False)
                        for lo, hi in self._slices]
            for res in self._broadcast("reset", payloads):
                if isinstance(res, tuple) and len(res) == 2 and res[0] == "restarted":
                    res = [{**i, "worker_restarted": True} for i in res[1]]
                infos.extend(res)
        return {k: v.copy() for k, v in self._arrays.items()}, batch_infos(infos)

    def step(self, actions) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(observations, rewards, terminations, truncations, infos)."""
        actions = np.asarray(actions)
        shape = (self.num_envs, *(self.single_action_space.shape or ()))  # Box actions: [N, *shape]
        if actions.shape != shape:
            raise ValueError(f"actions must have shape {shape}, got {actions.shape}")
        if self.num_workers == 0:
            rew, term, trunc, infos, finals = self._group.step(actions)
        else:
            rew = np.zeros(self.num_envs, np.float32)
            term, trunc = np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool)
            infos: list[dict] = [{} for _ in range(self.num_envs)]
            finals: list[dict | None] = [None] * self.num_envs
            results = self._broadcast("step", [actions[lo:hi] for lo, hi in self._slices])
            for (lo, hi), res in zip(self._slices, results):
                if isinstance(res, tuple) and len(res) == 2 and res[0] == "restarted":
                    trunc[lo:hi] = True  # the episodes in flight are lost; the new ones start now
                    infos[lo:hi] = [{**i, "worker_restarted": True} for i in res[1]]
                    continue
                r, te, tr, inf, fin = res
                rew[lo:hi], term[lo:hi], trunc[lo:hi] = r, te, tr
                infos[lo:hi], finals[lo:hi] = inf, fin
        return {k: v.copy() for k, v in self._arrays.items()}, rew, term, trunc, vector_infos(infos, finals)

    def call(self, name: str, *args, **kwargs) -> list[Any]:
        """Call a method (or read an attribute) of every env's unwrapped env."""
        if self.num_workers == 0:
            return self._group.call(name, args, kwargs)
        out: list[Any] = []
        for res in self._broadcast("call", [(name, args, kwargs)] * self.num_workers):
            if isinstance(res, tuple) and len(res) == 2 and res[0] == "restarted":
                raise EnvError(f"an env worker died during call({name!r}); it was restarted")
            out.extend(res)
        return out

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """An attribute of every env's unwrapped env."""
        return tuple(self.call(name))

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set an attribute of every env's unwrapped env: one value for all, or a list with one per env."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr({name!r}): {len(values)} values for {self.num_envs} envs")
        if self.num_workers == 0:
            self._group.set_attr(name, list(values))
            return
        for res in self._broadcast("set_attr", [(name, list(values[lo:hi])) for lo, hi in self._slices]):
            if isinstance(res, tuple) and len(res) == 2 and res[0] == "restarted":
                raise EnvError(f"an env worker died during set_attr({name!r}); it was restarted")

    def render(self) -> tuple[Any, ...] | None:
        """Each env's `render()` (gymnasium's vector render)."""
        return tuple(self.call("render"))

    def worker_pids(self) -> list[int]:
        return [] if self.num_workers == 0 else [p.pid for p in self._procs]

    def close(self, **kwargs: Any) -> None:
        if self.closed:
            return
        self.closed = True
        if self.num_workers == 0:
            self._group.close()
            return
        for w in range(self.num_workers):
            try:
                self._conns[w].send(("close", None))
            except Exception:
                pass
        for p in self._procs:
            if p is None:  # never started: construction failed before it
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self._arrays = {}
        for s in self._shms.values():
            s.close()
            s.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
