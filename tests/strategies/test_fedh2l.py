import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client_app.h2l import peer_kl
from protocol import arrays_to_record
from strategies.base import NodeInfo
from strategies.fedh2l import FedH2L, check_posteriors, seed_quotas
from strategies.topology import leave_one_out_means, neighbours, seed_agreement
from strategies.validation import InvalidReply


def test_loo_mean_and_full_relay_give_the_same_gradient():
    torch.manual_seed(0)
    peers = [torch.softmax(torch.randn(16, 10) * 2, dim=1) for _ in range(4)]
    grads = []
    for targets in (peers, [torch.stack(peers).mean(0)]):
        logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(1), requires_grad=True)
        peer_kl(logits, targets, temperature=2.0).backward()
        grads.append(logits.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_server_loo_mean_is_the_mean_of_the_peers():
    post = {i: np.full((2, 3), i, np.float32) for i in range(4)}
    graph = neighbours([0, 1, 2, 3], "complete")
    out = leave_one_out_means(post, graph)
    assert np.allclose(out[0], (1 + 2 + 3) / 3) and np.allclose(out[3], (0 + 1 + 2) / 3)


def test_agreement_weights_silence_uniform_and_adversarial_peers():
    labels = np.array([0, 1, 2, 0, 1, 2, -1])  # the last row is unlabelled: ignored
    honest = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0]]
    flipped = np.eye(3, dtype=np.float32)[[1, 2, 0, 1, 2, 0, 0]]
    uniform = np.full((7, 3), 1 / 3, np.float32)
    assert seed_agreement(honest, labels, 3) == 1.0
    assert seed_agreement(flipped, labels, 3) == 0.0
    assert seed_agreement(uniform, labels, 3) == pytest.approx(0.0)  # argmax 0: chance level
    assert seed_agreement(uniform, np.full(7, -1), 3) == 1.0  # unlabelled seed set: no judge

    post = {0: honest, 1: flipped, 2: uniform, 3: honest * 0.5 + 0.5 / 3}
    weights = {q: seed_agreement(p, labels, 3) for q, p in post.items()}
    graph = neighbours([0, 1, 2, 3], "complete")
    out = leave_one_out_means(post, graph, weights)
    assert np.allclose(out[0], post[3]) and np.allclose(out[3], honest)  # only honest peers
    assert np.allclose(leave_one_out_means(post, graph)[0], (flipped + uniform + post[3]) / 3)
    # A receiver whose every peer weighs 0 gets no matrix at all.
    assert 2 not in leave_one_out_means(post, {2: [1]}, weights)


def test_topologies():
    ids = [4, 0, 7, 2, 9, 5]
    complete = neighbours(ids, "complete")
    assert complete[0] == [2, 4, 5, 7, 9]
    ring = neighbours(ids, "ring")
    assert ring[0] == [2, 9] and ring[4] == [2, 5] and all(len(v) == 2 for v in ring.values())
    for r in (1, 2):
        g = neighbours(ids, "k-regular", degree=2, seed=0, server_round=r)
        assert all(len(v) == 2 for v in g.values())
        assert all(p in g[q] for p, qs in g.items() for q in qs)  # symmetric
    draws = {
        tuple(map(tuple, neighbours(ids, "k-regular", seed=0, server_round=r).values()))
        for r in range(10)
    }
    assert len(draws) > 1  # gossip: re-drawn each round
    assert neighbours([1, 2], "ring") == {1: [2], 2: [1]}
    with pytest.raises(ValueError, match="even"):
        neighbours(ids, "k-regular", degree=3)


def _rec(p):
    return arrays_to_record({"p": p})


def test_posterior_validation():
    good = np.full((4, 5), 0.2, np.float32)
    assert check_posteriors(_rec(good), 4, 5).shape == (4, 5)
    assert check_posteriors(_rec(good.astype(np.float16)), 4, 5).dtype == np.float32
    with pytest.raises(InvalidReply, match="shape"):
        check_posteriors(_rec(good[:3]), 4, 5)
    with pytest.raises(InvalidReply, match="sum to 1"):
        check_posteriors(_rec(good * 2), 4, 5)
    bad = good.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidReply, match="NaN"):
        check_posteriors(_rec(bad), 4, 5)
    with pytest.raises(InvalidReply, match="float64"):
        check_posteriors(_rec(good.astype(np.float64)), 4, 5)
    with pytest.raises(InvalidReply, match="no posterior encoding"):
        check_posteriors(ArrayRecord(), 4, 5)
    with pytest.raises(InvalidReply, match="not one matrix 'p'"):
        check_posteriors(arrays_to_record({"p": good, "extra": good}), 4, 5)


