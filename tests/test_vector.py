"""Vector envs: batching, autoreset, crash recovery, in-process mode."""
import dataclasses
import os
import signal
import time

import pytest

import numpy as np

from embodied.envs import finished_episodes, make_vector_env
from embodied.tasks import NavConfig

CFG = NavConfig(name="nav/pointnav", width=24, height=24, sensors=["rgb", "depth"], max_steps=8)


def test_workers_match_in_process_and_autoreset():
    a = make_vector_env(CFG, num_envs=3, seed=7, num_workers=2)
    b = make_vector_env(CFG, num_envs=3, seed=7, num_workers=0)
    try:
        (oa, ia), (ob, ib) = a.reset(seed=7), b.reset(seed=7)
        for k in oa:
            assert np.array_equal(oa[k], ob[k])
        assert list(ia["scene"]) == list(ib["scene"]) and ia["_scene"].all()  # each env's reset info
        rng = np.random.default_rng(0)
        ends = 0
        for t in range(20):
            act = rng.integers(1, 4, size=3)
            ra, rb = a.step(act), b.step(act)
            for k in ra[0]:
                assert np.array_equal(ra[0][k], rb[0][k])
            assert np.array_equal(ra[1], rb[1]) and np.array_equal(ra[3], rb[3])
            ended = finished_episodes(ra[4])
            assert ended == finished_episodes(rb[4])
            assert sorted(ended) == np.flatnonzero(ra[2] | ra[3]).tolist()
            for i, ep in ended.items():
                ends += 1
                assert ep["length"] == 8 and "success" in ep and "spl" in ep
                assert ra[4]["final_info"]["steps"][i] == 8 and ra[4]["_final_info"][i]
                assert ra[4]["steps"][i] == 0  # top level: the next episode's reset info (gymnasium's same-step)
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
        assert tr[2] and tr[3] and infos["worker_restarted"][2] and infos["_worker_restarted"].tolist() == [0, 0, 1, 1]
        assert 2 not in finished_episodes(infos)  # the lost episodes report no measures
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
        assert obs["rgb"].shape[0] == n and infos["steps"].shape == (n,) and infos["_steps"].all()
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
            for i, ep in finished_episodes(infos).items():
                if successes[i] is None:
                    successes[i] = ep["success"]
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


# --- the gymnasium vector API -------------------------------------------------------------------

def test_a_gymnasium_vector_env_with_same_step_autoreset_and_dict_of_array_infos():
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    env = make_vector_env(CFG, num_envs=3, seed=0, num_workers=0)
    try:
        assert isinstance(env, gym.vector.VectorEnv)
        assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert env.observation_space["rgb"].shape == (3, 24, 24, 3) and env.action_space.shape == (3,)
        obs, infos = env.reset(seed=4)
        assert env.observation_space.contains(obs)
        assert infos["scene"].dtype == object and infos["distance_to_goal"].dtype == np.float64
        assert infos["_distance_to_goal"].tolist() == [True] * 3 and "final_info" not in infos
        obs2, _ = env.reset(seed=[4, 5, 6])  # one seed per env: env i of seed=4 is seeded 4 + i
        for k in obs:
            assert np.array_equal(obs[k], obs2[k])
        obs3, infos3 = env.reset(seed=[9, 9, 9], options={"reset_mask": np.array([False, True, False])})
        assert infos3["_scene"].tolist() == [False, True, False]  # only env 1 was reset
        assert np.array_equal(obs3["rgb"][0], obs["rgb"][0]) and np.array_equal(obs3["rgb"][2], obs["rgb"][2])
        obs, r, te, tr, infos = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and r.shape == te.shape == tr.shape == (3,)
        with pytest.raises(ValueError, match="reset_mask"):
            env.reset(options={"reset_mask": [1, 0, 1]})
    finally:
        env.close()
    env.close()  # closing twice is harmless
    assert env.closed


@pytest.mark.parametrize("workers", [0, 2])
def test_gymnasium_record_episode_statistics_agrees_with_our_episode_measures(workers):
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    env = RecordEpisodeStatistics(make_vector_env(CFG, num_envs=3, seed=2, num_workers=workers))
    try:
        env.reset(seed=2)
        rng = np.random.default_rng(0)
        seen = 0
        for _ in range(30):
            act = rng.choice([0, 1, 1, 2, 3], size=3)  # stop ends some episodes early: lengths differ
            _, _, te, tr, infos = env.step(act)
            ended = finished_episodes(infos)
            assert sorted(ended) == np.flatnonzero(te | tr).tolist()
            for i, ep in ended.items():  # no clash: the wrapper's infos["episode"] beside our final_info
                assert infos["_episode"][i] and infos["episode"]["l"][i] == ep["length"]
                assert infos["episode"]["r"][i] == pytest.approx(ep["return"], abs=1e-4)
                seen += 1
        lengths = list(env.length_queue)
        assert seen == len(lengths) >= 9 and len(set(lengths)) > 1
    finally:
        env.close()


def _normalized_depth(env):
    from gymnasium.wrappers.vector import FilterObservation, FlattenObservation, NormalizeObservation

    return NormalizeObservation(FlattenObservation(FilterObservation(env, ["depth"])))


