"""Memory interface and baseline memories: reset semantics, sequence = steps, fixed-size state, recall."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from embodied.memory import MEMORIES, Memory, build_memory, memory_config

D = 6
SMALL = {
    "none": dict(hidden=8),
    "gru": dict(hidden=8, layers=2),
    "lstm": dict(hidden=8, layers=2),
    "trxl": dict(dim=8, heads=2, layers=2, memory_length=4, ff_dim=16),
}
BASELINES = sorted(SMALL)
STATEFUL = [name for name in BASELINES if name != "none"]
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "memory"


def make(name: str, lifelong: bool = False, seed: int = 0) -> Memory:
    torch.manual_seed(seed)
    return build_memory(name, D, lifelong=lifelong, **SMALL[name])


def steps(length: int, batch: int, seed: int, first: torch.Tensor | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    if first is None:
        first = torch.zeros(length, batch, dtype=torch.bool)
    return {"feat": torch.randn(length, batch, D, generator=g), "first": first}


def warm_state(memory: Memory, batch: int, length: int = 7, seed: int = 1):
    """A state after `length` steps of one episode per row."""
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0] = True
    _, state = memory.forward_sequence(steps(length, batch, seed, first), memory.initial_state(batch, "cpu"))
    return state


def assert_states_close(a, b, atol=1e-5):
    assert set(a.keys(include_nested=True, leaves_only=True)) == set(b.keys(include_nested=True, leaves_only=True))
    for key in a.keys(include_nested=True, leaves_only=True):
        torch.testing.assert_close(a.get(key).float(), b.get(key).float(), atol=atol, rtol=0)


def test_registry_lists_baselines_and_rejects_unknown():
    assert set(BASELINES) <= set(MEMORIES)
    with pytest.raises(ValueError, match="unknown memory 'nope'; allowed: .*gru"):
        build_memory("nope", D)
    with pytest.raises(ValueError, match="unknown option 'hiden' for memory 'gru'"):
        build_memory("gru", D, hiden=3)
    with pytest.raises(ValueError, match="heads=3"):
        build_memory("trxl", D, dim=8, heads=3)
    with pytest.raises(ValueError, match="hidden=0"):
        build_memory("lstm", D, hidden=0)
    assert memory_config("gru", name="gru", hidden=5).hidden == 5


@pytest.mark.parametrize("name", BASELINES)
def test_yaml_keys_are_dataclass_fields(name):
    # The dataclass is the schema and holds the defaults (tests/test_task_schemas.py: no YAML copies them).
    values = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert values.pop("defaults") == [f"{name}_schema", "_self_"]
    assert set(values) <= {f.name for f in dataclasses.fields(MEMORIES[name].config_class)}
    assert values["name"] == name
    memory = build_memory(name, D, **values)
    assert memory.output_dim > 0


@pytest.mark.parametrize("name", BASELINES)
def test_reset_row_equals_fresh_state_and_other_rows_unchanged(name):
    memory = make(name)
    state = warm_state(memory, batch=3)
    feat = torch.randn(3, D)
    reset = torch.tensor([True, False, True])
    read_reset, state_reset = memory({"feat": feat, "first": reset}, state)
    read_fresh, state_fresh = memory({"feat": feat, "first": torch.ones(3, dtype=torch.bool)}, memory.initial_state(3, "cpu"))
    read_keep, state_keep = memory({"feat": feat, "first": torch.zeros(3, dtype=torch.bool)}, state)
    torch.testing.assert_close(read_reset[reset], read_fresh[reset])
    torch.testing.assert_close(read_reset[~reset], read_keep[~reset])
    assert_states_close(state_reset[reset], state_fresh[reset])
    assert_states_close(state_reset[~reset], state_keep[~reset])
    if name in STATEFUL:  # the warm state really differed, so the reset did something
        assert not torch.allclose(read_keep[0], read_fresh[0], atol=1e-4)


@pytest.mark.parametrize("name", STATEFUL)
def test_lifelong_keeps_state_across_first(name):
    memory = make(name, lifelong=True)
    state = warm_state(memory, batch=2)
    feat = torch.randn(2, D)
    read_first, _ = memory({"feat": feat, "first": torch.ones(2, dtype=torch.bool)}, state)
    read_cont, _ = memory({"feat": feat, "first": torch.zeros(2, dtype=torch.bool)}, state)
    read_fresh, _ = memory({"feat": feat, "first": torch.ones(2, dtype=torch.bool)}, memory.initial_state(2, "cpu"))
    torch.testing.assert_close(read_first, read_cont)
    assert not torch.allclose(read_first, read_fresh, atol=1e-4)


@pytest.mark.parametrize("lifelong", [False, True])
@pytest.mark.parametrize("name", BASELINES)
def test_forward_sequence_equals_stepping(name, lifelong):
    memory = make(name, lifelong=lifelong)
    length, batch = 13, 4
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0, :] = True
    first[3, 1] = first[5, 2] = first[6, 1] = first[11, 0] = True  # resets in the middle
    seq = steps(length, batch, seed=2, first=first)
    start = warm_state(memory, batch)
    reads, final = memory.forward_sequence(seq, start)
    state = start
    for t in range(length):
        read, state = memory({"feat": seq["feat"][t], "first": first[t]}, state)
        torch.testing.assert_close(reads[t], read, atol=1e-5, rtol=0)
    assert_states_close(final, state)


@pytest.mark.parametrize("name", BASELINES)
def test_previous_episode_cannot_leak_into_the_next(name):
    memory = make(name)
    length, batch = 10, 2
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0, 0] = first[4, 0] = True  # row 1 continues its warm episode throughout
    seq = steps(length, batch, seed=3, first=first)
    reads, _ = memory.forward_sequence(seq, warm_state(memory, batch))
    changed = {"feat": seq["feat"].clone(), "first": first}
    changed["feat"][:4, 0] += 5.0  # only row 0's previous episode
    reads_changed, _ = memory.forward_sequence(changed, warm_state(memory, batch, seed=9))
    torch.testing.assert_close(reads[4:, 0], reads_changed[4:, 0], atol=1e-5, rtol=0)
    if name in STATEFUL:  # row 1 has no reset, so its different start state shows
        assert not torch.allclose(reads[:, 1], reads_changed[:, 1], atol=1e-4)


@pytest.mark.parametrize("name", BASELINES)
def test_gradients_reach_input_features(name):
    memory = make(name)
    seq = steps(6, 2, seed=4)
    seq["first"][0] = True
    feat = seq["feat"].requires_grad_(True)
    reads, _ = memory.forward_sequence(seq, memory.initial_state(2, "cpu"))
    reads[-1].sum().backward()
    assert feat.grad[-1].abs().sum() > 0
    if name in STATEFUL:  # the last read depends on the first step
        assert feat.grad[0].abs().sum() > 0
    else:
        assert feat.grad[:-1].abs().sum() == 0
    assert all(p.grad is not None for p in memory.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", BASELINES)
def test_state_is_fixed_size_and_batches(name):
    memory = make(name)
    state = memory.initial_state(3, "cpu")
    shapes = {k: tuple(v.shape) for k, v in state.items(include_nested=True, leaves_only=True)}
    for t in range(25):  # well past trxl's memory_length
        _, state = memory({"feat": torch.randn(3, D), "first": torch.full((3,), t == 0)}, state)
    assert {k: tuple(v.shape) for k, v in state.items(include_nested=True, leaves_only=True)} == shapes
    # Rows index and concatenate like any batch (rollout storage does this).
    joined = torch.cat([state[:1], state[1:]], dim=0)
    assert_states_close(joined, state)
    stacked = torch.stack([state, state], dim=0)
    assert stacked.batch_size == torch.Size([2, 3])


def test_step_input_errors_name_the_problem():
    memory = make("gru")
    state = memory.initial_state(2, "cpu")
    with pytest.raises(ValueError, match="no 'feat'"):
        memory({"first": torch.zeros(2, dtype=torch.bool)}, state)
    with pytest.raises(ValueError, match="input_dim=6"):
        memory({"feat": torch.randn(2, D + 1)}, state)
    with pytest.raises(ValueError, match="reset mask shape"):
        memory.reset_rows(state, torch.zeros(3, dtype=torch.bool))


def test_trxl_cache_masks_slots_from_before_the_episode_start():
    memory = make("trxl")
    m = memory.memory_length
    state = warm_state(memory, batch=2, length=m + 3)
    assert bool(state["valid"].all())
    reset = torch.tensor([True, False])
    _, state = memory({"feat": torch.randn(2, D), "first": reset}, state)
    attention = memory.introspect(state)["attention"]  # [B, layers, heads, M + 1]
    assert attention.shape == (2, memory.n_layers, 2, m + 1)
    # Row 0 just reset: all weight on the current step, none on the M old slots.
    assert float(attention[0, :, :, :m].abs().max()) == 0.0
    torch.testing.assert_close(attention[0, :, :, m], torch.ones(memory.n_layers, 2))
    assert float(attention[1, :, :, :m].sum()) > 0
    # Only the new step is a valid slot for row 0; row 1 keeps a full cache.
    assert state["valid"][0].tolist() == [False] * (m - 1) + [True]
    assert bool(state["valid"][1].all())
    assert state["count"].tolist() == [1, m + 4]
    # Lifelong: the same reset keeps attending to the old slots.
    lifelong = make("trxl", lifelong=True)
    state = warm_state(lifelong, batch=2, length=m + 3)
    _, state = lifelong({"feat": torch.randn(2, D), "first": reset}, state)
    assert float(lifelong.introspect(state)["attention"][0, :, :, :m].sum()) > 0


# --- synthetic recall: the cue at t=0 must be reported after a delay of noise -----------------
K, DELAY, NOISE = 4, 20, 4
RECALL = {  # name: (options, learning rate, max training steps; training stops early once solved)
    # The step at which the recurrent nets solve it depends on the CPU's float kernels (LSTM: ~1,550 on one
    # Intel Xeon, earlier elsewhere), so the cap leaves room.
    "gru": (dict(hidden=32), 3e-3, 3000),
    "lstm": (dict(hidden=32), 3e-3, 3000),
    "trxl": (dict(dim=32, heads=2, layers=1, memory_length=24, ff_dim=64), 1e-3, 600),
    "none": (dict(hidden=32), 3e-3, 300),
}


def recall_batch(batch: int, g: torch.Generator):
    length = DELAY + 2
    feat = torch.zeros(length, batch, K + 1 + NOISE)
    cue = torch.randint(0, K, (batch,), generator=g)
    feat[0, torch.arange(batch), cue] = 1.0  # cue one-hot at t=0 only
    feat[:, :, K + 1 :] = torch.randn(length, batch, NOISE, generator=g)  # noise every step
    feat[-1, :, K] = 1.0  # query flag at the last step
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0] = True
    return {"feat": feat, "first": first}, cue


def recall_accuracy(memory: Memory, head: torch.nn.Module, seed: int, batch: int) -> float:
    with torch.no_grad():
        x, cue = recall_batch(batch, torch.Generator().manual_seed(seed))
        reads, _ = memory.forward_sequence(x, memory.initial_state(batch, "cpu"))
        return float((head(reads[-1]).argmax(-1) == cue).float().mean())


@pytest.fixture
def one_thread():
    # Tiny models train faster on one thread, and other processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_recall(name: str) -> float:
    options, lr, max_steps = RECALL[name]
    torch.manual_seed(0)
    memory = build_memory(name, K + 1 + NOISE, **options)
    head = torch.nn.Linear(memory.output_dim, K)
    optimizer = torch.optim.Adam([*memory.parameters(), *head.parameters()], lr=lr)
    g = torch.Generator().manual_seed(1)
    for step in range(max_steps):
        x, cue = recall_batch(64, g)
        reads, _ = memory.forward_sequence(x, memory.initial_state(64, "cpu"))
        loss = torch.nn.functional.cross_entropy(head(reads[-1]), cue)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 49 and recall_accuracy(memory, head, seed=7, batch=256) >= 0.99:
            break
    accuracy = recall_accuracy(memory, head, seed=123, batch=1024)  # held-out episodes
    print(f"recall {name}: accuracy {accuracy:.3f} after {step + 1} steps")
    return accuracy


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gru", "lstm", "trxl"])
def test_memories_solve_delayed_recall(name, one_thread):
    assert train_recall(name) >= 0.95


@pytest.mark.slow
def test_no_memory_stays_at_chance_on_delayed_recall(one_thread):
    assert train_recall("none") <= 0.40


AUTOCAST_OPTIONS = {**SMALL, "hcam": dict(dim=8, heads=2, layers=2, ff_dim=16, chunk_size=2, num_chunks=4, top_k=2),
                    "sat": dict(dim=8, heads=2, capacity=6, top_k=2)}


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_cell_runs_in_float32_under_cpu_autocast(name):
    # oneDNN's bf16 RNN primitive exists only on CPUs with native bf16; on AVX2-only x86-64 it fails.
    # Whatever the CPU, the cell must be entered in float32 with autocast off, and read the same as
    # without autocast.
    torch.manual_seed(0)
    memory = build_memory(name, D, **SMALL.get(name, {}))
    seen = []
    memory.rnn.register_forward_pre_hook(
        lambda mod, args: seen.append((args[0].dtype, torch.is_autocast_enabled("cpu"))))
    feat = torch.randn(3, D)
    step = {"feat": feat, "first": torch.ones(3, dtype=torch.bool)}
    plain, _ = memory(step, memory.initial_state(3, "cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        read, state = memory({**step, "feat": feat.bfloat16()}, memory.initial_state(3, "cpu"))
    assert seen[-1] == (torch.float32, False)
    assert read.dtype == torch.float32 and all(state.get(k).dtype == torch.float32 for k in state.keys())
    torch.testing.assert_close(read, plain, atol=2e-2, rtol=0)  # the input was rounded to bf16


def test_text_gru_runs_under_cpu_autocast():
    from embodied.agents.encoders import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(vocab=10, dim=8, pooling="gru")
    tokens = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(tokens)
    torch.testing.assert_close(out.float(), enc(tokens), atol=3e-2, rtol=0)


@pytest.mark.parametrize("name", sorted(MEMORIES))
def test_memories_run_under_bf16_autocast_and_keep_state_dtypes(name):
    # PPO runs the agent under bf16 autocast on GPU. Float32 softmax outputs scattered into bf16
    # buffers once failed there (HCAM) and only there; CPU autocast takes the same code paths.
    torch.manual_seed(0)
    memory = build_memory(name, D, **AUTOCAST_OPTIONS.get(name, {}))
    batch = 3
    initial = memory.initial_state(batch, "cpu")
    dtypes = {k: initial.get(k).dtype for k in initial.keys(include_nested=True, leaves_only=True)}

    def step(t):
        return {"feat": torch.randn(batch, D), "first": torch.full((batch,), t == 0), "place": torch.tensor([0, 1, t % 3]),
                "pose": torch.zeros(batch, 4)}

    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = initial
        for t in range(7):
            read, state = memory(step(t), state)
        seq = [step(t) for t in range(5)]
        seq = {k: torch.stack([s[k] for s in seq]) for k in seq[0]}
        reads, fresh = memory.forward_sequence(seq, memory.initial_state(batch, "cpu"))
        seq["first"][0] = False
        reads_warm, warm = memory.forward_sequence(seq, state)
        loss = reads.float().square().mean() + reads_warm.float().square().mean()
    loss.backward()
    assert torch.isfinite(read.float()).all() and torch.isfinite(loss)
    for final in (state, fresh, warm):
        assert {k: final.get(k).dtype for k in final.keys(include_nested=True, leaves_only=True)} == dtypes
