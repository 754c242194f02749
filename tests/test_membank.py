"""The SAM2Act+-style memory bank (embodied.memory.membank) on the memory interface."""
import pytest
import torch

from embodied.memory import build_memory
from embodied.memory.base import check_introspection

V, G, C = 3, 4, 8
D = V * C * G * G


def bank(K=3, **options):
    torch.manual_seed(0)
    return build_memory("membank", D, num_maskmem=K, views=V, grid=G, mem_dim=8, ff_dim=16, **options).eval()


def steps(T, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"feat": torch.randn(T, B, D, generator=g), "first": torch.zeros(T, B, dtype=torch.bool)}


def run(memory, seq, state=None):
    B = seq["feat"].shape[1]
    state = memory.initial_state(B) if state is None else state
    reads = []
    for t in range(seq["feat"].shape[0]):
        read, state = memory({k: v[t] for k, v in seq.items()}, state)
        reads.append(read)
    return torch.stack(reads), state


def test_keeps_only_last_k_entries():
    m = bank(K=3)
    seq = steps(6, 2)
    state = m.initial_state(2)
    entries = []
    for t in range(6):
        _, state = m({k: v[t] for k, v in seq.items()}, state)
        entries.append(state["bank"][:, 0].clone())
    assert state["slot_step"].tolist() == [[5, 4, 3]] * 2
    # slot k holds the entry written k steps before the last one; older entries are gone
    for k in range(3):
        torch.testing.assert_close(state["bank"][:, k], entries[5 - k])
    assert state["bank"].shape[1] == 3


def test_resets_between_episodes_and_not_when_lifelong():
    seq = steps(5, 2)
    seq["first"][3, 0] = True  # row 0 starts a new episode at t=3
    for lifelong in (False, True):
        m = bank(K=4, lifelong=lifelong)
        _, state = run(m, seq)
        if lifelong:
            assert state["slot_step"][0].tolist() == [4, 3, 2, 1]
        else:
            assert state["slot_step"][0].tolist() == [1, 0, -1, -1]
        assert state["slot_step"][1].tolist() == [4, 3, 2, 1]
    # a reset row reads exactly as a fresh episode does
    m = bank(K=4)
    reads, _ = run(m, seq)
    fresh, _ = run(m, {k: v[3:] for k, v in steps(5, 2).items()})
    torch.testing.assert_close(reads[3:, 0], fresh[:, 0])
    assert not torch.allclose(reads[3:, 1], fresh[:, 1])


def test_read_changes_when_an_earlier_keyframe_differs_within_the_window():
    m = bank(K=2)
    a = steps(4, 1)
    # fixed heatmaps: the written entries then depend on their own keyframe only (a predicted
    # heatmap would carry keyframe 0's influence into later entries)
    a["heatmap"] = torch.randn(4, 1, V * 16, generator=torch.Generator().manual_seed(3))
    b = {k: v.clone() for k, v in a.items()}
    b["feat"][0] += 1.0  # only keyframe 0 differs
    ra, _ = run(m, a)
    rb, _ = run(m, b)
    assert not torch.allclose(ra[1], rb[1])  # keyframe 0 is in the bank at steps 1 and 2
    assert not torch.allclose(ra[2], rb[2])
    torch.testing.assert_close(ra[3], rb[3])  # K=2: keyframe 0 was evicted before step 3


def test_empty_bank_reads_nothing():
    m = bank(K=3)
    feat = steps(1, 2)["feat"][0]
    state = m.initial_state(2)
    junk = state.clone()
    junk["bank"] = torch.randn_like(junk["bank"])  # garbage in empty slots must be ignored
    r1, _ = m({"feat": feat}, state)
    r2, _ = m({"feat": feat}, junk)
    torch.testing.assert_close(r1, r2)


def test_forward_sequence_equals_stepping_with_resets_and_heatmap_fn():
    m = bank(K=3)
    seq = steps(6, 3, seed=1)
    seq["first"][0] = True
    seq["first"][4, 1] = True
    proj = torch.nn.Linear(D, V * 16)

    reads_seq, state_seq = m.forward_sequence(seq, m.initial_state(3), lambda t, read: proj(read))
    state = m.initial_state(3)
    reads = []
    for t in range(6):
        read, state = m({k: v[t] for k, v in seq.items()}, state, heatmap_fn=lambda r: proj(r))
        reads.append(read)
    torch.testing.assert_close(reads_seq, torch.stack(reads))
    torch.testing.assert_close(state_seq["bank"], state["bank"])
    # the heatmap written into the bank matters
    other, _ = m.forward_sequence(seq, m.initial_state(3), lambda t, read: -proj(read))
    assert not torch.allclose(other[2], reads_seq[2])


def test_gradients_flow_through_stored_entries():
    m = bank(K=3).train()
    seq = steps(3, 1)
    seq["feat"].requires_grad_(True)
    reads, _ = m.forward_sequence(seq, m.initial_state(1))
    reads[2].sum().backward()
    assert seq["feat"].grad[0].abs().sum() > 0  # step 2's read depends on step 0 through the bank


def test_introspect_contract():
    m = bank(K=4)
    seq = steps(3, 2)
    state = m.initial_state(2)
    for t in range(3):
        _, state = m({k: v[t] for k, v in seq.items()}, state)
    report = check_introspection(m.introspect(state), batch=2)
    assert report["slot_step"].tolist() == [[2, 1, 0, -1]] * 2
    assert report["slot_keyframe"].tolist() == [[True, True, True, False]] * 2
    w = report["weights"]
    assert float(w[:, 0].abs().sum()) == 0.0  # slot 0 was written after the read
    assert float(w[:, 3].abs().sum()) == 0.0  # empty
    assert bool((w[:, 1:3] > 0).all())


def test_bad_inputs():
    with pytest.raises(ValueError, match="input_dim"):
        build_memory("membank", D + 1, views=V, grid=G)
    with pytest.raises(ValueError, match="num_maskmem"):
        build_memory("membank", D, grid=G, num_maskmem=0)
    m = bank()
    with pytest.raises(ValueError, match="heatmap"):
        m({"feat": torch.randn(2, D), "heatmap": torch.randn(2, 7)}, m.initial_state(2))


def test_default_layout_is_a_bank_of_step_vectors_for_any_agent():
    m = build_memory("membank", 5, num_maskmem=2, mem_dim=4, ff_dim=8)
    state = m.initial_state(1)
    for t in range(3):
        read, state = m({"feat": torch.randn(1, 5)}, state)
    assert read.shape == (1, 5) and state["slot_step"].tolist() == [[2, 1]]
