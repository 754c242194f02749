"""Vector envs: batching, autoreset, crash recovery, in-process mode."""
import dataclasses
import os
import signal
import time

import pytest

import numpy as np

from embodied.envs import make_vector_env
from embodied.tasks import NavConfig

CFG = NavConfig(name="nav/pointnav", width=24, height=24, sensors=["rgb", "depth"], max_steps=8)


def test_workers_match_in_process_and_autoreset():
    a = make_vector_env(CFG, num_envs=3, seed=7, num_workers=2)
    b = make_vector_env(CFG, num_envs=3, seed=7, num_workers=0)
    try:
        oa, ob = a.reset(seed=7), b.reset(seed=7)
        for k in oa:
            assert np.array_equal(oa[k], ob[k])
        rng = np.random.default_rng(0)
        ends = 0
        for t in range(20):
            act = rng.integers(1, 4, size=3)
            ra, rb = a.step(act), b.step(act)
            for k in ra[0]:
                assert np.array_equal(ra[0][k], rb[0][k])
            assert np.array_equal(ra[1], rb[1]) and np.array_equal(ra[3], rb[3])
            for i in range(3):
                if ra[2][i] or ra[3][i]:
                    ends += 1
                    ep = ra[4][i]["episode"]
                    assert ep["length"] == 8 and "success" in ep and "spl" in ep
                    assert np.allclose(ra[0]["pose"][i], 0.0)  # first obs of the next episode
        assert ends >= 6  # max_steps=8 over 20 steps: every env truncated twice
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_killed_worker_is_replaced_and_stepping_continues(caplog):
    env = make_vector_env(CFG, num_envs=4, seed=0, num_workers=2)
    try:
        env.step(np.ones(4, int))
        victim = env.worker_pids()[1]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
        with caplog.at_level("WARNING"):
            obs, r, te, tr, infos = env.step(np.ones(4, int))
        assert env.restarts == 1
        assert victim not in env.worker_pids()
        assert any("died" in m and "restarting" in m for m in caplog.messages)
        assert tr[2] and tr[3] and infos[2].get("worker_restarted")
        for _ in range(5):
            obs, r, te, tr, infos = env.step(np.ones(4, int))
        assert obs["rgb"].shape == (4, 24, 24, 3)
    finally:
        env.close()


def test_more_envs_than_cores():
    # More envs than workers: each worker steps several envs, in order, each its own episode.
    n = (os.cpu_count() or 2) * 2 + 1
    env = make_vector_env(CFG, num_envs=n, seed=1, num_workers=None)
    ref = make_vector_env(CFG, num_envs=n, seed=1, num_workers=0)
    try:
        assert env.num_workers < n
        acts = np.random.default_rng(1).integers(1, 4, size=n)
        obs, r, te, tr, infos = env.step(acts)
        obs_ref, r_ref, *_ = ref.step(acts)
        assert obs["rgb"].shape[0] == n and len(infos) == n
        for k in obs:
            assert np.array_equal(obs[k], obs_ref[k]), k
        assert np.array_equal(r, r_ref)
        assert len({obs["rgb"][i].tobytes() for i in range(n)}) > 1  # distinct episodes, not one copied
    finally:
        env.close()
        ref.close()


def test_oracle_call_through_workers():
    # call() reaches each env in its worker: the answers are those of the same envs in-process, and
    # following them reaches the goal.
    cfg = dataclasses.replace(CFG, max_steps=200)
    env = make_vector_env(cfg, num_envs=2, seed=3, num_workers=2)
    ref = make_vector_env(cfg, num_envs=2, seed=3, num_workers=0)
    try:
        successes = [None, None]
        for _ in range(200):
            acts = np.asarray(env.call("oracle_action"))
            assert acts.tolist() == list(ref.call("oracle_action"))
            _, _, te, tr, infos = env.step(acts)
            ref.step(acts)
            for i in range(2):
                if (te[i] or tr[i]) and successes[i] is None:
                    successes[i] = infos[i]["episode"]["success"]
            if None not in successes:
                break
        assert successes == [1, 1]
    finally:
        env.close()
        ref.close()


def _env_that_cannot_be_built():
    raise ValueError("no such scene: kitchen_42")


def _worker_that_dies_while_starting():
    os._exit(3)


def test_a_worker_that_cannot_start_is_a_clear_error():
    import functools

    import pytest

    from embodied.envs.vector import EnvError, VectorEnv
    from embodied.tasks import make_env

    good = functools.partial(make_env, CFG)
    # Worker 1 gets the failing fn (fn 0 is also built in this process to read the spaces).
    with pytest.raises(EnvError, match=r"env worker 1: building its envs: ValueError: no such scene: kitchen_42"):
        VectorEnv([good, _env_that_cannot_be_built], num_workers=2)
    with pytest.raises(EnvError, match=r"env worker 1 exited while starting \(exit code 3\)"):
        VectorEnv([good, _worker_that_dies_while_starting], num_workers=2)


def test_workers_leave_stop_and_preemption_signals_to_the_trainer():
    env = make_vector_env(CFG, num_envs=4, seed=0, num_workers=2)
    try:
        env.step(np.ones(4, int))
        for pid in env.worker_pids():
            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
                os.kill(pid, sig)
        time.sleep(0.3)
        env.step(np.ones(4, int))
        assert env.restarts == 0
    finally:
        env.close()


