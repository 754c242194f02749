"""The 3D-Mem agent on nav/goat (embodied/agents/goat.py): goals resolve to the right instance from
memory, the scripted chooser prefers a remembered match to exploring, and the memory is deterministic."""
import numpy as np
import pytest

from embodied.agents.goat import (GoalQuery, GoatAgent, MapPlanner, ScriptedChooser, VLMChooser, colour_similarity,
                                  rgb_similarity)
from embodied.memory.scene import (FREE, OCCUPIED, Frame, Frontier, SceneMemory, SceneMemoryConfig, SceneObject,
                                   Snapshot)
from embodied.render import Camera
from embodied.tasks import make_env
from embodied.tasks.goat import MODALITIES
from embodied.world import colour_name, semantic_classes

SIZE = 96


def _env(**kw):
    return make_env({"name": "nav/goat", "scenes": "procedural", "n_rooms": 4, "width": SIZE, "height": SIZE,
                     "num_goals": 4, **kw})


def _camera(env):
    c = env.unwrapped.cfg
    return Camera(width=c.width, height=c.height, hfov_deg=c.hfov, mount_height=c.camera_height)


def _oracle_memory(env, seed):
    """Walk the task's oracle through every goal of an episode, fusing each view into a memory;
    returns the memory and, per goal, its first observation."""
    mem = SceneMemory(_camera(env))
    obs, _ = env.reset(seed=seed)
    firsts, done, index = [obs], False, 0
    while not done:
        mem.observe(obs, 0.0)
        obs, _, terminated, truncated, _ = env.step(env.unwrapped.oracle_action())
        done = terminated or truncated
        if not done and int(obs["goal_index"][0]) != index:
            index = int(obs["goal_index"][0])
            firsts.append(obs)
    return mem, firsts


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_goals_seen_on_the_way_resolve_to_their_instance(seed):
    """After the oracle has walked the episode (every goal instance seen from up close), the scripted
    chooser, given each goal as the task gave it, picks an object of that goal's instances."""
    env = _env()
    mem, firsts = _oracle_memory(env, seed)
    goals = env.unwrapped.goals
    assert all(r["success"] for r in env.unwrapped.goal_records)
    chooser = ScriptedChooser()
    for obs, goal in zip(firsts, goals):
        query = GoalQuery.from_observation(obs)
        assert query.modality == goal.modality and query.category == goal_category(goal)
        snaps, frontiers = mem.candidates(query.relevant_classes())
        choice = chooser.choose(query, mem, snaps, frontiers, np.asarray(obs["pose"], np.float64))
        assert choice.kind == "object", (goal.modality, query)
        assert choice.object in goal.instances, (goal.modality, query, mem.objects[choice.object])
        # The chosen object is in the snapshot the choice names, whose frame saw it.
        assert choice.object in mem.snapshots[choice.index].objects
        assert choice.object in mem.frames[choice.index].objects
    env.close()


def goal_category(goal):
    from embodied.world import OBJECT_CATEGORIES

    return OBJECT_CATEGORIES[goal.category]


def test_the_three_seeds_cover_every_modality():
    env = _env()
    seen = set()
    for seed in (0, 1, 2):
        env.reset(seed=seed)
        seen |= {g.modality for g in env.unwrapped.goals}
    env.close()
    assert seen == set(MODALITIES)


def _memory_with(objects):
    """A memory whose snapshots are given: [(frame, [(id, category, xy, rgb)])]."""
    mem = SceneMemory(Camera(width=32, height=32))
    for frame, objs in objects:
        mem.frames[frame] = Frame(frame, np.zeros(4), {o[0]: 0.1 for o in objs})
        mem.snapshots[frame] = Snapshot(frame, [o[0] for o in objs])
        for oid, category, xy, rgb in objs:
            mem.objects[oid] = SceneObject(oid, category, np.r_[xy, 0.5], np.asarray(rgb, float), 10, 1, {frame})
    return mem


