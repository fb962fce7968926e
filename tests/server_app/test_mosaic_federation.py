"""Mosaic end to end through the real ServerApp loop and ClientApp on digits: one shared
architecture (parameter-space experts, feature prototypes) and three architectures
(output-space experts, synthetic prototypes), one-shot mode, resume and a bad generator."""

from pathlib import Path

import numpy as np
import pytest
from federate import rows, run
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from models.interpolation import interpolate
from protocol import GENERATOR_KEY, PROTOTYPES_KEY, TRAIN_GENERATOR, record_to_arrays
from strategies.state import ServerState

SMALL = {
    "method": "mosaic",
    "num-partitions": 3,
    "num-server-rounds": 3,
    "mosaic-distill-round": 2,
    "alpha": 0.5,
    "local-steps": 20,
    "generator-steps": 60,
    "generator-width": 8,
    "generator-aux-steps": 40,
    "meta-steps": 80,
    "mosaic-distill-steps": 40,
    "mosaic-distill-lr": 0.001,
    "distill-steps": 20,
}


def _counting_hook(seen):
    def hook(msg, reply):
        seen.append(msg.metadata.message_type)
        return reply

    return hook


@pytest.fixture(scope="module")
def homogeneous(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mosaic")
    seen: list[str] = []
    # A fresh data directory: the nodes' generator cache starts empty.
    cfg = {
        **SMALL,
        "models": "cnn-small",
        "prototypes": "features",  # the reference's prototypes: a second message type
        "data-dir": str(tmp / "data"),
        "run-name": "homo",
    }
    return run(tmp, cfg, hook=_counting_hook(seen)), seen, tmp, cfg


@pytest.fixture(scope="module")
def heterogeneous(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mosaic-het")
    cfg = {**SMALL, "models": "heterogeneous", "data-dir": str(tmp / "data")}
    return run(tmp, cfg), cfg


def test_homogeneous_mosaic_distils_at_its_round_and_reports_every_stage(homogeneous):
    summary, seen, _, _ = homogeneous
    assert summary["status"] == "completed" and summary["rounds-completed"] == 3
    event = summary["mosaic"]["event"]
    assert event["round"] == 2
    assert event["experts"] == "parameter-space" and event["prototypes"] == "features"
    assert event["teacher"] == "meta-model-ema"
    assert event["num-prototypes"] > 0
    # The meta model over the experts is far above chance (0.1) on the held-out test set.
    assert event["meta-ema-test-accuracy"] > 0.5 and event["meta-test-accuracy"] > 0.5
    assert event["meta-loss-last"] < event["meta-loss-first"]
    r = rows(summary)
    assert r[1]["train"]["pre-distill-accuracy"] == event["pre-distill-accuracy"]
    # The round's own evaluation is the post-distillation model.
    assert r[1]["accuracy"] == pytest.approx(event["post-distill-accuracy"])
    assert (
        "pre-distill-accuracy" not in r[0]["train"] and "pre-distill-accuracy" not in r[2]["train"]
    )
    # Generators are trained once, at the event, and queried for feature prototypes once.
    assert seen.count(TRAIN_GENERATOR) == 3 and seen.count("query.prototypes") == 3


def test_generator_uploads_are_counted_and_kept_in_the_checkpoint(homogeneous):
    summary, _, _, _ = homogeneous
    params = summary["mosaic"]["generator"]["parameters"]
    r = rows(summary)
    # Round 2 carries three generator uploads (float32) on top of an ordinary round.
    assert r[1]["bytes-up"] > r[0]["bytes-up"] + 3 * 4 * params
    state = ServerState.load(summary["paths"]["checkpoint-last"])
    assert state.extra["distilled-round"] == 2
    for pid in range(3):
        assert state.data[f"generator/{pid}/label-counts"].sum() > 0
        assert any(k.startswith(f"generator/{pid}/net.") for k in state.data)
    samples = sorted(p.name for p in (Path(summary["run-dir"]) / "samples").iterdir())
    assert samples == [f"generator-p{i}-round2.png" for i in range(3)]


def test_resume_after_the_event_neither_retrains_nor_redistils(homogeneous):
    summary, _, tmp, cfg = homogeneous
    seen: list[str] = []
    resumed = run(tmp, {**cfg, "resume": True, "num-server-rounds": 4}, hook=_counting_hook(seen))
    assert resumed["status"] == "completed" and resumed["rounds-completed"] == 4
    assert TRAIN_GENERATOR not in seen and "query.prototypes" not in seen
    assert resumed["mosaic"]["event"] == summary["mosaic"]["event"]  # kept in the checkpoint
    assert [r["round"] for r in rows(resumed)] == [1, 2, 3, 4]


def test_heterogeneous_mosaic_uses_output_space_experts_and_synthetic_prototypes(heterogeneous):
    summary, _ = heterogeneous
    assert summary["status"] == "completed"
    event = summary["mosaic"]["event"]
    assert event["experts"] == "output-space" and event["prototypes"] == "synthetic"
    assert event["num-prototypes"] > 0
    assert event["meta-ema-test-accuracy"] > 0.3
    for arch in ("cnn-small", "mlp", "cnn-large"):
        assert f"post-distill-accuracy/{arch}" in event
    # After the event, each group is distilled toward all client models on generator samples.
    last = rows(summary)[2]["train"]
    assert {"distill-loss/cnn-small", "distill-loss/mlp", "distill-loss/cnn-large"} <= set(last)


def test_one_shot_mode_distils_in_its_single_round(tmp_path):
    summary = run(
        tmp_path,
        {
            **SMALL,
            "mosaic-one-shot": True,
            "num-server-rounds": 1,
            "mosaic-distill-round": 0,
            "local-steps": 60,
            "data-dir": str(tmp_path / "data"),
        },
    )
    assert summary["status"] == "completed" and summary["rounds-completed"] == 1
    assert summary["mosaic"]["event"]["round"] == 1
    assert summary["mosaic"]["distill-round"] == 1


def test_a_poisoned_generator_is_dropped_and_without_prototypes_the_experts_teach(tmp_path):
    poisoned = []

    def hook(msg, reply):
        if msg.metadata.message_type != TRAIN_GENERATOR:
            return reply
        if not poisoned:
            record = reply.content[GENERATOR_KEY]
            name = next(iter(record.keys()))
            bad = record[name].numpy().copy()
            bad.flat[0] = np.nan
            record[name] = Array(bad)
            poisoned.append(msg.metadata.dst_node_id)
        # Every client's generator is too weak for a confident prototype.
        protos = reply.content[PROTOTYPES_KEY]
        reply.content[PROTOTYPES_KEY] = ArrayRecord(
            {"x": Array(protos["x"].numpy()[:0]), "y": Array(protos["y"].numpy()[:0])}
        )
        return reply

    summary = run(
        tmp_path,
        {**SMALL, "num-server-rounds": 2, "data-dir": str(tmp_path / "data")},
        hook=hook,
    )
    assert summary["status"] == "completed"
    dropped = rows(summary)[1]["dropped"]
    assert list(dropped) == [str(poisoned[0])] and "NaN" in dropped[str(poisoned[0])]
    state = ServerState.load(summary["paths"]["checkpoint-last"])
    assert len({k.split("/")[1] for k in state.data if k.startswith("generator/")}) == 2
    event = summary["mosaic"]["event"]
    assert event["num-prototypes"] == 0 and event["teacher"] == "expert-mean"
    assert "meta-test-accuracy" not in event and "post-distill-accuracy" in event


@pytest.fixture(scope="module")
def fedavg(homogeneous):
    """FedAvg with the homogeneous fixture's settings: what a rejected event must reproduce."""
    _, _, tmp, cfg = homogeneous
    return run(tmp / "fedavg", {**cfg, "method": "fedavg", "run-name": "fedavg"})


def test_the_holdout_gate_keeps_fedavg_when_the_meta_model_is_no_better(
    homogeneous, fedavg, tmp_path
):
    _, _, _, cfg = homogeneous
    # One meta step: the EMA teacher is still its random initial weights, near chance on the
    # held-out (feature) prototypes, while the pre-event global model has learnt the digits.
    # The fixture's data directory: its nodes' generators are cached.
    gated = run(tmp_path, {**cfg, "mosaic-event-gate": "holdout", "meta-steps": 1})
    event = gated["mosaic"]["event"]
    assert event["gate"] == "rejected" and event["gate-accepted"] == 0
    assert event["gate-check-prototypes"] > 0
    assert event["gate-pre-accuracy"] > event["gate-teacher-accuracy"] + 0.3
    assert event["pre-distill-accuracy"] == event["post-distill-accuracy"]
    assert "distill-loss/cnn-small" not in event
    # The rejected event leaves plain FedAvg: same models every round, the full lr after it.
    assert [r["accuracy"] for r in rows(gated)] == [r["accuracy"] for r in rows(fedavg)]
    assert [r["loss"] for r in rows(gated)] == [r["loss"] for r in rows(fedavg)]


def test_an_accepted_gate_changes_nothing_but_the_report(heterogeneous, tmp_path):
    plain, cfg = heterogeneous
    # The same settings and the same generator cache as the ungated fixture.
    gated = run(tmp_path, {**cfg, "mosaic-event-gate": "holdout"})
    event = gated["mosaic"]["event"]
    assert event["gate"] == "accepted" and event["gate-accepted"] == 1
    assert event["gate-teacher-accuracy"] > event["gate-pre-accuracy"]
    # Distilled toward the same meta model (fitted on every prototype): identical rounds.
    assert [r["accuracy"] for r in rows(gated)] == [r["accuracy"] for r in rows(plain)]
    assert {k: v for k, v in event.items() if not k.startswith("gate")} == plain["mosaic"]["event"]


def test_the_client_gate_keeps_fedavg_when_the_distilled_model_scores_lower(
    homogeneous, fedavg, tmp_path
):
    _, _, _, cfg = homogeneous
    seen: list[str] = []
    # One meta step: a near-random teacher, so the distilled model is worse on the clients'
    # own digits than the pre-event model; the clients' counts reject it.
    gated = run(
        tmp_path,
        {**cfg, "mosaic-event-gate": "clients", "meta-steps": 1},
        hook=_counting_hook(seen),
    )
    event = gated["mosaic"]["event"]
    assert seen.count("query.evaluate") == 3
    assert event["gate"] == "rejected" and event["gate-clients"] == 3
    assert event["gate-examples"] > 0
    assert event["gate-pre-accuracy"] > event["gate-teacher-accuracy"]
    assert event["distilled-accuracy"] < event["pre-distill-accuracy"]  # the test set agrees
    assert event["pre-distill-accuracy"] == event["post-distill-accuracy"]
    assert [r["accuracy"] for r in rows(gated)] == [r["accuracy"] for r in rows(fedavg)]
    assert [r["loss"] for r in rows(gated)] == [r["loss"] for r in rows(fedavg)]


def test_a_client_gate_that_accepts_changes_nothing_but_the_report(heterogeneous, tmp_path):
    plain, cfg = heterogeneous

    # At this mild skew the event costs accuracy and honest clients reject it (0.34 against
    # 0.54 here); clients that swap their pre and post counts make the gate accept it.
    def swap(msg, reply):
        if msg.metadata.message_type != "query.evaluate":
            return reply
        m = dict(reply.content["metrics"])
        for key in [k for k in m if k.startswith("correct/pre/")]:
            post = key.replace("/pre/", "/post/")
            m[key], m[post] = m[post], m[key]
        return Message(RecordDict({"metrics": MetricRecord(m)}), reply_to=msg)

    gated = run(tmp_path, {**cfg, "mosaic-event-gate": "clients"}, hook=swap)
    event = gated["mosaic"]["event"]
    assert event["gate"] == "accepted" and event["gate-clients"] == 3
    assert event["gate-teacher-accuracy"] > event["gate-pre-accuracy"]
    # The distilled models are the ungated run's: identical rounds and event.
    assert [r["accuracy"] for r in rows(gated)] == [r["accuracy"] for r in rows(plain)]
    assert {k: v for k, v in event.items() if not k.startswith("gate")} == plain["mosaic"]["event"]


def test_the_client_gate_keeps_the_blend_its_clients_score_highest(homogeneous, tmp_path):
    _, _, _, cfg = homogeneous
    sent: dict[str, dict[str, np.ndarray]] = {}
    scored: list[set[str]] = []

    # Clients that find the halfway blend perfect: it is the candidate the gate keeps.
    def favour_the_blend(msg, reply):
        if msg.metadata.message_type != "query.evaluate":
            return reply
        for key, record in msg.content.array_records.items():
            sent[key] = record_to_arrays(record)
        m = dict(reply.content["metrics"])
        scored.append({k for k in m if k.startswith("correct/")})
        m["correct/blend-0.5/cnn-small"] = m["evaluated"]
        return Message(RecordDict({"metrics": MetricRecord(m)}), reply_to=msg)

    blends = {"mosaic-event-gate": "clients", "mosaic-gate-blends": "0.25,0.5"}
    last = {"num-server-rounds": 2, "mosaic-distill-round": 2}  # the event's models are final
    summary = run(tmp_path, {**cfg, **last, **blends}, hook=favour_the_blend)
    names = {f"correct/{c}/cnn-small" for c in ("pre", "blend-0.25", "blend-0.5", "post")}
    assert scored == [names] * 3  # every node scored every candidate
    event = summary["mosaic"]["event"]
    assert event["gate"] == "accepted" and event["gate-blend"] == 0.5
    assert event["gate-teacher-accuracy"] == 1.0 == event["gate-score/blend-0.5"]
    assert event["gate-test-accuracy/pre"] == event["pre-distill-accuracy"]
    assert event["gate-test-accuracy/post"] == event["distilled-accuracy"]
    assert event["gate-test-accuracy/blend-0.5"] == event["post-distill-accuracy"]
    # Only the two end points travel; every node builds the blends from them.
    assert set(sent) == {"candidate/pre/cnn-small", "candidate/post/cnn-small"}
    pre, post = sent["candidate/pre/cnn-small"], sent["candidate/post/cnn-small"]
    mid = interpolate(pre, post, 0.5)
    for key, value in pre.items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(mid[key], (value + post[key]) / 2, rtol=1e-6, atol=1e-7)
    # The global model is the blend the clients scored, bit for bit, and the event reports it.
    state = ServerState.load(summary["paths"]["checkpoint-last"])
    for key, value in mid.items():
        np.testing.assert_array_equal(state.models["cnn-small"][key], value)
    assert rows(summary)[-1]["accuracy"] == pytest.approx(event["post-distill-accuracy"])
    assert event["post-distill-accuracy"] not in (
        event["pre-distill-accuracy"],
        event["distilled-accuracy"],
    )
