"""`embodied view`: open a recording in rerun's native viewer, or serve the web viewer on 127.0.0.1."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from embodied.viewer.stream import rerun_env


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


def _check_recording(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such recording")
    if path.suffix != ".rrd":
        raise ValueError(f"{path}: not a rerun recording (.rrd)")
    return path


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


def view(paths, web: bool = False, host: str = "127.0.0.1", port: int = 9090, grpc_port: int = 9876) -> None:
    """Open recordings in the native viewer (blocks until it closes), or with `web` serve the web
    viewer and print its URL (blocks until Ctrl-C)."""
    paths = [_check_recording(p) for p in paths]
    if not web:
        if not has_display():
            raise RuntimeError("no display (DISPLAY/WAYLAND_DISPLAY unset): use `embodied view --web FILE.rrd`")
        subprocess.run([rerun_binary(), *map(str, paths)], env=rerun_env(), check=False)
        return
    viewer = WebViewer(paths, host=host, web_port=port, grpc_port=grpc_port).start()
    print(f"web viewer: {viewer.url}", flush=True)
    print("Ctrl-C to stop", flush=True)
    try:
        viewer.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