@pytest.mark.parametrize("workers", [0, 2])
def test_gymnasium_observation_wrappers_run_in_next_step_mode(workers):
    """gymnasium's observation wrappers refuse same-step autoreset (the final observation would skip
    them); with autoreset_mode=NEXT_STEP the envs return it and reset on the following step."""
    from gymnasium.vector import AutoresetMode

    with make_vector_env(CFG, num_envs=2, seed=0, num_workers=0) as same_step:
        with pytest.raises(ValueError, match="NEXT_STEP"):
            _normalized_depth(same_step)
    raw = make_vector_env(CFG, num_envs=2, seed=1, num_workers=0, autoreset_mode=AutoresetMode.NEXT_STEP)
    env = _normalized_depth(make_vector_env(CFG, num_envs=2, seed=1, num_workers=workers,
                                            autoreset_mode=AutoresetMode.NEXT_STEP))
    try:
        depths = [raw.reset(seed=1)[0]["depth"].reshape(2, -1)]
        out, _ = env.reset(seed=1)
        rewards_after_end = []
        for t in range(CFG.max_steps + 3):
            act = np.array([2, 3])  # turns: the final pose differs from the start
            o, r, te, tr, infos = raw.step(act)
            out, r2, te2, tr2, infos2 = env.step(act)
            assert np.array_equal(r, r2) and np.array_equal(tr, tr2)
            depths.append(o["depth"].reshape(2, -1))
            if t == CFG.max_steps - 1:  # the episodes end: the final observation, measures in final_info
                assert tr.all() and not np.allclose(o["pose"], 0.0)
                assert [e["length"] for e in finished_episodes(infos2).values()] == [8, 8]
            if t == CFG.max_steps:  # ...and this step resets them: action ignored, no reward
                rewards_after_end = r2.tolist()
                assert np.allclose(o["pose"], 0.0) and not (te | tr).any()
        assert rewards_after_end == [0.0, 0.0]
        seen = np.concatenate(depths)
        rms = env.obs_rms
        np.testing.assert_allclose(rms.mean, seen.mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rms.var, seen.var(0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out, (depths[-1] - rms.mean) / np.sqrt(rms.var + env.epsilon), rtol=1e-4, atol=1e-4)
        assert out.std() > 0.1  # normalised, not raw metres
    finally:
        env.close()
        raw.close()


def test_gymnasium_checks_accept_the_vector_env():
    from gymnasium.utils.env_checker import check_returned_data_not_reused, data_equivalence
    from gymnasium.wrappers.vector import DictInfoToList

    env = make_vector_env(CFG, num_envs=1, seed=0, num_workers=1)
    try:
        check_returned_data_not_reused(env)  # fresh observation and info objects on every call
        first, _ = env.reset(seed=3)
        again, _ = env.reset(seed=3)
        assert data_equivalence(first, again, exact=True)
    finally:
        env.close()
    env = DictInfoToList(make_vector_env(CFG, num_envs=2, seed=0, num_workers=0))
    try:
        _, infos = env.reset(seed=0)
        assert [sorted(i) for i in infos] == [sorted(infos[0])] * 2 and "scene" in infos[0]
    finally:
        env.close()


def test_get_and_set_attr_reach_every_env_in_its_worker():
    env = make_vector_env(CFG, num_envs=3, seed=0, num_workers=2)
    try:
        env.set_attr("tag", ["a", "b", "c"])
        assert env.get_attr("tag") == ("a", "b", "c")
        env.set_attr("tag", 7)
        assert env.get_attr("tag") == (7, 7, 7) and len(env.render()) == 3
    finally:
        env.close()


def test_the_toy_corridor_vector_env_follows_the_same_api():
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    env = make_vector_env({"name": "toy/corridor", "length": 4, "max_steps": 6}, num_envs=4, seed=0)
    assert isinstance(env, gym.vector.VectorEnv) and env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    env = RecordEpisodeStatistics(env)
    obs, infos = env.reset(seed=0)
    assert infos == {} and env.observation_space.contains(obs)
    ends = 0
    for _ in range(20):
        _, _, te, tr, infos = env.step(np.asarray(env.unwrapped.call("oracle_action")))
        ended = finished_episodes(infos)
        assert sorted(ended) == np.flatnonzero(te | tr).tolist()
        for i, ep in ended.items():
            assert ep["success"] == 1.0 and ep["length"] == infos["episode"]["l"][i]
            assert ep["return"] == pytest.approx(infos["episode"]["r"][i], abs=1e-5)
            ends += 1
    assert ends >= 4
    with pytest.raises(ValueError, match="SAME_STEP"):
        make_vector_env({"name": "toy/corridor"}, num_envs=2, autoreset_mode=AutoresetMode.NEXT_STEP)


def test_workers_start_with_their_thread_pools_capped():
    """numpy's OpenBLAS (and OpenMP, MKL) in each worker get the worker's ray threads, not the machine's
    cores; a value the user set is kept. In a fresh interpreter: the forkserver keeps the environment of
    its first start."""
    import subprocess
    import sys

    code = (
        "import numpy as np, psutil\n"
        "from embodied.envs import make_vector_env\n"
        "from embodied.tasks.config import NavConfig\n"
        "env = make_vector_env(NavConfig(name='nav/pointnav', width=16, height=16), 2, 0, num_workers=2)\n"
        "env.step(np.ones(2, int))\n"
        "print([psutil.Process(p).environ().get(k) for p in env.worker_pids()\n"
        "       for k in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')])\n"
        "import os; print(os.environ.get('OPENBLAS_NUM_THREADS'))\n"  # the caller's own environment is restored
        "env.close()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-2:] == [str([threads] * 6), "None"], out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**env, "OMP_NUM_THREADS": "3"})
    assert out.stdout.strip().splitlines()[-2] == str([threads, "3", threads] * 2), out.stderr[-2000:]