def test_scripted_chooser_prefers_a_remembered_match_over_exploring():
    red, blue = (0.8, 0.1, 0.1), (0.1, 0.2, 0.8)
    mem = _memory_with([(3, [(1, "mug", (1.0, 0.0), red), (2, "bed", (1.2, 0.3), (0.5, 0.5, 0.5))]),
                        (7, [(5, "mug", (6.0, 0.0), blue)])])
    frontier = Frontier(0, np.zeros((30, 2), int), np.array([0.5, 0.5]), 30, None)
    pose = np.zeros(4)
    chooser = ScriptedChooser()
    near = chooser.choose(GoalQuery("category", "mug"), mem, list(mem.snapshots.values()), [frontier], pose)
    assert (near.kind, near.object, near.index) == ("object", 1, 3)  # the nearest mug
    blue_mug = chooser.choose(GoalQuery("description", "mug", colour="blue"), mem, list(mem.snapshots.values()),
                              [frontier], pose)
    assert (blue_mug.kind, blue_mug.object, blue_mug.index) == ("object", 5, 7)  # farther, but blue
    green = chooser.choose(GoalQuery("description", "mug", colour="green"), mem, list(mem.snapshots.values()),
                           [frontier], pose)
    assert green.kind == "frontier"  # no green mug remembered: explore
    none = chooser.choose(GoalQuery("category", "vase"), mem, list(mem.snapshots.values()), [], pose)
    assert none.kind == "none"
    assert colour_similarity("white", "gray") == 0.5 and colour_similarity("red", "blue") == 0.0


def test_prefiltering_and_snapshot_budget_keep_the_relevant_snapshots():
    mem = _memory_with([(1, [(1, "mug", (0, 0), (1, 0, 0))]), (2, [(2, "bed", (3, 0), (1, 1, 1))]),
                        (3, [(3, "vase", (5, 0), (0, 1, 0))])])
    snaps, _ = mem.candidates(["vase", "mug"])
    assert [s.frame for s in snaps] == [3, 1]  # no bed; the most relevant class first
    mem.cfg.max_snapshots = 1
    assert [s.frame for s in mem.candidates(["vase", "mug"])[0]] == [3]


def test_vlm_adapter_parses_the_reply_and_rejects_nonsense():
    mem = _memory_with([(4, [(1, "mug", (1.0, 0.0), (1, 0, 0)), (2, "cup", (1.5, 0.0), (1, 0, 0))])])
    frontier = Frontier(0, np.zeros((30, 2), int), np.array([2.0, 2.0]), 30, None)
    prompts = []

    def fake(prompt, images):
        prompts.append((prompt, len(images)))
        return "Snapshot 0, Object 1" if "cup" in prompt.split("Task:")[1].split(".")[0] else "Frontier 0"

    chooser = VLMChooser(fake)
    snaps = list(mem.snapshots.values())
    got = chooser.choose(GoalQuery("category", "cup"), mem, snaps, [frontier], np.zeros(4))
    assert (got.kind, got.object) == ("object", 2)
    assert "Snapshot 0: Object 0: mug, Object 1: cup" in prompts[0][0] and prompts[0][1] == 2
    assert chooser.choose(GoalQuery("category", "vase"), mem, snaps, [frontier], np.zeros(4)).kind == "frontier"
    with pytest.raises(ValueError, match="no valid snapshot"):
        VLMChooser(lambda p, i: "Snapshot 9, Object 0").choose(GoalQuery("category", "cup"), mem, snaps, [],
                                                                np.zeros(4))


def test_same_seed_same_memory_and_actions():
    def run():
        env = _env()
        agent = GoatAgent(_camera(env), "kept")
        obs, _ = env.reset(seed=5)
        actions = []
        for _ in range(60):
            actions.append(agent.act(obs))
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            if terminated or truncated:
                break
        env.close()
        return actions, agent.memory.state_dict()

    (a1, m1), (a2, m2) = run(), run()
    assert a1 == a2
    assert m1["objects"] == m2["objects"] and m1["snapshots"] == m2["snapshots"] and m1["frontiers"] == m2["frontiers"]
    assert np.array_equal(m1["grid"], m2["grid"])
    assert m1["objects"] and m1["snapshots"], "60 steps of an episode saw no object"


def test_cleared_variant_forgets_at_every_goal_and_kept_does_not():
    env = _env(modalities=["category"])
    agents = {v: GoatAgent(_camera(env), v) for v in ("kept", "cleared")}
    for variant, agent in agents.items():
        obs, _ = env.reset(seed=3)
        agent.reset()
        objects_before = None
        done = False
        while not done:
            index = int(obs["goal_index"][0])
            if index == 1 and objects_before is None:
                objects_before = len(agent.memory.objects)
                agent.act(obs)  # the first step of goal 2
                after = len(agent.memory.objects)
                if variant == "kept":
                    assert after >= objects_before > 0
                else:
                    assert after <= objects_before and agent.memory.step == 1
                break
            obs, _, terminated, truncated, _ = env.step(agent.act(obs))
            done = terminated or truncated
        assert objects_before is not None, f"{variant}: the first goal never ended"
    env.close()


