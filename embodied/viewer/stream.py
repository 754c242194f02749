"""Where a recorder's rerun work runs: in this process (`InlineStream`) or in a writer process
(`ProcessStream`), behind one small API.

Recorders (embodied/viewer/recording.py and its subclasses) describe what to log as ops built from
picklable parts: an archetype class or a module-level function with its arguments, or a column
builder with its per-step rows. An InlineStream applies each op at once. A ProcessStream buffers the
ops and sends them at every flush to one writer process shared by all recordings of this process,
which builds the archetypes, converts them to Arrow and writes the `.rrd` files, so the evaluating
process only copies rows (`embodied bench record` measures both).

With a ProcessStream a file is complete once `sync()` returns, and `sync()` raises what went wrong in
the writer. The writer ignores Ctrl-C and finishes every open recording when its input closes, so a
crash or kill of this process loses only the rows not yet flushed (at most a recorder's
`flush_every` steps), as an inline recording does.
"""
from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

APPLICATION_ID = "embodied"
TIMELINE = "step"
WRITERS = ("process", "inline")
PIPE_BYTES = 4 << 20
CACHE_SIZE = 32  # static archetypes (3 per scene: mesh, legend, map) kept per process, least recently used out
# The writer runs at the lowest priority: its work only has to be done by the next sync, and it should
# not take cores from the process it records (embodied bench record, 2 cores: cost 0.29-0.31 at
# niceness 0, 0.18-0.31 at 10, 0.22-0.26 at 19). It cannot starve: a full pipe stalls the recording
# process (and the env workers waiting on it), which frees the cores. EMBODIED_WRITER_NICE: 0-19.
WRITER_NICE = 19


def _rr():
    import rerun as rr

    return rr


