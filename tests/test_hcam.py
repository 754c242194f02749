"""HCAM: top-k chunk selection, equality with dense chunked attention, episode mask, sequence = steps."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from embodied.memory import build_memory, memory_config
from embodied.memory.base import check_introspection
from embodied.memory.hcam import ChunkAttention, HCAMConfig, dense_chunk_attention

D = 8
SMALL = dict(dim=8, heads=2, layers=2, ff_dim=16, chunk_size=4, num_chunks=3, top_k=2)


def make(seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_memory("hcam", D, **{**SMALL, **options})


def seq(length: int, batch: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    first = torch.zeros(length, batch, dtype=torch.bool)
    first[0] = True
    return {"feat": torch.randn(length, batch, D, generator=g), "first": first}


def identity_matcher(dim: int, heads: int, size: int) -> ChunkAttention:
    torch.manual_seed(0)
    attention = ChunkAttention(dim, heads, size)
    with torch.no_grad():
        attention.summary_query.weight.copy_(torch.eye(dim))
        attention.summary_key.weight.copy_(torch.eye(dim))
    return attention


def test_top_k_picks_chunks_whose_mean_best_matches_the_query():
    g = torch.Generator().manual_seed(3)
    batch, n, size, dim = 4, 6, 5, 8
    chunks = torch.randn(batch, n, size, dim, generator=g)
    valid = torch.ones(batch, n, size, dtype=torch.bool)
    valid[:, 2, 3:] = False  # a partly filled chunk: its mean is over the valid steps only
    attention = identity_matcher(dim, 2, size)
    for target in range(n):
        means = (chunks * valid[..., None]).sum(2) / valid.sum(2, keepdim=True)
        query = 3.0 * attention.norm_memory(means[:, target])
        _, chunk_weights, _ = attention(query, chunks, valid, top_k=2)
        expected = torch.einsum("bd,bnd->bn", query, attention.norm_memory(means)).topk(2, dim=-1).indices
        chosen = chunk_weights > 0
        assert chosen.sum(-1).tolist() == [2] * batch
        assert chosen.gather(1, expected).all()
    # An empty chunk is never chosen, even when k exceeds the non-empty chunks.
    valid[:, 4:] = False
    _, chunk_weights, slot_weights = attention(torch.randn(batch, dim, generator=g), chunks, valid, top_k=6)
    assert (chunk_weights[:, 4:] == 0).all() and (slot_weights[:, 4:] == 0).all()
    assert torch.allclose(chunk_weights.sum(-1), torch.ones(batch))


def test_k_equal_to_number_of_chunks_is_full_chunked_attention():
    g = torch.Generator().manual_seed(4)
    batch, n, size, dim = 3, 5, 4, 8
    torch.manual_seed(1)
    attention = ChunkAttention(dim, 2, size)
    chunks = torch.randn(batch, n, size, dim, generator=g)
    valid = torch.rand(batch, n, size, generator=g) > 0.3
    valid[:, 0, 0] = True
    query = torch.randn(batch, dim, generator=g)
    full, _, slot_weights = attention(query, chunks, valid, top_k=n)
    assert torch.allclose(full, dense_chunk_attention(attention, query, chunks, valid), atol=1e-5)
    assert torch.allclose(slot_weights.sum((1, 2)), torch.ones(batch), atol=1e-5)
    partial, _, _ = attention(query, chunks, valid, top_k=1)
    assert not torch.allclose(partial, full, atol=1e-4)  # selection changes the read


@pytest.mark.parametrize("lifelong", [False, True])
def test_forward_sequence_equals_stepping_with_resets(lifelong):
    memory = make(lifelong=lifelong)
    steps = seq(23, 3, seed=1)
    steps["first"][9, 1] = True
    steps["first"][17, 2] = True
    reads, final = memory.forward_sequence(steps, memory.initial_state(3))
    state = memory.initial_state(3)
    for t in range(23):
        read, state = memory({k: v[t] for k, v in steps.items()}, state)
        assert torch.allclose(read, reads[t], atol=1e-6)
    for key in final.keys():
        assert torch.equal(final.get(key), state.get(key)), key


@pytest.mark.parametrize("length", [1, 7, 12])
def test_parallel_sequence_equals_stepping_reads_grads_and_state(length):
    # No reset after step 0 and T <= capacity (12): the parallel path; 7 ends inside a chunk.
    memory = make(top_k=2)
    steps = seq(length, 3, seed=2)
    feat = steps["feat"].clone().requires_grad_(True)
    reads, final = memory.forward_sequence({**steps, "feat": feat}, memory.initial_state(3))
    parallel_last = {k: v.clone() for k, v in memory._last.items()}
    (reads ** 2).sum().backward()
    parallel_grad = feat.grad.clone()
    feat.grad = None
    state, stepped = memory.initial_state(3), []
    for t in range(length):
        read, state = memory({"feat": feat[t], "first": steps["first"][t]}, state)
        stepped.append(read)
    stepped = torch.stack(stepped)
    assert torch.allclose(reads, stepped, atol=1e-5)
    (stepped ** 2).sum().backward()
    assert torch.allclose(parallel_grad, feat.grad, atol=1e-5)
    for key in final.keys():
        assert torch.allclose(final.get(key).float(), state.get(key).float(), atol=1e-5), key
    for key, value in parallel_last.items():
        assert torch.allclose(value.float(), memory._last[key].float(), atol=1e-5), key


def test_reset_forgets_previous_episode_and_ring_evicts_oldest_chunk():
    memory = make()
    steps = seq(20, 2, seed=2)
    steps["first"][8, 0] = True
    reads, state = memory.forward_sequence(steps, memory.initial_state(2))
    fresh_reads, _ = memory.forward_sequence({k: v[8:, :1] for k, v in steps.items()}, memory.initial_state(1))
    assert torch.allclose(reads[8:, 0], fresh_reads[:, 0], atol=1e-6)
    # Row 1 ran 20 steps through 3 chunks of 4: chunk (19 // 4) % 3 = 1 holds steps 16..19, the
    # other two the previous 8 steps; steps 0..7 were evicted.
    stored = sorted(s for s in state.get("step")[1].flatten().tolist() if s >= 0)
    assert stored == list(range(8, 20))
    assert state.get("step")[1, 1].tolist() == [16, 17, 18, 19]


def test_episode_mask_blocks_earlier_episodes_when_lifelong():
    steps = seq(14, 2, seed=5)
    steps["first"][6] = True
    changed = {k: v.clone() for k, v in steps.items()}
    changed["feat"][:6] += 5.0  # a different first episode

    def second_episode(memory, data):
        reads, state = memory.forward_sequence(data, memory.initial_state(2))
        return reads[6:], state

    masked = make(lifelong=True, episode_mask=True, top_k=3)
    a, state = second_episode(masked, steps)
    b, _ = second_episode(masked, changed)
    assert torch.allclose(a, b, atol=1e-6)
    report = check_introspection(masked.introspect(state), 2)
    earlier = (report["slot_step"] >= 0) & (state.get("episode").reshape(2, -1) < state.get("episode_id")[:, None])
    assert earlier.any() and (report["weights"][earlier] == 0).all()

    unmasked = make(lifelong=True, episode_mask=False, top_k=3)
    a, _ = second_episode(unmasked, steps)
    b, _ = second_episode(unmasked, changed)
    assert not torch.allclose(a, b, atol=1e-4)


def test_stored_memories_get_no_gradient():
    memory = make()
    steps = seq(6, 2, seed=6)
    steps["feat"].requires_grad_(True)
    reads, _ = memory.forward_sequence(steps, memory.initial_state(2))
    reads[5].sum().backward()
    grad = steps["feat"].grad
    assert (grad[:5] == 0).all() and grad[5].abs().sum() > 0


def test_introspection_contract():
    memory = make()
    _, state = memory.forward_sequence(seq(7, 2, seed=7), memory.initial_state(2))
    report = check_introspection(memory.introspect(state), 2)
    assert report["weights"].shape == (2, 12) and report["chunk_selected"].shape == (2, 3)
    assert report["slot_step"].dtype == torch.long
    assert ((report["slot_step"] == -1) == (report["weights"] == 0)).all() or (report["weights"][report["slot_step"] == -1] == 0).all()
    assert report["chunk_selected"].sum(-1).le(2 * 2).all()


def test_yaml_and_bad_options():
    values = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "memory" / "hcam.yaml").read_text())
    assert values.pop("defaults") == ["hcam_schema", "_self_"]
    assert set(values) <= {f.name for f in dataclasses.fields(HCAMConfig)}
    memory_config("hcam", **values)
    with pytest.raises(ValueError, match="heads"):
        memory_config("hcam", dim=10, heads=3)
    with pytest.raises(ValueError, match="top_k"):
        memory_config("hcam", top_k=0)


def test_bench_memory_reports_every_memory_and_length():
    from embodied.memory.bench import bench_memory

    report = bench_memory(["hcam", "trxl", "gru"], lengths=[32, 64], batch=2, devices=["cpu"], repeats=1)
    rows = {(r["memory"], r["length"]): r for r in report["rows"]}
    assert set(rows) == {(m, n) for m in ("hcam", "trxl", "gru") for n in (32, 64)}
    assert rows[("hcam", 64)]["options"]["num_chunks"] == 4 and rows[("trxl", 64)]["options"]["memory_length"] == 64
    # State grows with the episode for the L-sized memories and not for the fixed-size gru.
    assert rows[("trxl", 64)]["state_mb"] > rows[("trxl", 32)]["state_mb"]
    assert rows[("gru", 64)]["state_mb"] == rows[("gru", 32)]["state_mb"]
    assert rows[("trxl", 32)]["ratio_vs_trxl"] == 1.0
    with pytest.raises(ValueError, match="unknown memory"):
        bench_memory(["nope"])


def test_hcam_under_bf16_autocast_keeps_float32_state():
    # On GPU, PPO runs the agent under bf16 autocast; writing bf16 reads into the float32 memory once
    # failed (index_put dtype mismatch). CPU autocast takes the same path.
    from embodied.memory import build_memory

    torch.manual_seed(0)
    memory = build_memory("hcam", 8, dim=16, heads=2, layers=1, ff_dim=32, chunk_size=4, num_chunks=4, top_k=2)
    state = memory.initial_state(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, stepped = memory.forward({"feat": torch.randn(3, 8), "first": torch.ones(3, dtype=torch.bool)}, state)
        _, sequenced = memory.forward_sequence({"feat": torch.randn(6, 3, 8), "first": torch.zeros(6, 3, dtype=torch.bool)},
                                               memory.initial_state(3))
    assert stepped.get("memory").dtype == torch.float32
    assert sequenced.get("memory").dtype == torch.float32
    assert int(stepped.get("valid").sum()) == 3 and int(sequenced.get("valid").sum()) == 18