def test_an_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="allowed: kept, cleared, frontier"):
        GoatAgent(Camera(), "forgetful")


def test_questions_are_answered_from_memory_and_not_without_it():
    from embodied.agents.goat import answer
    from embodied.tasks.goat import QUESTION_KINDS, questions

    env = _env()
    mem, _ = _oracle_memory(env, 1)
    task = env.unwrapped
    asked = questions(task.scene.spec, task.seen_instances, np.random.default_rng(0), 40)
    assert {q.kind for q in asked} <= set(QUESTION_KINDS) and len({q.kind for q in asked}) >= 3
    for q in asked:  # well formed: the answer is one of the choices, choices distinct
        assert 0 <= q.answer < len(q.choices) and len(set(q.choices)) == len(q.choices)
    right = [answer(q, mem) == q.answer for q in asked]
    empty = SceneMemory(_camera(env))
    blind = [answer(q, empty) == q.answer for q in asked]
    env.close()
    assert np.mean(right) >= 0.8, [q.text for q, r in zip(asked, right) if not r]
    assert np.mean(blind) < np.mean(right) - 0.3  # an empty memory answers near chance


@pytest.mark.slow  # a writer process and 20 rendered steps: half a minute
def test_recording_shows_the_scene_memory_and_each_choice(tmp_path):
    from embodied.viewer.recording import SceneMemoryPolicy, record_episode
    from embodied.viewer.rrd import Recording

    env = _env(num_goals=1, steps_per_goal=20, width=64, height=64)
    result = record_episode(env, SceneMemoryPolicy(GoatAgent(_camera(env), "kept")), tmp_path / "goat.rrd", seed=0)
    env.close()
    rec = Recording(tmp_path / "goat.rrd")
    maps = rec.images("memory/scene_map")
    assert len(maps) == result["length"] and all(m.ndim == 3 and m.shape[2] == 3 for m in maps.values())
    last = maps[max(maps)]
    assert (last == (230, 30, 30)).all(-1).any()  # the agent is drawn
    choices = rec["memory/choice"].at("TextLog:text")
    assert len(choices) == result["length"]
    texts = [str(np.asarray(c).reshape(-1)[0]) for c in choices.values()]
    assert texts[0] == "looking around" and any(t.startswith(("frontier", "snapshot")) for t in texts), texts


@pytest.mark.slow  # two goals of a 6-room apartment at 128 px
def test_bench_scenemem_writes_its_figures(tmp_path):
    import json

    from embodied.eval.goat import bench_scene_memory

    out = tmp_path / "bench_scenemem.json"
    result = bench_scene_memory(str(out), quick=True)
    saved = json.loads(out.read_text())
    assert saved["steps"] == result["steps"] > 0 and saved["update_ms"] > 0 and saved["env_step_ms"] > 0
    assert saved["bytes_final"] > 0 and saved["snapshots_final"] >= 1 and saved["provenance"]["commit"]


def test_an_episode_asks_questions_in_the_middle_and_at_the_end():
    """run_episode asks about what was seen by the middle goal's start, and about the whole
    trajectory at the end; the middle questions only name things seen by then."""
    from embodied.eval.goat import run_episode, summarize_variant

    env = _env(num_goals=2, steps_per_goal=80)
    seen_at = {}
    task = env.unwrapped
    step = task._step

    def spy(action):  # the seen set when the second goal begins
        out = step(action)
        if task.goal_index == 1 and "mid" not in seen_at:
            seen_at["mid"] = set(task.seen_instances)
        return out

    task._step = spy
    result = run_episode(env, GoatAgent(_camera(env), "kept"), 0, n_questions=6)
    assert len(result["questions"]) == 6 and 0 < len(result["questions_mid"]) <= 6
    spec = task.scene.spec
    named = {o.category for o in spec.objects() if o.id in seen_at["mid"]}
    for q in result["questions_mid"]:
        if q["kind"] != "existence":  # existence questions may name an absent category
            assert any(f" {c} " in q["text"] for c in named), q["text"]
    summary = summarize_variant([result], 0.95)
    assert summary["questions_mid"]["n"] == len(result["questions_mid"])
    env.close()


