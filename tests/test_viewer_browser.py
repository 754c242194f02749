"""End to end: serve a recording with rerun's web viewer on 127.0.0.1 and render it in headless
Chromium over the DevTools protocol (a real-time wait; the plain --screenshot flag only ever
captures the loading page)."""
import io

import numpy as np
import pytest

pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install -e '.[viewer]')")
pytest.importorskip("websockets", reason="websockets is not installed (pip install -e '.[viewer]')")

from embodied.viewer.browser import find_chromium  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # about 30 s on 2 cores: the wasm viewer compiles on a software rasterizer
    pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)"),
]

STATE_JS = ("window._handle ? new TextDecoder('utf-8').decode(window._handle.viewer_state())"
            ".replace(/[^\\x20-\\x7e]+/g, ' ') : ''")


def test_web_viewer_renders_recording_in_headless_chromium(tmp_path):
    from PIL import Image

    from embodied.tasks import NavConfig, make_env
    from embodied.viewer.browser import capture
    from embodied.viewer.recording import OraclePolicy, record_episode
    from embodied.viewer.serve import WebViewer

    env = make_env(NavConfig(name="nav/pointnav", width=32, height=32, sensors=["rgb", "depth"], max_steps=20))
    path = tmp_path / "browser_episode.rrd"
    record_episode(env, OraclePolicy(), path, seed=0)
    with WebViewer(path) as viewer:
        assert viewer.url.startswith("http://127.0.0.1:")
        # Ready once the viewer's own state names our recording (the data arrived over gRPC).
        # Software WebGL on a loaded 2-core machine can take over a minute to start and draw: the
        # limit is generous (it bounds a hang; it is not a speed check).
        page = capture(viewer.url, wait_s=90, settle_s=3.0, timeout=240,
                       ready_js=f"({STATE_JS}).includes('recording_id=browser_episode')",
                       evaluate={"state": STATE_JS, "started": "!!window._handle"})
    (tmp_path / "viewer.png").write_bytes(page.png)
    assert page.title == "Rerun Viewer"
    assert page.values["started"], f"the viewer app never started; console: {page.console[-5:]}"
    state = page.values["state"]
    assert "recording_id=browser_episode" in state
    for name in ("/world/agent/camera", "/map", "/memory/weights", "step", "env_step"):
        assert name in state, f"{name!r} not in the viewer state: {state[:500]}"
    assert page.canvases and page.canvases[0]["width"] >= 1000  # the egui canvas fills the page
    shot = np.asarray(Image.open(io.BytesIO(page.png)).convert("RGB"))
    assert shot.shape == (800, 1280, 3)
    colours, counts = np.unique(shot.reshape(-1, 3), axis=0, return_counts=True)
    # The loading page is one dark colour with a line of text (>95% one colour); the viewer draws
    # panels, camera images, the 3D scene and plots in thousands of colours.
    assert len(colours) > 500 and counts.max() / counts.sum() < 0.9, (len(colours), counts.max() / counts.sum())
