"""`embodied view`: open a recording in rerun's native viewer, or serve the web viewer on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from embodied.config import InputError
from embodied.viewer.rrd import check_recording
from embodied.viewer.stream import rerun_env

DEFAULT_PORT = 9090  # `embodied view --web`: HTTP here, gRPC on the next port


def rerun_binary() -> str:
    """The rerun executable itself (the `rerun` on PATH is a Python wrapper whose child outlives a
    kill of the wrapper, so we start the binary directly)."""
    import rerun_cli

    path = Path(rerun_cli.__file__).parent / ("rerun.exe" if os.name == "nt" else "rerun")
    if not path.is_file():
        raise RuntimeError(f"rerun-sdk is installed without its viewer binary ({path} is missing)")
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def resolve_ports(host: str, port: int | None = None, grpc_port: int | None = None) -> tuple[int, int, str | None]:
    """(HTTP port, gRPC port, a note or None) for `view --web`. `port` moves both (gRPC: port + 1
    unless `grpc_port` is given); 0 picks free ones. A busy port the user asked for is an InputError;
    a busy default port (a second viewer) is replaced by a free one and the note says so."""
    web = DEFAULT_PORT if port is None else port
    grpc = grpc_port if grpc_port is not None else (0 if web == 0 else web + 1)
    for flag, value in (("--port", web), ("--grpc-port", grpc)):
        if not 0 <= value <= 65535:
            raise InputError(f"{flag}: {value}; allowed: 1-65535, or 0 to pick a free port")
    notes = []
    if web and port_in_use(host, web):
        if port is not None:
            raise InputError(f"--port {port}: {host}:{web} is in use; pass another --port, or --port 0 to pick free ports")
        notes.append(f"port {web} is in use (another viewer?): HTTP on a free port")
        web = 0
    if grpc and port_in_use(host, grpc):
        if grpc_port is not None:
            raise InputError(f"--grpc-port {grpc_port}: {host}:{grpc} is in use; pass another --grpc-port, "
                             "or 0 to pick a free port")
        if port is not None:
            raise InputError(f"--port {port}: the gRPC port {grpc} (--port + 1) on {host} is in use; "
                             "pass another --port, or --port 0 to pick free ports")
        notes.append(f"port {grpc} is in use (another viewer?): gRPC on a free port")
        grpc = 0
    return web or free_port(host), grpc or free_port(host), "; ".join(notes) or None


def _check_recording(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: a directory; allowed: a recording file in it (episode_000.rrd, ...)"
                         if path.is_dir() else f"{path}: no such recording")
    if path.suffix != ".rrd":
        raise InputError(f"{path}: not a rerun recording (.rrd)")
    return check_recording(path)  # rerun's viewer would show a truncated or foreign file as empty


class WebViewer:
    """rerun's web viewer for recordings, served over HTTP + gRPC on `host` (127.0.0.1 unless asked).

    with WebViewer(["ep.rrd"]) as viewer: print(viewer.url)
    """

    def __init__(self, paths, host: str = "127.0.0.1", web_port: int = 0, grpc_port: int = 0):
        self.paths = [_check_recording(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        self.host = host
        self.web_port = web_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        grpc = f"rerun+http://{self.host}:{self.grpc_port}/proxy"
        return f"http://{self.host}:{self.web_port}/?url={urllib.parse.quote(grpc, safe='')}"

    def start(self, timeout: float = 30.0) -> "WebViewer":
        cmd = [rerun_binary(), "--serve-web", "--bind", self.host, "--port", str(self.grpc_port),
               "--web-viewer-port", str(self.web_port), *map(str, self.paths)]
        self.process = subprocess.Popen(cmd, env=rerun_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"rerun web viewer exited ({self.process.returncode}): {err[-1] if err else ''}")
            try:
                urllib.request.urlopen(f"http://{self.host}:{self.web_port}/", timeout=1).read(64)
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rerun web viewer did not answer on {self.host}:{self.web_port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _stop_requested(signum, frame):
    raise KeyboardInterrupt  # unwinds to view()'s finally, which stops the server


def view(paths, web: bool = False, host: str = "127.0.0.1", port: int | None = None,
         grpc_port: int | None = None) -> None:
    """Open recordings in the native viewer (blocks until it closes), or with `web` serve the web
    viewer and print its URL (blocks until Ctrl-C, SIGTERM or SIGHUP, which stop the server too).
    port: HTTP port (default DEFAULT_PORT); gRPC on port + 1 unless grpc_port; 0 picks free ports."""
    paths = [_check_recording(p) for p in paths]
    if not web:
        if not has_display():
            raise RuntimeError("no display (DISPLAY/WAYLAND_DISPLAY unset): use `embodied view --web FILE.rrd`")
        subprocess.run([rerun_binary(), *map(str, paths)], env=rerun_env(), check=False)
        return
    web_port, grpc, note = resolve_ports(host, port, grpc_port)
    if note:
        print(note, flush=True)
    viewer = WebViewer(paths, host=host, web_port=web_port, grpc_port=grpc)
    # Without handlers SIGTERM and SIGHUP end this process at once and the rerun server it started
    # keeps listening, orphaned; SIGINT too where it was ignored at start (a background job).
    previous = {sig: signal.signal(sig, _stop_requested) for sig in STOP_SIGNALS}
    try:
        viewer.start()
        print(f"web viewer: {viewer.url}", flush=True)
        print("Ctrl-C to stop", flush=True)
        viewer.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in STOP_SIGNALS:  # a second signal must not interrupt the shutdown
            signal.signal(sig, signal.SIG_IGN)
        viewer.stop()
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(sig, handler)
