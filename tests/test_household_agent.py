"""The Optimus-style agent on household tasks: memory starts empty, what it learns is true, it beats the
memoryless baseline after learning, and `embodied eval` runs the protocol from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embodied.agents.household import HouseholdAgent, HybridMemory, run_episode
from embodied.memory.hybrid import KnowledgeGraph, MemoryStore
from embodied.tasks import make_env


def learn(tmp_path, variant="full", tasks=20):
    envs = {t: make_env({"name": f"household/tier{t}"}) for t in range(1, 6)}
    memory = HybridMemory(tmp_path / f"{variant}.sqlite", "0", graph=True, pool=True)
    agent = HouseholdAgent(variant, memory, envs[1].floor_plan(), seed=0)
    for j in range(tasks):
        run_episode(envs[1 + j % 5], agent, (1 << 29) + j, learning=True, teacher=j % 10 == 9)
    return envs, memory, agent


def test_learned_knowledge_is_true_and_persists(tmp_path):
    envs, memory, agent = learn(tmp_path)
    world = envs[1].world
    graph = memory.graph
    assert graph.recipes and graph.raw and graph.locks
    for product, fact in graph.recipes.items():  # learned from outcomes: never a wrong recipe
        true = world.recipes[product]
        assert (fact.station, fact.inputs, fact.tool) == (true.station, tuple(sorted(true.inputs)), true.tool)
    for container, key in graph.locks.items():
        assert next(c.key for c in world.containers if c.name == container) == key
    assert graph.raw <= set(world.homes)
    memory.close()
    again = KnowledgeGraph.load(MemoryStore(tmp_path / "full.sqlite", readonly=True), "0")
    assert again.recipes == graph.recipes and again.version == graph.version > 1
    assert MemoryStore(tmp_path / "full.sqlite", readonly=True).count_cases("0")["success"] > 20


def test_memory_beats_the_memoryless_agent_and_evaluation_writes_nothing(tmp_path):
    envs, memory, agent = learn(tmp_path)
    before = memory.store.count_cases("0"), memory.store.graph_version("0")
    reactive = HouseholdAgent("reactive", None, envs[1].floor_plan())
    full = [run_episode(envs[1], agent, s)["success"] for s in range(12)]
    none = [run_episode(envs[1], reactive, s)["success"] for s in range(12)]
    assert sum(full) >= sum(none) + 4, (full, none)
    assert (memory.store.count_cases("0"), memory.store.graph_version("0")) == before


def test_after_learning_the_deepest_tier_is_solved_within_budget(tmp_path):
    """A locked container whose key is known is opened after fetching the key: the agent no longer goes
    to the container's room first and then leaves it for the key (that oscillated between two rooms
    until the budget ran out, and tier 5 was about 0)."""
    envs, memory, agent = learn(tmp_path, tasks=40)
    episodes = [run_episode(envs[5], agent, s) for s in range(10)]
    assert sum(e["success"] for e in episodes) >= 8, episodes
    assert max(e["steps"] for e in episodes if e["success"]) < envs[5].max_episode_steps


def test_eval_command_runs_the_ablation_table_and_bad_agent_keys_are_one_line(tmp_path, capsys):
    from embodied.cli import main

    out = tmp_path / "hh.json"
    main(["eval", "task=household/tier1", "agent=optimus", "agent.variants=[full,no_graph,oracle]", "agent.epochs=2",
          "agent.tasks_per_epoch=5", "episodes=4", f"out={out}", "quiet=true"])
    report = json.loads(out.read_text())
    assert [(r["variant"], r["epoch"]) for r in report["results"]] == [("full", 2), ("no_graph", 2), ("oracle", 2)]
    assert [c["epoch"] for c in report["curves"] if c["variant"] == "full"] == [1, 2]
    assert report["results"][2]["success"]["mean"] == 1.0 and report["results"][0]["learned_tasks"] == 10
    assert (tmp_path / "hh_memory" / "full.sqlite").is_file()
    assert "success by epoch" in capsys.readouterr().out
    # The memory's cost, as the report's memory-efficiency comparison reads it: the file grows as it learns.
    full, no_graph, oracle = report["results"]
    for row in (full, no_graph):
        assert row["memory"]["state_bytes"] > 0 and row["memory"]["read_s_per_env_step"] > 0
    assert "memory" not in oracle
    grown = [c["memory"]["state_bytes"] for c in report["curves"] if c["variant"] == "full"]
    assert grown[0] < grown[1]
    for args, message in [(["agent.variants=[fulll]"], "agent.variants: ['fulll']; allowed: a list of full,"),
                          (["+agent.speed=2"], "agent.speed: unknown key; allowed: cases,"),
                          (["agent.epochs=-1"], "agent.epochs: -1; allowed: an integer >= 0"),
                          (["seed=536870910"], "seed: 536870910; allowed: 0 <= seed <= 2**29 - episodes")]:
        with pytest.raises(SystemExit) as exit_:
            main(["eval", "task=household/tier1", "agent=optimus", f"out={out}", "quiet=true", *args])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"embodied eval: error: {message}"), err


def test_an_eval_over_several_worlds_pools_their_episodes_and_each_world_repeats_alone(tmp_path, capsys):
    """agent.worlds: each world learns its own memory from empty (world<w>/ folders) and the rows pool
    the worlds' episodes; a world's figures equal that world evaluated alone (nothing leaks between
    worlds). Worlds given twice, or beside task.world_seed, are one line."""
    from embodied.cli import main

    args = ["eval", "task=household/tier2", "agent=optimus", "agent.variants=[full]", "agent.epochs=1",
            "agent.tasks_per_epoch=6", "episodes=5", "quiet=true"]
    out = tmp_path / "many.json"
    main([*args, "agent.worlds=[1,2]", f"out={out}"])
    row = json.loads(out.read_text())["results"][0]
    assert row["episodes"] == 10 and row["worlds"] == [1, 2]
    assert [e["world"] for e in row["per_episode"]] == [1] * 5 + [2] * 5
    assert row["success"]["mean"] == pytest.approx(np.mean([e["success"] for e in row["per_episode"]]))
    assert (tmp_path / "many_memory" / "world1" / "full.sqlite").is_file()
    assert (tmp_path / "many_memory" / "world2" / "full.sqlite").is_file()
    alone = tmp_path / "alone.json"
    main([*args, "task.world_seed=2", f"out={alone}"])
    single = json.loads(alone.read_text())["results"][0]
    assert row["by_world"]["2"] == single["success"]["mean"]
    assert [e["steps"] for e in row["per_episode"][5:]] == [e["steps"] for e in single["per_episode"]]
    capsys.readouterr()
    for extra, message in [(["agent.worlds=[1,1]"], "agent.worlds: [1, 1]; allowed: null"),
                           (["agent.worlds=[1]", "task.world_seed=3"], "agent.worlds: [1] with task.world_seed=3")]:
        with pytest.raises(SystemExit) as exit_:
            main([*args, f"out={tmp_path / 'x.json'}", *extra])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"embodied eval: error: {message}"), err
    with pytest.raises(SystemExit):
        main(["record", "task=household/tier2", "agent=optimus", "agent.worlds=[1,2]", f"out={tmp_path / 'r'}",
              "quiet=true"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "a recording plays one world" in err[0], err


def test_recording_shows_the_plan_the_cases_the_reflections_and_the_graph(tmp_path):
    """`embodied record agent=optimus` learns a memory first, then records: each step's plan (its first
    sub-goal is the one acted on), the retrieved cases, every reflection, and the goal's graph whose
    edges are the true recipes."""
    from embodied.cli import main
    from embodied.viewer.rrd import Recording

    out = tmp_path / "rec"
    main(["record", "task=household/tier5", "agent=optimus", "agent.epochs=1", "agent.tasks_per_epoch=40",
          "episodes=3", f"out={out}", "quiet=true"])
    assert (out / "memory" / "full.sqlite").is_file()
    env = make_env({"name": "household/tier5"})
    recipes = env.world.recipes
    for i in range(3):
        rec = Recording(out / f"episode_{i:03d}.rrd")
        plans = rec["memory/plan"].at("TextDocument:text")
        subgoals = rec.texts("memory/subgoal")
        # Each new sub-goal comes with a new plan that lists it as current; an unchanged plan is not re-logged.
        assert set(subgoals) <= set(plans) and len(plans) < rec.rows("agent/action")
        for step, subgoal in subgoals.items():
            assert f"**{subgoal}** (current)" in plans[step][0]
        texts = [plans[s][0] for s in sorted(plans)]
        assert all(a != b for a, b in zip(texts, texts[1:]))
        cases = rec["memory/cases"].at("TextDocument:text")
        assert any("| success | fetch |" in c[0] for c in cases.values())
        edges = {(e["first"], e["second"]) for row in rec["memory/graph"].at("GraphEdges:edges").values() if row
                 for e in row}
        assert edges and all(u in recipes[v].inputs or u == recipes[v].tool for u, v in edges)
        nodes = [n for row in rec["memory/graph"].at("GraphNodes:node_ids").values() if row for n in row]
        assert {u for e in edges for u in e} <= set(nodes)
        if "memory/reflection" in rec:
            assert all(t.split(": ")[1].split(";")[0] in ("continue", "replan") for t in rec.texts("memory/reflection").values())
    env.close()
    # A folder holding a learned memory is not emptied silently.
    (tmp_path / "again" / "memory").mkdir(parents=True)
    (tmp_path / "again" / "memory" / "full.sqlite").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main(["record", "task=household/tier5", "agent=optimus", "episodes=1", f"out={tmp_path / 'again'}", "quiet=true"])
    assert exit_.value.code == 2


def test_recording_reads_an_evaluations_memory_and_refuses_to_replace_one(tmp_path, capsys):
    from embodied.cli import main
    from embodied.viewer.rrd import Recording

    out = tmp_path / "hh.json"
    main(["eval", "task=household/tier2", "agent=optimus", "agent.variants=[full,oracle]", "agent.epochs=1",
          "agent.tasks_per_epoch=20", "episodes=2", f"out={out}", "quiet=true", "record=true", "record_episodes=2"])
    report = json.loads(out.read_text())
    full = report["results"][0]
    assert len(full["recordings"]) == 2
    for path, episode in zip(full["recordings"], full["per_episode"]):  # the evaluated episodes, replayed
        rec = Recording(path)
        assert rec.rows("agent/action") == episode["steps"] and "memory/plan" in rec
    assert "memory/plan" not in Recording(report["results"][1]["recordings"][0])  # the oracle has no memory
    capsys.readouterr()
    rec_out = tmp_path / "rec"
    main(["record", "task=household/tier2", "agent=optimus", f"agent.memory={tmp_path / 'hh_memory'}", "episodes=1",
          f"out={rec_out}", "quiet=true"])
    assert (rec_out / "episode_000.rrd").is_file() and not (rec_out / "memory").exists()
    for args, message in [([f"agent.memory={tmp_path}"], f"agent.memory: {tmp_path} holds no full.sqlite"),
                          ([f"out={rec_out}", "agent.epochs=1"], f"out: {rec_out / 'episode_000.rrd'} exists")]:
        with pytest.raises(SystemExit) as exit_:
            main(["record", "task=household/tier2", "agent=optimus", "episodes=1", f"out={tmp_path / 'x'}",
                  "quiet=true", *args])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"embodied record: error: {message}"), err


def test_fetch_cases_keep_the_outcomes_proportions(tmp_path):
    """A home where the thing was found 9 times in 10 stays the first choice however many failures
    (moved by a perturbation) the pool holds: the k nearest cases of either outcome vote (with k of
    each, 8 failures would cancel 8 successes and the agent would search elsewhere)."""
    env = make_env({"name": "household/tier1"})
    plan = env.floor_plan()
    names, rooms = [n for n, _ in plan["containers"]], [r for _, r in plan["containers"]]
    memory = HybridMemory(tmp_path / "m.sqlite", "0", graph=True, pool=True)
    obs, info = env.reset(seed=0)
    home = next(c for c in range(len(names)) if rooms[c] != int(obs["room"][0]))
    probe = HouseholdAgent("full", memory, plan)
    probe.reset(obs, info)
    item = "flour"
    for i in range(100):  # in the order they happened: every tenth time it had been moved
        outcome = "failure" if i % 10 == 9 else "success"
        record = {"container": names[home]} | ({"reason": "absent"} if outcome == "failure" else {})
        memory.pool.add(outcome, "fetch", f"fetch {item}", probe._fields("fetch", item), record)
    choices = {}
    for variant in ("full", "success_only", "failure_only"):
        agent = HouseholdAgent(variant, memory, plan)
        agent.reset(obs, info)
        choices[variant] = agent._choose_container(item, int(obs["room"][0]))
        assert len(agent.retrieved) <= agent.k
    assert choices["full"] == choices["success_only"] == home
    assert choices["failure_only"] != home
    memory.close()