def rerun_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for rerun processes: the rerun binary skips its usage analytics when `CI` is set
    (re_analytics checks it; there is no RERUN_* switch), so no viewer we start phones home."""
    env = dict(os.environ if env is None else env)
    env.setdefault("CI", "1")
    return env


# --- column builders: rows of one entity -> rerun columns (picklable, so the writer can run them) --

class ImageColumns:
    """Image / DepthImage / SegmentationImage columns from same-size arrays."""

    def __init__(self, archetype: str, color_model: str | None, channel_datatype: str):
        self.archetype, self.color_model, self.channel_datatype = archetype, color_model, channel_datatype

    def __call__(self, images: list):
        rr = _rr()
        stack = np.stack(images)
        fmt = rr.components.ImageFormat(width=stack.shape[2], height=stack.shape[1], color_model=self.color_model,
                                        channel_datatype=self.channel_datatype)
        extra = {"meter": [1.0] * len(images)} if self.archetype == "DepthImage" else {}
        return getattr(rr, self.archetype).columns(buffer=stack.reshape(len(images), -1).view(np.uint8),
                                                   format=[fmt] * len(images), **extra)


class Points2DColumns:
    """Points2D columns, one (possibly empty) set of points per row, in one colour and radius."""

    def __init__(self, color, radius: float):
        self.color, self.radius = tuple(color), float(radius)

    def __call__(self, point_sets: list):
        rr = _rr()
        lengths = [len(p) for p in point_sets]
        positions = np.concatenate([np.asarray(p, np.float32).reshape(-1, 2) for p in point_sets])
        # Arrays, not Python lists of per-point tuples: converting those was most of the cost.
        n = len(positions)
        columns = rr.Points2D.columns(positions=positions, colors=np.tile(np.asarray(self.color, np.uint8), (n, 1)),
                                      radii=np.full(n, self.radius, np.float32))
        return columns.partition(lengths)


class StripColumns:
    """LineStrips3D columns, one strip per row."""

    def __init__(self, color, radius: float):
        self.color, self.radius = tuple(color), float(radius)

    def __call__(self, strips: list):
        return _rr().LineStrips3D.columns(strips=strips, colors=[self.color] * len(strips),
                                          radii=[self.radius] * len(strips))


def transform_columns(poses: list):
    """(x, y, z, yaw) rows -> Transform3D columns (translation, quaternion about +z)."""
    rr = _rr()
    p = np.asarray(poses, np.float64)
    quaternion = np.stack([np.zeros(len(p)), np.zeros(len(p)), np.sin(p[:, 3] / 2), np.cos(p[:, 3] / 2)], -1)
    return rr.Transform3D.columns(translation=p[:, :3].astype(np.float32), quaternion=quaternion.astype(np.float32))


def scalar_columns(values: list):
    return _rr().Scalars.columns(scalars=np.asarray(values, np.float64))


def text_columns(texts: list):
    return _rr().TextLog.columns(text=texts, level=["INFO"] * len(texts))


def text_log(text: str):
    rr = _rr()
    return rr.TextLog(text, level=rr.TextLogLevel.INFO)


def markdown(text: str):
    rr = _rr()
    return rr.TextDocument(text, media_type=rr.MediaType.MARKDOWN)


def world_z_up():
    return _rr().ViewCoordinates.RIGHT_HAND_Z_UP


# --- applying ops to one file ----------------------------------------------------------------------

class _FileWriter:
    """One open `.rrd` file and the ops that write it. Ops (tuples):
      ("log", entity, factory, args, kwargs, static, time)   time = (step, env_step) or None
      ("cached", entity, key, factory, args)                 static; args None = built earlier under key
      ("evict", key)                                         drop a cached archetype
      ("columns", [(entity, build, rows), ...])              rows = [(step, env_step, value), ...]
      ("blueprint", factory, args)
    Column builders are kept per entity from their first batch, so a stateful one (the explored-area
    map) keeps its state across the batches of a recording wherever it runs."""

    def __init__(self, path: str, recording_id: str, cache: dict):
        rr = _rr()
        self.path = path
        self.rec = rr.RecordingStream(APPLICATION_ID, recording_id=recording_id)
        self.rec.save(path)
        self.cache = cache
        self.builders: dict[str, Callable] = {}

    def apply(self, op: tuple) -> None:
        kind = op[0]
        if kind in ("cached", "evict"):
            _update_cache(self.cache, op)
            if kind == "cached":
                self.rec.log(op[1], self.cache[op[2]], static=True)
        elif kind == "log":
            _, entity, factory, args, kwargs, static, time = op
            if time is not None:
                self.rec.set_time(TIMELINE, sequence=time[0])
                self.rec.set_time("env_step", sequence=time[1])
            self.rec.log(entity, factory(*args, **kwargs), static=static)
        elif kind == "columns":
            rr = _rr()
            indexes: dict[tuple, list] = {}  # most entities have a row every step: build their time columns once
            for entity, build, rows in op[1]:
                build = self.builders.setdefault(entity, build)
                times = tuple((r[0], r[1]) for r in rows)
                if times not in indexes:
                    indexes[times] = [rr.TimeColumn(TIMELINE, sequence=[t[0] for t in times]),
                                      rr.TimeColumn("env_step", sequence=[t[1] for t in times])]
                self.rec.send_columns(entity, indexes=indexes[times], columns=build([r[2] for r in rows]))
        elif kind == "blueprint":
            self.rec.send_blueprint(op[1](*op[2]))
        else:
            raise ValueError(f"unknown recording op {kind!r}")

    def close(self) -> None:
        self.rec.disconnect()  # flushes the batcher and the file sink before closing


# --- streams ------------------------------------------------------------------------------------

class Stream:
    """What a recorder logs through. Subclasses decide where the ops are applied."""

    def __init__(self, path: str, recording_id: str):
        self.path, self.recording_id = str(path), recording_id

    def log(self, entity: str, factory: Callable, *args, static: bool = False, time: tuple | None = None,
            **kwargs) -> None:
        if not static and time is None:
            raise ValueError(f"{entity}: a non-static row needs its time (step, env_step)")
        self._op(("log", entity, factory, args, kwargs, static, time))

    def log_cached(self, entity: str, key, factory: Callable, args: Callable[[], tuple]) -> None:
        """Log `factory(*args())` as static, building it (and computing `args()`) once per `key` in a
        process: a scene's mesh is the same in every episode recorded in it. The recording process
        decides what the applying side keeps (`keys`) and tells it what to drop."""
        if self.keys.touch(key):
            self._op(("cached", entity, key, factory, None))
            return
        self._op(("cached", entity, key, factory, args()))
        for old in self.keys.add(key):
            self._op(("evict", old))

    def blueprint(self, factory: Callable, *args) -> None:
        self._op(("blueprint", factory, args))

    def columns(self, batch: list) -> None:
        if batch:
            self._op(("columns", batch))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        raise NotImplementedError

    def _op(self, op: tuple) -> None:
        raise NotImplementedError


class _CacheKeys:
    """The keys of the static archetypes the applying side holds, least recently used first."""

    def __init__(self):
        self.keys: OrderedDict = OrderedDict()

    def touch(self, key) -> bool:
        """True (and now most recently used) if held."""
        if key in self.keys:
            self.keys.move_to_end(key)
            return True
        return False

    def add(self, key) -> list:
        """Hold `key`; returns the keys to drop to stay within CACHE_SIZE."""
        self.keys[key] = True
        evicted = []
        while len(self.keys) > CACHE_SIZE:
            evicted.append(self.keys.popitem(last=False)[0])
        return evicted


_INLINE_KEYS, _INLINE_CACHE = _CacheKeys(), {}


class InlineStream(Stream):
    """Applies every op at once, in this process."""

    def __init__(self, path: str, recording_id: str):
        super().__init__(path, recording_id)
        self.keys = _INLINE_KEYS
        self.file = _FileWriter(self.path, recording_id, _INLINE_CACHE)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _op(self, op) -> None:
        self.file.apply(op)


class ProcessStream(Stream):
    """Buffers ops and sends them to the shared writer process at each `flush()` and at `close()`."""

    def __init__(self, path: str, recording_id: str):
        super().__init__(path, recording_id)
        self.writer = _writer()
        self.keys = self.writer.keys
        self.rid = self.writer.open(self.path, recording_id)
        self.ops: list[tuple] = []
        self.closed = False

    def flush(self) -> None:
        if self.ops:
            ops, self.ops = self.ops, []
            self.writer.send(("ops", self.rid, ops))

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.writer.send(("close", self.rid))
            self.closed = True

    def _op(self, op) -> None:
        if self.closed:
            raise RuntimeError(f"{self.path}: recording already closed")
        self.ops.append(op)


def check_writer(writer: str) -> str:
    if writer not in WRITERS:
        raise ValueError(f"writer: {writer!r}; allowed: {', '.join(WRITERS)}")
    return writer


def open_stream(path, recording_id: str, writer: str = "process") -> Stream:
    return (ProcessStream if check_writer(writer) == "process" else InlineStream)(str(path), recording_id)


# --- the writer process -----------------------------------------------------------------------------

def _writer_nice() -> int:
    raw = os.environ.get("EMBODIED_WRITER_NICE", str(WRITER_NICE))
    try:
        nice = int(raw)
    except ValueError:
        nice = -1
    if not 0 <= nice <= 19:
        raise ValueError(f"EMBODIED_WRITER_NICE={raw!r}: expected a niceness increment 0..19")
    return nice


class _WriterProcess:
    """`python -m embodied.viewer.stream IN OUT NICE`: pickled messages in, sync replies out, over two pipes
    (not stdin/stdout, which libraries may print to). Messages:
      ("open", rid, path, recording_id)  ("ops", rid, ops)  ("close", rid)  ("sync", token)  ("exit",)
    Factories and builders travel by reference: they must be importable (module level) by the writer.
    Replies to ("sync", token): ("synced", token, [(path, error text), ...])."""

    def __init__(self):
        nice = _writer_nice()
        to_child, from_parent = os.pipe()[::-1]  # (write end, read end)
        from_child, to_parent = os.pipe()
        _widen(to_child)
        self.proc = subprocess.Popen([sys.executable, "-m", "embodied.viewer.stream", str(from_parent), str(to_parent),
                                      str(nice)],
                                     pass_fds=(from_parent, to_parent), stdin=subprocess.DEVNULL, env=rerun_env())
        os.close(from_parent)
        os.close(to_parent)
        self.out = os.fdopen(to_child, "wb")
        self.inp = os.fdopen(from_child, "rb")
        self.pid = os.getpid()
        self.next_rid = self.next_token = 0
        self.keys = _CacheKeys()  # what the writer's static cache holds
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def open(self, path: str, recording_id: str) -> int:
        self.next_rid += 1
        self.send(("open", self.next_rid, path, recording_id))
        return self.next_rid

    def send(self, message: tuple) -> None:
        with self.lock:
            self._write(message)

    def _write(self, message: tuple) -> None:
        """Control messages as one pickle; ("ops", rid, ops) as a ("ops", rid, nbytes) header and the
        pickled ops, so ops the writer cannot unpickle fail their recording, not the stream."""
        try:
            if message[0] == "ops":
                payload = pickle.dumps(message[2], protocol=pickle.HIGHEST_PROTOCOL)
                pickle.dump(("ops", message[1], len(payload)), self.out, protocol=pickle.HIGHEST_PROTOCOL)
                self.out.write(payload)
            else:
                pickle.dump(message, self.out, protocol=pickle.HIGHEST_PROTOCOL)
            self.out.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:  # ValueError: the pipe was closed here
            raise RuntimeError(f"the recording writer process exited (code {self.proc.poll()}); "
                               f"its error, if any, is on stderr above") from exc

    def sync(self) -> None:
        """Wait until every op sent so far is written (closed recordings are complete files)."""
        with self.lock:  # one request, its own reply, even with several recording threads
            self.next_token += 1
            token = self.next_token
            self._write(("sync", token))
            try:
                reply = pickle.load(self.inp)
            except EOFError as exc:
                raise RuntimeError(f"the recording writer process exited (code {self.proc.poll()}) "
                                   f"before writing every recording; its error is on stderr above") from exc
        if reply[:2] != ("synced", token):
            raise RuntimeError(f"recording writer: unexpected reply {reply[:2]!r}")
        if reply[2]:
            path, error = reply[2][0]
            more = f" (and {len(reply[2]) - 1} more recordings)" if len(reply[2]) > 1 else ""
            raise RuntimeError(f"{path}: writing the recording failed in the writer process{more}:\n{error}")

    def shutdown(self, timeout: float = 120.0) -> None:
        """Ask the writer to finish every open recording and exit (at exit of this process). An
        explicit message, not only EOF: a forked child may still hold the pipe's write end."""
        if self.pid != os.getpid():  # a forked child's inherited atexit: the writer is the parent's
            return
        try:
            self.send(("exit",))
            self.out.close()
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.inp.close()