def test_frontier_snapshots_are_rendered_facing_each_frontier():
    """With `look` (GoatNav.look) and a chooser that looks at images, every frontier reaching the VLM
    carries its own snapshot, rendered from where the agent stood facing that frontier's centre."""
    import math

    env = _env()
    task = env.unwrapped
    obs, _ = env.reset(seed=5)
    # the agent's camera turned in place: facing its current heading it shows the observation
    np.testing.assert_array_equal(task.look(float(obs["pose"][3])), obs["rgb"])
    assert not np.array_equal(task.look(float(obs["pose"][3]) + math.pi), obs["rgb"])
    rendered, fresh = {}, []

    def look(yaw):
        image = task.look(yaw)
        rendered[id(image)] = (yaw, image)  # holding the image keeps its id from being reused
        return image

    def fake(prompt, images):
        frontiers = [f for f in agent.memory.frontiers if not agent._visited(f)]
        assert prompt.count("\nFrontier ") == len(frontiers)
        x, y = agent.memory.pose[:2]
        for f, image in zip(frontiers, images[len(images) - len(frontiers):]):
            assert image is agent.memory.frontier_images[f.key] and image.shape == obs["rgb"].shape and image.any()
            if id(image) in rendered:  # rendered for this decision: at the bearing from here to its centre
                assert rendered[id(image)][0] == pytest.approx(math.atan2(f.centre[1] - y, f.centre[0] - x))
                fresh.append(f.key)
        return "Frontier 0" if frontiers else "Snapshot 0, Object 0"

    agent = GoatAgent(_camera(env), "kept", chooser=VLMChooser(fake))
    agent.look = look
    for _ in range(40):
        rendered.clear()  # this step's renders only (an older snapshot was taken from where the agent was then)
        obs, _, terminated, truncated, _ = env.step(agent.act(obs))
        if terminated or truncated:
            break
    env.close()
    assert len(set(fresh)) >= 2, "no frontier snapshot was rendered"


def test_active_questions_are_answered_from_memory_or_by_walking_to_look():
    """Active questions (A-EQA style) after the lifelong episode: the kept memory answers those about
    instances it holds where it stands; the cleared agent walks to look; the path-weighted score is
    correct x answered x shortest / max(shortest, walked)."""
    from embodied.eval.goat import ask_active, run_episode
    from embodied.tasks.measures import efficiency

    env = _env(num_goals=2, steps_per_goal=150)
    kept, cleared = GoatAgent(_camera(env), "kept"), GoatAgent(_camera(env), "cleared")
    run_episode(env, kept, 0)
    held = set(kept.memory.objects)
    k = ask_active(env, kept, 0, 6)
    run_episode(env, cleared, 0)
    c = ask_active(env, cleared, 0, 6)
    env.close()
    assert len(k) == 6 and [a["text"] for a in k] == [a["text"] for a in c]  # the same questions
    assert {a["kind"] for a in k} <= {"attribute", "room"}
    for a in k + c:
        assert np.isfinite(a["shortest"]) and a["shortest"] >= 0 and a["steps"] <= 150
        assert a["score"] == pytest.approx(float(a["correct"] and a["answered"]) * efficiency(a["shortest"], a["path"]))
    in_memory = [a for a in k if a["instance"] in held]
    assert in_memory and all(a["answered"] and a["path"] == 0 and a["score"] == float(a["correct"]) for a in in_memory)
    assert sum(a["path"] for a in c) > sum(a["path"] for a in k) + 5.0  # the cleared agent walks to look
    assert np.mean([a["score"] for a in k]) > np.mean([a["score"] for a in c])
    assert any(a["answered"] and a["path"] > 0 for a in c)


def test_an_active_question_unanswered_in_its_budget_scores_zero():
    """With fewer steps than the cleared agent's look around, no question is answered: its guess
    counts for accuracy, the weighted score is 0, and the walk stops at the budget."""
    from embodied.eval.goat import ask_active

    env = _env(num_goals=1, steps_per_goal=6)
    agent = GoatAgent(_camera(env), "cleared")
    env.reset(seed=0)
    agent.reset()
    out = ask_active(env, agent, 0, 3)
    env.close()
    assert len(out) == 3 and all(not a["answered"] and a["score"] == 0 and a["steps"] == 6 for a in out)


