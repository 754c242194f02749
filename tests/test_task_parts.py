"""The task families' parts (embodied/tasks/ballet.py, room_ballet/, fastmap/, answer.py), each tested alone,
and a behaviour lock: whole episodes of fixed seeds hash to the digests the tasks gave before they were
split into parts, so the split changes no observation, reward, termination or measure."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from embodied.tasks import make_env

# --- behaviour lock -------------------------------------------------------------------------------------
# Measures hashed (the info keys the tasks had when the digests were taken; keys added later are not).
INFO_KEYS = ("success", "chance", "show_steps", "walk_steps", "memory_budget", "question_type", "scene", "phase",
             "named", "distractors_done", "episode_in_block")
IMAGE_KEYS = ("rgb", "depth", "semantic")


def _feed(h, value) -> None:
    """Hash a value platform-stably: ints as int64, floats rounded to 1e-4, dicts by sorted key."""
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(key.encode())
            _feed(h, value[key])
        return
    a = np.asarray(value)
    if a.dtype.kind == "f":
        a = np.round(a.astype(np.float64) * 1e4).astype(np.int64)
    elif a.dtype.kind in "iub":
        a = a.astype(np.int64)
    else:
        h.update(str(value).encode())
        return
    h.update(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())


# Observation keys added after the digests were taken: Room Ballet multi's `task` id (the question
# type that text[0] already carries; test_room_ballet checks they agree).
ADDED_KEYS = ("task",)


def episode_digest(cfg: dict, seed: int, policy: str, images: bool = True, episodes: int = 2) -> str:
    """Digest of `episodes` episodes (the first reset with `seed`, the next without: a level's block of
    episodes continues) under the oracle or a random policy seeded with `seed`."""
    env = make_env(cfg)
    h = hashlib.sha256()
    rng = np.random.default_rng(seed)
    for episode in range(episodes):
        obs, info = env.reset(seed=seed if episode == 0 else None)
        done = False
        while True:
            _feed(h, {k: v for k, v in obs.items() if (images or k not in IMAGE_KEYS) and k not in ADDED_KEYS})
            _feed(h, {k: info[k] for k in INFO_KEYS if k in info})
            if done:
                break
            action = env.oracle_action() if policy == "oracle" else int(rng.integers(env.action_space.n))
            obs, reward, terminated, truncated, info = env.step(action)
            _feed(h, [action, reward, terminated, truncated])
            done = terminated or truncated
    return h.hexdigest()[:16]


# (task, keys, hash images, digests of (oracle seed 3, oracle seed 11, random seed 3, random seed 11)).
# Ray-cast images are left out of the digests (not bit-stable across CPUs); their text, holding and
# measures are in.
LOCKED = [
    ('ballet/2_delay16', {}, True,
     ('d55727e96be4487b', '19ca33357d45c712', 'a7309e72e8355e87', 'b6efd392f25c8a41')),
    ('ballet/8_delay48', {}, True,
     ('c8dc6fef3a821fa6', '297c2745ad2b83bf', 'c0f52ce330f2e748', '4e800985a6333ad3')),
    ('room_ballet/budget', {}, True,
     ('42b11af2ae36cf41', 'b041c54aa87a3bcd', '7d23bb593695f1ab', '6dafbf2454720555')),
    ('room_ballet/budget_grid', {}, True,
     ('e4bd7ef5d8cf95cb', '133eda334087c1dc', 'c0654c51b0e42317', '406dec735d8c614f')),
    ('room_ballet/multi', {}, True,
     ('f80f6aae081c527f', '093723c8b25dc942', '3434c5b7426278d7', '59481b0fc2e64b08')),
    ('room_ballet/multi_rare_room', {}, True,
     ('b68fb632b05adcf4', '4013ba633133e5df', 'ded7c3f9fad06d8c', 'b6acfb180f19c53a')),
    ('room_ballet/budget', {'world': 'apartment', 'rgb': False, 'apartments': 2}, True,
     ('46cb169a2684c151', 'aa5ac9d219c25987', '03cc71267ec0e943', 'd1f2ab6285bd7818')),
    ('room_ballet/multi', {'world': 'apartment', 'rgb': False, 'apartments': 2}, True,
     ('78665c3e3e04ae16', '2dbf87501ae01bae', 'c6376f181f062996', 'f9d3fb21354a340c')),
    ('fastmap/architecture_comparison/fast_map_three_objs', {'scenes': 'symbolic'}, True,
     ('abc088a8cc515318', '3b76b2d5dc38538c', '92ac396db6fd1f54', '9fa3da5a7d1c304a')),
    ('fastmap/fast_slow/fast_map_three_objs_bed_tray_putting_near', {'scenes': 'symbolic'}, True,
     ('f1ba6f7e76aed481', 'b12edd0f65a4c38c', 'f6a78c96282e6532', '4588eae015c47a3e')),
    ('fastmap/fast_slow/slow_learn_three_objs_bed_tray_putting_on', {'scenes': 'symbolic'}, True,
     ('800917e2302fa849', '5e9ed1c1524d9e11', 'b18f878bd2a1ef32', '52423dd16b13f0ea')),
    ('fastmap/with_distractors/eval_fast_map_two_episodes_three_objs_five_distractor', {'scenes': 'symbolic'}, True,
     ('daf12329fb77de21', 'd9d4146384aa5ba9', 'e8eaf9531c194bf8', '67823e3b0bba234e')),
    ('fastmap/new_obj_generalization/fast_map_three_objs_global_five', {'scenes': 'symbolic'}, True,
     ('57871072893c0cf5', '668e2a1d15c135d8', 'fe1fb7113b42cd7d', 'a79901c89e18d149')),
    ('fastmap/new_obj_generalization/fast_map_heldout_test_objs', {'scenes': 'symbolic'}, True,
     ('7b6e75744e126226', '6ba614242b4d14e0', '0c99415b1a459aac', '9a0a62bd95933016')),
    ('fastmap/fast_slow/fast_map_three_objs', {'scenes': 'room', 'width': 32, 'height': 24}, False,
     ('c0ed0efbdefef89e', 'a2bfd7af3d4584e1', 'ac859c8c45f39218', 'f204b0035a419fc4')),
]


@pytest.mark.parametrize("name,keys,images,digests", LOCKED,
                         ids=[f"{n}-{'-'.join(map(str, k.values()))}" if k else n for n, k, _, _ in LOCKED])
def test_episodes_unchanged(name, keys, images, digests):
    got = tuple(episode_digest({"name": name, **keys}, seed, policy, images)
                for policy in ("oracle", "random") for seed in (3, 11))
    assert got == digests


# --- the show-then-ask phase machine (embodied/tasks/answer.py), shared by Ballet and Room Ballet ---------------
def test_phase_machine_with_a_fake_clock():
    from embodied.tasks.answer import ShowThenAsk

    phases = ShowThenAsk(show_steps=3, answer_steps=2)
    assert phases.max_steps == 5
    assert [phases.phase(t) for t in range(5)] == ["show"] * 3 + ["question"] * 2
    right = 4
    assert phases.step(0, right, right) == (0.0, False, False)  # answers during the show are ignored
    assert phases.step(2, 0, right) == (0.0, False, False)
    assert phases.step(3, right, right) == (1.0, True, False)
    assert phases.step(3, right + 1, right) == (0.0, True, False)  # a wrong answer ends the episode
    assert phases.step(3, 0, right) == (0.0, False, False)  # waiting at the question
    assert phases.step(4, 0, right) == (0.0, False, True)  # out of time
    assert phases.step(4, right, right) == (1.0, True, False)  # the last step still answers
    assert [phases.expert(t, right) for t in range(5)] == [0, 0, 0, right, right]


def test_checked_action_names_the_range():
    from gymnasium import spaces

    from embodied.tasks.answer import checked_action

    assert checked_action(np.int64(2), spaces.Discrete(3)) == 2
    with pytest.raises(ValueError, match=r"action 3 out of range 0..2"):
        checked_action(3, spaces.Discrete(3))


@pytest.mark.parametrize("name", ["ballet/2_delay16", "room_ballet/budget"])
def test_ballet_and_room_ballet_share_the_phase_machine(name):
    from embodied.tasks.answer import ShowThenAsk

    env = make_env({"name": name})
    env.reset(seed=0)
    assert isinstance(env.phases, ShowThenAsk) and env.phases.max_steps == env.max_episode_steps
    while env.phases.phase(env._t) == "show":
        env.step(env.action_space.n - 1)  # ignored during the show
    _, reward, terminated, _, info = env.step(env.answer)
    assert (reward, terminated, info["success"]) == (1.0, True, 1.0)


# --- Room Ballet's parts ---------------------------------------------------------------------------------------
def _hand_made_layout():
    from embodied.tasks.room_ballet import Layout

    # Room 0 for two steps (red/green dancer 5 doing up_and_down), then room 1 (colour 7, circle_cw).
    return Layout(task_type="room_dance", places=np.array([0, 0, 1]), phase=np.array([0, 1, 0]),
                  step_colour=np.array([5, 5, 7]), step_dance=np.array([2, 2, 0]), question=("room", 1), answer=1,
                  answer_steps=np.array([2]), room_dance=np.array([2, 0]), room_colour=np.array([5, 7]))


def test_room_ballet_level_spec_checks_and_derives():
    from dataclasses import replace

    from embodied.tasks.room_ballet import LEVELS, RoomBalletLevel

    assert LEVELS["multi"].walk_length == 16 * 4 and LEVELS["budget"].walk_length == 96
    assert LEVELS["multi_recent"].question_types == ("recent",) and LEVELS["budget_grid"].obs_mode == "grid"
    with pytest.raises(ValueError, match="memory_budget=96 must be below the walk"):
        replace(LEVELS["budget"], memory_budget=96).validate()
    with pytest.raises(ValueError, match="20 rooms"):
        RoomBalletLevel(rooms_wide=5, rooms_high=4).validate()


def test_room_ballet_budget_layout_walks_between_neighbours():
    from embodied.tasks.room_ballet import LEVELS, NUM_DANCES, room_neighbours, sample_layout

    level = LEVELS["budget"]
    for seed in range(5):
        layout = sample_layout(level, np.random.default_rng(seed), lambda r: room_neighbours(r, 4, 2))
        places = layout.places
        assert len(places) == level.walk_length
        changes = np.flatnonzero(np.diff(places)) + 1
        for a, b in zip(places[changes - 1], places[changes]):
            assert b in room_neighbours(int(a), 4, 2)
        stays = np.diff(np.concatenate([[0], changes]))
        assert ((stays >= level.stay_min) & (stays <= level.stay_max)).all()
        assert (layout.phase[changes] == 0).all() and (layout.step_dance == layout.room_dance[places]).all()
        kind, value = layout.question
        room = value if kind == "room" else int(np.flatnonzero(layout.room_dance == value)[0])
        assert layout.answer == (1 + int(layout.room_dance[room]) if kind == "room" else 1 + NUM_DANCES + room)
        assert (places[layout.answer_steps] == room).all() and room in places


@pytest.mark.parametrize("kind", ["recent", "early", "rare_room", "busy_room"])
def test_room_ballet_oracle_multi_answer_survives_only_its_strategy(kind):
    from dataclasses import replace

    from embodied.tasks.room_ballet import BEST_STRATEGY, LEVELS, STRATEGIES, sample_layout
    from embodied.tasks.room_ballet.oracle import answer_kept

    level = replace(LEVELS["multi"], question_types=(kind,))
    layout = sample_layout(level, np.random.default_rng(1), lambda r: [])
    assert layout.task_type == kind
    kept = {s: answer_kept(layout, s, level.memory_budget) for s in STRATEGIES}
    assert kept == {s: s == BEST_STRATEGY[kind] for s in STRATEGIES}
    assert layout.answer == 1 + int(layout.segment_dance[layout.target_segment])


def test_room_ballet_oracle_answers_a_hand_made_layout():
    from embodied.tasks.answer import ShowThenAsk
    from embodied.tasks.room_ballet.oracle import expert_action, question_places

    layout = _hand_made_layout()
    phases = ShowThenAsk(3, 4)
    assert [expert_action(layout, phases, t) for t in range(5)] == [0, 0, 0, 1, 1]
    assert question_places(layout).tolist() == [0, 0, 1, 1]


def test_room_ballet_renderer_of_a_hand_made_layout():
    from embodied.tasks.room_ballet import (ASK_ROOM_TOKEN, COLOUR_TOKEN, DANCE_TOKEN, DANCER_CLASS, ROOM_TOKEN,
                                            TYPE_TOKEN, WALL_CLASS, describe_text)
    from embodied.tasks.room_ballet.render import grid_view, text_tokens

    layout = _hand_made_layout()
    assert text_tokens(layout, 2, 3, show_walk=True).tolist() == [TYPE_TOKEN, ROOM_TOKEN + 1, COLOUR_TOKEN + 7, DANCE_TOKEN]
    assert text_tokens(layout, 2, 3, show_walk=False).tolist() == [TYPE_TOKEN, 0, 0, 0]
    question = text_tokens(layout, 3, 3, show_walk=True)
    assert question.tolist() == [TYPE_TOKEN, ASK_ROOM_TOKEN, ROOM_TOKEN + 1, 0]
    assert describe_text(question) == "room_dance: which dance was in room 1?"
    grid = grid_view(layout, 2, 3, place=1)
    assert (grid[0] == WALL_CLASS + 1).all() and (grid[:, -1] == WALL_CLASS + 1).all()
    # circle_cw starts one cell up (dy = +1): row 3, column 4 of the 9 x 9 room.
    assert np.argwhere(grid >= DANCER_CLASS).tolist() == [[3, 4]] and grid[3, 4] == DANCER_CLASS + 7
    assert (grid_view(layout, 3, 3, place=1) < DANCER_CLASS).all()  # the question: the dancer has gone


# --- fast-mapping's parts ------------------------------------------------------------------------------------
def _lattice(objects=((2, 0),), agent=(0, 0), heading=0, fixtures=True):
    """A 5 x 5 lattice: bed on (0, 4) + (1, 4), tray on (4, 4), mugs named NONSENSE_WORDS[i] at `objects`."""
    from embodied.tasks.fastmap import NONSENSE_WORDS, FastMapObject, Lattice

    lattice = Lattice(5, fixtures, [FastMapObject("mug", 0, NONSENSE_WORDS[i], np.array([200, 10, 10], np.uint8), cell)
                                    for i, cell in enumerate(objects)])
    if fixtures:
        lattice.bed_cells, lattice.tray_cell = [(0, 4), (1, 4)], (4, 4)
    lattice.agent, lattice.heading = agent, heading
    return lattice


def test_fastmap_level_spec_and_actions():
    from embodied.tasks.config import FastMapConfig
    from embodied.tasks.fastmap import LEVELS, FastMapLevel, action_name, level_max_steps

    assert len(LEVELS) == 29
    cfg = FastMapConfig()
    lv = LEVELS["with_distractors/fast_map_three_objs_two_distractor"]
    assert level_max_steps(lv, cfg) == 3 * cfg.discovery_steps_per_object + 2 * cfg.distractor_steps + cfg.instruction_steps
    assert action_name(6) == action_name("lift") == "lift"
    for bad in (8, 1.5, "jump"):
        with pytest.raises(ValueError, match="allowed"):
            action_name(bad)
    with pytest.raises(ValueError, match="need fixtures=True"):
        FastMapLevel(fixtures=False, distractors=1).validate()


def test_fastmap_lattice_queries_on_a_hand_made_room():
    lattice = _lattice(objects=((1, 0), (3, 3)))
    assert lattice.front_cell() == (1, 0) and lattice.object_at((1, 0)) == 0
    assert not lattice.walkable((1, 0)) and not lattice.walkable((0, 4)) and not lattice.walkable((5, 0))
    assert lattice.fixture_at((1, 4)) == "bed" and lattice.fixture_cells("tray") == [(4, 4)]
    assert lattice.put_spot((0, 4)) == "bed" and lattice.put_spot((3, 3)) is None and lattice.put_spot((2, 2)) == "floor"
    assert lattice.put_satisfies((4, 4), "put_on", "tray") and not lattice.put_satisfies((3, 4), "put_on", "tray")
    assert lattice.put_satisfies((3, 4), "put_near", "tray") and not lattice.put_satisfies((4, 4), "put_near", "tray")
    assert lattice.view_position((1, 0)) == (3, 4)  # one cell ahead: the row above the map's centre (4, 4)
    lattice.pick(0)
    assert lattice.held == 0 and lattice.object_at((1, 0)) == -1 and lattice.objects[0].cell is None
    lattice.move(1)
    assert lattice.agent == (1, 0)
    lattice.turn(1)
    assert lattice.front_cell() == (1, 1)


def test_fastmap_layout_draw_places_everything_apart_and_reachable():
    lattice = _lattice(objects=((0, 0), (0, 0), (0, 0)))
    for seed in range(5):
        lattice.draw(np.random.default_rng(seed))
        cells = lattice.bed_cells + [lattice.tray_cell, lattice.agent] + [o.cell for o in lattice.objects]
        assert len(set(cells)) == len(cells) == 7 and lattice.all_reachable()
        (b0, b1) = lattice.bed_cells
        assert abs(b0[0] - b1[0]) + abs(b0[1] - b1[1]) == 1
        assert b0[1] == b1[1] in (0, 4) or b0[0] == b1[0] in (0, 4)  # along a wall


def test_fastmap_phase_machine_with_a_fake_clock():
    from dataclasses import replace

    from embodied.tasks.config import FastMapConfig
    from embodied.tasks.fastmap import LEVELS, NONSENSE_WORDS, FastMapPhases, decode_text

    cfg = FastMapConfig(name="fastmap/with_distractors/fast_map_three_objs_one_distractor", scenes="symbolic")
    level = replace(LEVELS["with_distractors/fast_map_three_objs_one_distractor"], num_objects=1)
    lattice, rng = _lattice(objects=((2, 2),)), np.random.default_rng(0)
    phases = FastMapPhases(level, cfg)
    phases.begin(lattice, rng, discovery=True)
    assert phases.phase == "discovery" and phases.discovery_budget == cfg.discovery_steps_per_object
    assert decode_text(phases.observe_text(lattice)) == ""
    lattice.held = 0
    name = NONSENSE_WORDS[0]
    assert decode_text(phases.observe_text(lattice)) == f"this is a {name}"
    assert phases.lifted(0) == (level.shaping_reward, False) and phases.lifted(0) == (0.0, False)  # named once
    for _ in range(cfg.discovery_steps_per_object - 1):
        phases.tick()
        assert phases.advance(lattice, rng) == 0.0 and phases.phase == "discovery"  # still held
    phases.tick()
    phases.advance(lattice, rng)  # the budget is spent: the held object is dropped
    assert phases.phase == "distractor" and lattice.held == -1 and lattice.objects[0].cell is not None
    assert decode_text(phases.text) == f"go to the {phases.distractor_target}"
    lattice.agent, lattice.heading = ((3, 4), 0) if phases.distractor_target == "tray" else ((2, 4), 2)
    phases.tick()
    assert phases.advance(lattice, rng) == cfg.distractor_reward and phases.phase == "instruction"
    assert phases.distractors_done == 1 and phases.target == 0 and phases.instruction == ("lift", None)
    assert decode_text(phases.text) == f"lift the {name}"
    for _ in range(cfg.instruction_steps):
        assert not phases.out_of_time()
        phases.tick()
    assert phases.out_of_time()
    assert phases.lifted(0) == (0.0, True) and phases.success == 1.0


def test_fastmap_put_ends_a_put_instruction_only():
    from embodied.tasks.config import FastMapConfig
    from embodied.tasks.fastmap import LEVELS, FastMapPhases

    phases = FastMapPhases(LEVELS["fast_slow/fast_map_three_objs_bed_tray_putting_on"], FastMapConfig(scenes="symbolic"))
    lattice = _lattice(objects=((2, 2), (3, 2)))
    phases.phase, phases.target, phases.instruction = "instruction", 1, ("put_on", "tray")
    assert phases.put(lattice, 1, (4, 4)) and phases.success == 1.0
    assert phases.put(lattice, 0, (4, 4)) and phases.success == 0.0  # the wrong object
    assert phases.put(lattice, 1, (3, 4)) and phases.success == 0.0  # next to, not on
    phases.phase = "discovery"
    assert not phases.put(lattice, 1, (4, 4))


def test_fastmap_oracle_plans_on_a_hand_made_room():
    from embodied.tasks.config import FastMapConfig
    from embodied.tasks.fastmap import FASTMAP_ACTIONS, LEVELS, FastMapPhases
    from embodied.tasks.fastmap.oracle import approach, expert_action

    phases = FastMapPhases(LEVELS["fast_slow/fast_map_three_objs_bed_tray_putting_on"], FastMapConfig(scenes="symbolic"))
    phases.phase, phases.target, phases.instruction = "instruction", 0, ("put_on", "tray")
    act = lambda lattice: FASTMAP_ACTIONS[expert_action(lattice, phases)]  # noqa: E731
    assert act(_lattice(objects=((1, 0),))) == "lift"  # the target is in front
    assert act(_lattice(objects=((2, 0),))) == "move_forward"
    assert act(_lattice(objects=((0, 1),))) == "turn_left"  # heading 0 looks along +x; left is +y
    held = _lattice(objects=((1, 0),), agent=(4, 3), heading=1)
    held.pick(0)
    assert act(held) == "put"  # facing the tray with the target in hand
    held.heading = 0
    assert act(held) == "turn_left"
    phases.phase, phases.named = "discovery", {0}
    free = _lattice(objects=((1, 0), (0, 2)))
    assert act(free) == "turn_left"  # object 0 is named: go for object 1
    assert FASTMAP_ACTIONS[approach(free, {(0, 2)}, "lift")] == "turn_left"


def test_fastmap_symbolic_map_of_a_hand_made_room():
    from embodied.tasks.fastmap import AGENT_RGB, BED_RGB, FLOOR_RGB, WALL_RGB, glyph_mask, symbolic_map

    px = 3
    lattice = _lattice(objects=((1, 0),))
    img = symbolic_map(lattice, px)
    assert img.shape == (9 * px, 9 * px, 3) and img.dtype == np.uint8
    tile = lambda row, col: img[row * px:(row + 1) * px, col * px:(col + 1) * px]  # noqa: E731
    assert (tile(4, 4) == AGENT_RGB).all()  # the agent at the centre
    ahead = tile(3, 4)
    mask = glyph_mask("mug", px)
    assert (ahead[mask] == (200, 10, 10)).all() and (ahead[~mask] == FLOOR_RGB).all()
    assert (tile(5, 4) == WALL_RGB).all()  # behind the agent: outside the room
    # The bed at (0, 4) and (1, 4): four cells to the agent's left (heading +x, left is +y).
    assert (tile(4, 0) == BED_RGB).all() and (tile(3, 0) == BED_RGB).all()
    lattice.pick(0)
    img = symbolic_map(lattice, px)
    centre = tile(4, 4)
    assert (centre[mask] == (200, 10, 10)).all() and (centre[~mask] == FLOOR_RGB).all()  # held: drawn at the agent


def test_fastmap_room_view_keeps_a_held_object_in_the_hand_as_the_agent_turns_and_walks():
    """The room renderer poses a held object in front of the camera after every move and turn (it used
    to stay where it was lifted, out of view after the first turn)."""
    from embodied.tasks.fastmap import FASTMAP_ACTIONS
    from embodied.world import semantic_classes

    env = make_env({"name": "fastmap/fast_slow/fast_map_three_objs", "scenes": "room", "width": 64, "height": 48,
                    "sensors": ["rgb", "semantic"]})
    env.reset(seed=3)
    while env.held < 0:
        obs, *_ = env.step(env.oracle_action())
    held = semantic_classes().index(env.objects[env.held].category)
    in_hand = int((obs["semantic"] == held).sum())
    assert in_hand > 20
    for name in ("turn_left", "turn_left", "turn_right", "move_forward"):
        obs, *_ = env.step(FASTMAP_ACTIONS.index(name))
        assert env.held >= 0 and int((obs["semantic"] == held).sum()) >= in_hand // 2, name


@pytest.mark.parametrize("module", ["embodied.tasks.nav", "embodied.tasks.ballet", "embodied.tasks.room_ballet",
                                    "embodied.tasks.fastmap", "embodied.tasks.memorybench.tasks"])
def test_every_task_module_documents_its_randomisations_and_success(module):
    import importlib

    doc = importlib.import_module(module).__doc__ or ""
    assert "Randomisations (what the seed draws" in doc and "Success" in doc