def _widen(fd: int) -> None:
    """Give the pipe room for an episode's rows (Linux: 64 KiB by default, up to pipe-max-size, 1 MiB
    unless raised), so a flush is written without waiting for the writer to read it."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(int(f.read()), PIPE_BYTES)
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError, ImportError):
        pass  # other systems: the default buffer, the writer still keeps up


_WRITER: _WriterProcess | None = None


def _writer() -> _WriterProcess:
    """The writer process of this process, started on first use (a forked child starts its own)."""
    global _WRITER
    if _WRITER is None or not _WRITER.alive():
        _WRITER = _WriterProcess()
        atexit.register(_WRITER.shutdown)
    return _WRITER


def sync() -> None:
    """Block until every recording written through a ProcessStream and closed so far is complete on
    disk; raise the writer's first error, or that the writer died. A no-op when this process started
    no writer."""
    if _WRITER is not None and _WRITER.pid == os.getpid():
        _WRITER.sync()


def _serve(inp, out) -> None:
    files: dict[int, _FileWriter] = {}
    errors: list[tuple[str, str]] = []
    cache: dict[Any, Any] = {}

    def fail(rid: int, path: str) -> None:
        errors.append((path, traceback.format_exc()))
        f = files.pop(rid, None)
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass

    while True:
        try:
            message = pickle.load(inp)
        except EOFError:
            break
        kind = message[0]
        if kind == "open":
            _, rid, path, recording_id = message
            try:
                files[rid] = _FileWriter(path, recording_id, cache)
            except Exception:  # noqa: BLE001 - reported to the recording process at its next sync
                fail(rid, path)
        elif kind == "ops":
            _, rid, nbytes = message
            payload = inp.read(nbytes)
            f = files.get(rid)
            try:
                ops = pickle.loads(payload)
            except Exception:  # noqa: BLE001 - e.g. a factory defined where the writer cannot import it
                if f is not None:
                    fail(rid, f.path)
                continue
            for op in ops:
                if f is None:  # failed earlier: only keep the shared cache in step
                    _apply_dry(cache, op)
                    continue
                try:
                    f.apply(op)
                except Exception:  # noqa: BLE001
                    fail(rid, f.path)
                    f = None
        elif kind == "close":
            f = files.pop(message[1], None)
            if f is not None:
                try:
                    f.close()
                except Exception:  # noqa: BLE001
                    errors.append((f.path, traceback.format_exc()))
        elif kind == "sync":
            pickle.dump(("synced", message[1], errors), out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            errors = []
        elif kind == "exit":
            break
    for f in files.values():
        f.close()


def _update_cache(cache: dict, op: tuple) -> None:
    """A "cached" op with arguments builds and keeps its archetype; an "evict" op drops one."""
    if op[0] == "cached" and op[4] is not None:
        cache[op[2]] = op[3](*op[4])
    elif op[0] == "evict":
        cache.pop(op[1], None)


def _apply_dry(cache: dict, op: tuple) -> None:
    """Keep the shared cache in step with the recording process for ops of a failed recording."""
    try:
        _update_cache(cache, op)
    except Exception:  # noqa: BLE001 - a later use of the key reports it
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the recording process; we finish its files
    os.nice(int(sys.argv[3]))
    with os.fdopen(int(sys.argv[1]), "rb") as _inp, os.fdopen(int(sys.argv[2]), "wb") as _out:
        _serve(_inp, _out)