def test_an_active_question_needs_one_instance():
    from embodied.tasks.goat import Question, questions

    with pytest.raises(ValueError, match="names no one instance to look at; allowed: attribute, room"):
        Question("count", "how many mug did you see ?", ["1", "2"], 0, {"category": "mug"}).goal_text()
    with pytest.raises(ValueError, match="allowed: a non-empty subset of attribute, room, count, existence"):
        questions(None, set(), np.random.default_rng(0), 3, ("colour",))


def test_the_planner_passes_a_gap_the_map_closes_and_not_a_wall():
    """Two rooms joined by a 0.3 m gap (3 map cells of 10 cm). At the agent's full clearance (0.18 m)
    the map closes it; the agent stands in a gap it could enter, so the planner plans again with half
    the clearance and walks. Behind a wall without a gap the target stays unreachable."""
    cam = Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25)

    def planned(door: bool):
        mem = SceneMemory(cam)
        mem.grid[:] = OCCUPIED
        (r0, c0), (r1, c1) = mem.cell_of((-1.5, -1.0)), mem.cell_of((1.5, 1.0))
        mem.grid[r0:r1, c0:c1] = FREE
        _, cw = mem.cell_of((0.0, 0.0))
        mem.grid[:, cw - 1:cw + 2] = OCCUPIED  # a wall 0.3 m thick along x = 0
        if door:
            rd, _ = mem.cell_of((0.0, 0.0))
            mem.grid[rd - 1:rd + 2, cw - 1:cw + 2] = FREE
        planner = MapPlanner(0.25, 30.0, 0.18, 1.5)
        return planner.action(mem, np.array([-1.0, 0.0, 0.0, 0.0]), np.array([1.0, 0.0]), (0.3,))

    assert planned(door=True) == ("move_forward", "moving")
    assert planned(door=False) == ("stop", "unreachable")


def test_the_planner_does_not_undo_a_turn_in_place_when_walking_on_makes_progress(monkeypatch):
    """On a cell boundary one heading can read two cells' distances, so the follower may say left
    at one yaw and right at the next for ever (a seed's agent turned 200 steps in place). The planner
    walks on instead of undoing its last turn where it stands, and keeps any other turn."""
    import embodied.agents.goat as goat

    mem = SceneMemory(Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25))
    mem.grid[:] = FREE
    said = iter(["turn_left", "turn_right", "turn_right"])
    monkeypatch.setattr(goat.ShortestPathFollower, "next_action", lambda self, agent: next(said))
    planner = MapPlanner(0.25, 30.0, 0.18, 1.5)
    target = np.array([2.0, 0.0])
    here = np.array([-1.0, 0.0, 0.0, 0.0])
    assert planner.action(mem, here, target, (0.3,)) == ("turn_left", "moving")
    assert planner.action(mem, here, target, (0.3,)) == ("move_forward", "moving")  # not back right
    moved = np.array([-0.75, 0.0, 0.0, 0.0])
    assert planner.action(mem, moved, target, (0.3,)) == ("turn_right", "moving")  # elsewhere: as said


def test_a_new_episode_or_a_return_to_the_start_forgets_the_last_turn(monkeypatch):
    """Every episode starts at pose (0, 0) in its own frame, and the active questions put the agent back
    there: a turn in place kept from before would make the first plan walk on where it should turn
    (the kept agent's next episode went another way after answering questions at its start)."""
    import embodied.agents.goat as goat

    target, start = np.array([2.0, 0.0]), np.zeros(4)
    for begin in ("reset", "relocated"):
        agent = GoatAgent(Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25))
        agent.memory.grid[:] = FREE
        said = iter(["turn_left", "turn_right"])
        monkeypatch.setattr(goat.ShortestPathFollower, "next_action", lambda self, a: next(said))
        assert agent.planner.action(agent.memory, start, target, (0.3,)) == ("turn_left", "moving")
        getattr(agent, begin)()
        agent.memory.grid[:] = FREE
        assert agent.planner.action(agent.memory, start, target, (0.3,)) == ("turn_right", "moving"), begin