def test_fo_cos_finite_differences_match_the_exact_cosine_gradient():
    from client_app.h2l import cosine_bonus_grads

    torch.manual_seed(0)
    x1, y1 = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    x2, y2 = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    params = {"w": torch.randn(3, 4, dtype=torch.float64), "b": torch.zeros(3, dtype=torch.float64)}

    def loss(x, y):
        return lambda p: torch.nn.functional.cross_entropy(x @ p["w"].T + p["b"], y)

    g_l, g_s, bonus = cosine_bonus_grads(loss(x1, y1), loss(x2, y2), params, step=1e-5)
    assert len(g_s) == len(g_l) == 2
    # Exact: d/dtheta of (g_l . g_s) / (|g_l| |g_s|) with the norms held fixed.
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    gl = torch.autograd.grad(loss(x1, y1)(leaves), list(leaves.values()), create_graph=True)
    gs = torch.autograd.grad(loss(x2, y2)(leaves), list(leaves.values()), create_graph=True)
    norms = (
        torch.sqrt(sum((g * g).sum() for g in gl)) * torch.sqrt(sum((g * g).sum() for g in gs))
    ).detach()
    exact = torch.autograd.grad(
        sum((a * b).sum() for a, b in zip(gl, gs, strict=True)) / norms, list(leaves.values())
    )
    for approx, ref in zip(bonus, exact, strict=True):
        assert torch.allclose(approx, ref, rtol=1e-3, atol=1e-6)
    assert torch.allclose(g_l[0], gl[0].detach())


def test_seed_quotas_share_each_class_cap_evenly_among_its_holders():
    counts = np.array([[30, 0, 4, 9], [30, 0, 0, 9], [30, 2, 0, 9]])  # 3 clients x 4 classes
    q = seed_quotas(counts, per_client=10, cap=20, rng=np.random.default_rng(0))
    assert q.shape == counts.shape and (q <= np.minimum(counts, 10)).all()
    # class 0: 20 over three holders (7, 7, 6 in some order); 1 and 2: all their few examples;
    # class 3: 9 from each holder cannot reach 20 by more than 27 -> 20 (7, 7, 6).
    assert q.sum(0).tolist() == [20, 2, 4, 20]
    assert sorted(q[:, 0]) == [6, 7, 7] and sorted(q[:, 3]) == [6, 7, 7]
    assert q[:, 1].tolist() == [0, 0, 2] and q[:, 2].tolist() == [4, 0, 0]
    # A cap above what the holders may give changes nothing: every holder gives per_client.
    full = seed_quotas(counts, per_client=10, cap=1000, rng=np.random.default_rng(0))
    assert (full == np.minimum(counts, 10)).all()
    # Where the cap does not divide evenly, the seed decides who gives the extra example.
    extras = {tuple(seed_quotas(counts, 10, 20, np.random.default_rng(s))[:, 0]) for s in range(20)}
    assert len(extras) == 3


def test_a_donation_above_the_nodes_quota_is_refused():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # for Message()
    s = FedH2L(
        model_fn=lambda arch: None,
        node_config={"input-shape": [1, 2, 2]},
        num_classes=3,
        seed_per_class=4,
        seed_cap_per_class=2,
    )
    s.nodes[7] = NodeInfo(7, 0, "mlp", 12, (6, 6, 0))
    s.quotas[7] = np.array([2, 1, 0])

    def donation(labels):
        x = np.zeros((len(labels), 1, 2, 2), np.uint8)
        y = np.array(labels, np.int64)
        msg = Message(RecordDict(), dst_node_id=7, message_type="query", group_id="1")
        return Message(
            RecordDict({"seed-set": ArrayRecord({"x": Array(x), "y": Array(y)})}), reply_to=msg
        )

    assert len(s._parse_donation(donation([0, 0, 1]))[1]) == 3
    with pytest.raises(InvalidReply, match="2 seed examples of class 1, more than the node was"):
        s._parse_donation(donation([0, 1, 1]))