def test_a_script_that_never_closes_its_env_still_exits():
    """Workers ignore SIGTERM, which multiprocessing's exit handler sends to daemon children before
    waiting on them: open envs must be closed first, or the script would hang at exit."""
    import subprocess
    import sys

    script = ("from embodied.envs import make_vector_env\nfrom embodied.tasks import NavConfig\n"
              "import numpy as np\n"
              "if __name__ == '__main__':\n"
              "    env = make_vector_env(NavConfig(name='nav/pointnav', width=16, height=16, sensors=['depth']),"
              " num_envs=2, seed=0, num_workers=2)\n"
              "    env.step(np.ones(2, int))\n"
              "    print('stepped')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "stepped" in r.stdout, r.stderr[-2000:]


def test_vector_envs_skip_rendering_the_discarded_final_observation():
    from embodied.tasks import make_env

    env = make_env(CFG)
    assert env.unwrapped.final_observation  # a plain env renders every observation
    vec = make_vector_env(CFG, num_envs=2, seed=3, num_workers=0)
    try:
        inner = vec._group.envs[0].unwrapped
        assert not inner.final_observation
        renders = []
        original = inner._render_images
        inner._render_images = lambda sensors: renders.append(1) or original(sensors)
        steps = 0
        while True:  # moves only: the episode ends by truncation at max_steps
            obs, _, term, trunc, infos = vec.step(np.array([1, 1]))
            steps += 1
            if term[0] or trunc[0]:
                break
        assert steps == CFG.max_steps
        # every step rendered once except the last, whose observation the reset's replaced
        assert len(renders) == steps  # steps - 1 step renders + 1 reset render
        np.testing.assert_allclose(obs["pose"][0], 0.0)
    finally:
        vec.close()
    for render_final in (True, False):
        env.unwrapped.final_observation = render_final
        env.reset(seed=3)
        for _ in range(CFG.max_steps - 1):
            before, *_ = env.step(1)
        final, _, _, trunc, _ = env.step(1)
        assert trunc and (final is before) is (not render_final)  # rendered afresh only when asked


def test_idle_workers_draw_each_env_s_next_episode_ahead():
    env = make_vector_env(CFG, num_envs=4, seed=5, num_workers=2)
    try:
        env.reset(seed=5)
        env.step(np.ones(4, int))
        time.sleep(2.0)  # idle: each worker draws its envs' next episodes (milliseconds of work)
        assert env.call("prefetch") == [False] * 4  # nothing left to draw
        # ...and the in-process mode (no idle time to use) leaves the draw to reset.
        local = make_vector_env(CFG, num_envs=2, seed=5, num_workers=0)
        local.reset(seed=5)
        local.step(np.ones(2, int))
        assert local.call("prefetch") == [True, True]
        local.close()
    finally:
        env.close()


def test_bench_measures_envs_with_a_capped_ray_thread_count(monkeypatch):
    from embodied.envs.bench import measure_env
    from embodied.render import raycast

    monkeypatch.delenv("EMBODIED_RENDER_THREADS", raising=False)
    threads = []
    init = raycast.RaycastRenderer.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        threads.append(self.nthreads)

    monkeypatch.setattr(raycast.RaycastRenderer, "__init__", spy)
    cfg = NavConfig(name="nav/pointnav", scenes="procedural", n_rooms=2, width=16, height=16, sensors=["depth"])
    r = measure_env(cfg, num_envs=1, num_workers=0, steps=20, render_threads=1)
    assert r["steps_per_s"] > 0 and threads and set(threads) == {1}
    assert "EMBODIED_RENDER_THREADS" not in os.environ  # restored for what runs next
    threads.clear()
    measure_env(cfg, num_envs=1, num_workers=0, steps=20)
    assert threads and set(threads) == {0}  # default: every core


@pytest.mark.slow
def test_workers_that_fill_the_cpus_are_pinned_one_per_cpu():
    import psutil

    from embodied.envs.vector import available_cpus, pin_plan

    assert pin_plan([0, 1, 2, 3], 4) == [[0], [1], [2], [3]]
    assert pin_plan([4, 5], 3) == [[4], [5], [4]]  # more workers than CPUs: round robin
    assert pin_plan([0, 1, 2, 3], 2, local_rank=1) == [None, None]  # 2 workers leave CPUs free: not pinned
    assert pin_plan([0, 1, 2, 3], 4, local_rank=1) == [[0], [1], [2], [3]]
    assert pin_plan([0, 1, 2, 3, 4, 5, 6, 7], 8, local_rank=1) == [[c] for c in range(8)]
    assert pin_plan([0, 1, 2], 4, local_rank=1) == [[1], [2], [0], [1]]  # torchrun ranks start apart
    assert pin_plan([3], 2) == [None, None]  # one CPU: nothing to choose
    cpus = available_cpus()
    assert len(cpus) >= 2, "this test needs a machine with 2 or more CPUs"
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus[:2])  # this process may use 2 CPUs: 2 workers fill them
    try:
        def affinities(workers, pin=True):
            env = make_vector_env(CFG, num_envs=2, seed=0, num_workers=workers, pin_workers=pin)
            try:
                env.step(np.ones(2, int))
                return [sorted(psutil.Process(pid).cpu_affinity()) for pid in env.worker_pids()]
            finally:
                env.close()

        assert affinities(2) == [[cpus[0]], [cpus[1]]]
        assert all(len(a) >= 2 for a in affinities(1))  # one worker, two CPUs: left to the scheduler
        assert all(len(a) >= 2 for a in affinities(2, pin=False))
    finally:
        os.sched_setaffinity(0, saved)