def test_near_its_object_the_agent_stops_only_where_it_saw_it_else_faces_it_looks_up_and_moves(monkeypatch):
    """A goal's view points must see the object, and the map cannot tell the near side of a wall from
    the far side: arrived near the chosen object, the agent stops where it detected it; otherwise it
    turns to face it, looks up once, and then plans to another place near it, avoiding this one."""
    from embodied.agents.goat import MAX_BLIND, STALL_STEPS, Choice

    agent = GoatAgent(Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25))
    agent.memory.objects[7] = SceneObject(7, "mug", np.array([0.0, 1.0, 0.8]), np.zeros(3))
    asked = []

    def arrived(memory, pose, target, radii, avoid=()):
        asked.append([tuple(p) for p in avoid])
        if any(np.hypot(*(pose[:2] - p)) < 0.4 for p in avoid):
            return "move_forward", "moving"
        return "stop", "arrived"

    monkeypatch.setattr(agent.planner, "action", arrived)
    agent.choice, agent.pending = Choice("object", 0, 7, np.array([0.0, 1.0])), []
    here = np.array([0.0, 0.0, 0.0, 0.0])  # facing +x; the mug lies to the left (+y)
    assert agent._decide(here, []) == "turn_left"
    assert agent._decide(np.array([0.0, 0.0, 0.0, np.pi / 2]), []) == "look_up"
    assert agent.pending == ["look_down"]
    agent.pending.clear()
    # Seen from nowhere here: this place is given up, and the planner is asked again avoiding it.
    assert agent._decide(np.array([0.0, 0.0, 0.0, np.pi / 2]), []) == "move_forward"
    assert len(agent.blind) == 1 and asked[-1] == [(0.0, 0.0)]
    # Detected from where it stands: stop.
    agent.sighted = np.array([0.5, 0.2])
    assert agent._decide(np.array([0.5, 0.2, 0.0, 0.0]), [7]) == "stop"
    # Walking to the next place while the plan's distance to it shrinks, it walks on; a place near it
    # that the steps keep missing (the distance stays) ends in a stop after STALL_STEPS.
    walking = np.array([0.1, 0.0, 0.0, 0.0])
    for d in (2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.2, 0.3):
        agent.planner.distance = d
        assert agent._decide(walking, []) == "move_forward"
    assert [agent._decide(walking, []) for _ in range(STALL_STEPS - 2)] == ["move_forward"] * (STALL_STEPS - 2)
    assert agent._decide(walking, []) == "stop"
    # After MAX_BLIND places it stops anyway, as near as the map allows.
    agent.sighted, agent.blind = None, [np.array([9.0, float(i)]) for i in range(MAX_BLIND)]
    assert agent._decide(np.array([1.0, 1.0, 0.0, 0.0]), []) == "stop"


def test_act_records_where_the_chosen_object_was_detected(monkeypatch):
    from embodied.agents.goat import Choice

    agent = GoatAgent(Camera(width=32, height=32, hfov_deg=90.0, mount_height=1.25))
    agent.goal_index, agent.choice = 0, Choice("object", 0, 7, np.array([0.0, 1.0]))
    seen = iter([[3], [3, 7], [3]])
    monkeypatch.setattr(agent.memory, "observe", lambda obs, tilt: next(seen))
    agent.pending = ["turn_left"] * 3
    for x in (0.0, 0.25, 0.5):
        agent.act({"pose": np.array([x, 0.0, 0.0, 0.0]), "goal_index": np.array([0])})
    assert agent.sighted.tolist() == [0.25, 0.0]


def test_an_image_goal_is_the_object_nearest_the_image_centre():
    """A small object at the centre beside a larger one of another class: the goal is the small one,
    with its own colour (not the mean over every pixel of its class)."""
    classes = semantic_classes()
    can, book = classes.index("can"), classes.index("book")
    sem = np.zeros((64, 64), np.int32)
    rgb = np.zeros((64, 64, 3), np.uint8)
    sem[26:40, 20:30] = book  # beside it, and more of the 9 x 9 pixels about the centre than the can
    sem[30:34, 30:34] = can  # the instance, at the centre
    rgb[30:34, 30:34] = (200, 20, 20)  # this can is red
    sem[0:6, 56:62] = can  # another can far from the centre, green
    rgb[0:6, 56:62] = (20, 200, 20)
    obs = {"goal_modality": np.array([MODALITIES.index("image")]), "goal_semantic": sem, "goal_image": rgb}
    query = GoalQuery.from_observation(obs)
    assert query.category == "can" and query.colour == colour_name(np.array([200, 20, 20]) / 255.0)
    assert "book" in query.context
    with pytest.raises(ValueError, match="no object"):
        GoalQuery.from_observation({**obs, "goal_semantic": np.zeros_like(sem)})


def test_image_goal_colours_compare_as_colours_not_names():
    """A goal image's colour against a remembered one: shading (a factor on rgb) keeps them alike, a
    pair on either side of a name's bin edge is alike, other hues and white against black are not."""
    white_ish, bluish = np.array([0.486, 0.464, 0.578]), np.array([0.452, 0.426, 0.559])  # one plate, two views
    assert colour_name(white_ish) != colour_name(bluish) and rgb_similarity(white_ish, bluish) > 0.8
    red = np.array([0.8, 0.15, 0.1])
    assert rgb_similarity(red, 0.5 * red) == pytest.approx(1.0)
    assert rgb_similarity(red, np.array([0.1, 0.7, 0.2])) == 0.0
    assert rgb_similarity(np.array([0.9, 0.9, 0.9]), np.array([0.1, 0.1, 0.1])) == 0.0
    assert 0.0 < rgb_similarity(red, np.array([0.8, 0.23, 0.1])) < rgb_similarity(red, np.array([0.8, 0.2, 0.1])) < 1.0


def test_confusion_per_detection_is_undone_by_fusing_labels_per_object_is_not():
    """The same oracle walk seen by two memories that mislabel 30% of the time: drawn once per object
    (a systematic error) the wrong labels stay; drawn per detection, each object keeps its most common
    label, as 3D-Mem's fused objects do, and the labels come out right."""
    env = _env()
    mems = {mode: SceneMemory(_camera(env), SceneMemoryConfig(confusion_rate=0.3, confusion=mode))
            for mode in ("object", "detection")}
    obs, _ = env.reset(seed=0)
    for mem in mems.values():
        mem.reset(0)
    done = False
    while not done:
        for mem in mems.values():
            mem.observe(obs, 0.0)
        obs, _, terminated, truncated, _ = env.step(env.unwrapped.oracle_action())
        done = terminated or truncated
    spec = env.unwrapped.scene.spec
    wrong = {mode: sum(o.category != spec.item(o.id).category for o in mem.objects.values() if o.detections >= 3)
             for mode, mem in mems.items()}
    assert set(mems["object"].objects) == set(mems["detection"].objects) and len(mems["object"].objects) >= 10
    assert wrong["object"] >= 3 and wrong["detection"] == 0, wrong
    assert all(sum(o.labels.values()) == o.detections for o in mems["detection"].objects.values())


def test_an_object_mislabelled_per_object_is_mislabelled_for_every_memory_of_the_episode():
    """Per-object confusion is the detector's systematic error: which objects are mislabelled, and as
    what, depends on the episode and the object, not on what the memory saw before. A memory that
    sees only the walk's second half, and one cleared halfway (the cleared ablation), give every
    object they share with a memory of the whole walk the same label."""
    env = _env()
    cfg = SceneMemoryConfig(confusion_rate=0.3, miss_rate=0.2)
    whole, late, cleared = (SceneMemory(_camera(env), cfg) for _ in range(3))
    obs, _ = env.reset(seed=0)
    for mem in (whole, late, cleared):
        mem.reset(0)
    frames = []
    done = False
    while not done:
        frames.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.unwrapped.oracle_action())
        done = terminated or truncated
    half = len(frames) // 2
    for t, frame in enumerate(frames):
        if t == half:
            cleared.clear()
        whole.observe(frame, 0.0)
        cleared.observe(frame, 0.0)
        if t >= half:
            late.observe(frame, 0.0)
    spec = env.unwrapped.scene.spec
    for mem in (late, cleared):
        shared = mem.objects.keys() & whole.objects.keys()
        assert len(shared) >= 5
        assert {i: mem.objects[i].category for i in shared} == {i: whole.objects[i].category for i in shared}
    assert any(o.category != spec.item(o.id).category for o in late.objects.values())


def test_an_object_keeps_its_most_common_label():
    obj = SceneObject(1, "mug", np.zeros(3), np.zeros(3))
    for label in ("mug", "vase", "vase"):
        obj.vote(label)
    assert obj.category == "vase"
    obj.vote("mug")  # a tie keeps the current label
    assert obj.category == "vase"
