"""FMD end to end through the real ServerApp loop and ClientApp on digits, 1 class per client."""

import numpy as np
import pytest
from federate import FAST, rows, run
from flwr.app import Array, ArrayRecord, Message

from federated_data import Federation
from models.lda_probe import SCALES, class_statistics, lda_head, scaled_head
from models.teachers import PixelTeacher
from protocol import QUERY_FEATURE_STATS
from server_app.config import DEFAULTS, load_config
from server_app.runner import data_spec
from strategies.state import ServerState

ONE_CLASS = {
    "partitioner": "pathological",
    "classes-per-client": 1,
    "num-partitions": 10,
    "num-server-rounds": 10,
    "local-steps": 20,
    "lr": 0.01,
}
TINY_TEACHER = {"teacher": "pixels", "probe": "federated", "probe-rounds": 20}


@pytest.fixture(scope="module")
def one_class_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fmd")
    fedavg = run(tmp, {"method": "fedavg", **ONE_CLASS})
    fmd = run(tmp, {"method": "fmd", **ONE_CLASS, **TINY_TEACHER})
    return fedavg, fmd


def test_distillation_from_a_tiny_teacher_beats_fedavg_at_one_class_per_client(one_class_runs):
    fedavg, fmd = one_class_runs
    assert fmd["status"] == "completed" == fedavg["status"]
    # The federated probe learnt a real teacher from 1-class clients ...
    assert fmd["teacher"]["test"]["accuracy"] > 0.85

    # ... and its students beat plain FedAvg over the same students by a wide margin. With one
    # class per client both oscillate from round to round, so compare the second half's mean.
    def late_mean(summary):
        return np.mean([r["accuracy"] for r in rows(summary)[5:]])

    assert late_mean(fmd) > late_mean(fedavg) + 0.1
    per_model = fmd["final-per-model"]["cnn-small"]
    assert 0.0 <= per_model["worst-class-accuracy"] <= per_model["accuracy"]
    assert len([k for k in per_model if k.startswith("class-accuracy/")]) == 10


def test_fmd_reports_the_teacher_and_keeps_the_head_in_the_checkpoint(one_class_runs):
    _, fmd = one_class_runs
    teacher = fmd["teacher"]
    assert teacher["name"] == "pixels" and teacher["probe"] == "federated"
    assert teacher["parameters"] == 784 * 10 + 10
    r = rows(fmd)
    assert r[0]["train"]["teacher-accuracy"] == teacher["test"]["accuracy"]
    assert "probe-loss" in r[0]["train"] and "probe-loss" not in r[1]["train"]
    assert r[0]["train"]["probe-teacher-featurised"] == 0  # pixels: nothing to cache
    # Round 1 also carries the 20 probe exchanges of the 31 KB head: more bytes than round 2.
    assert r[0]["bytes-down"] > r[1]["bytes-down"] + 20 * 10 * 784 * 10 * 4
    state = ServerState.load(fmd["paths"]["checkpoint-last"])
    assert state.data["teacher-head/weight"].shape == (10, 784)
    assert len(state.extra["probe-history"]) == 20
    # Each probe round is scored on the test set; the head gets better as FedAvg goes on.
    accuracy = [h["accuracy"] for h in state.extra["probe-history"]]
    assert accuracy[-1] > accuracy[0] + 0.05


def test_resume_reuses_the_probed_head(tmp_path):
    settings = {"method": "fmd", **ONE_CLASS, **TINY_TEACHER, "num-server-rounds": 2}
    first = run(tmp_path, {**settings, "run-name": "r"})
    resumed = run(tmp_path, {**settings, "run-name": "r", "resume": True, "num-server-rounds": 3})
    assert resumed["rounds-completed"] == 3
    head = ServerState.load(first["paths"]["checkpoint-last"])  # overwritten by the resume
    assert len(head.extra["probe-history"]) == 20  # the probe did not run a second time
    assert [x["round"] for x in rows(resumed)] == [1, 2, 3]
    assert "teacher-accuracy" in rows(resumed)[2]["train"]


@pytest.mark.parametrize(
    ("ablation", "models"), [("teacher", "cnn-small"), ("ensemble", "heterogeneous")]
)
def test_server_side_distillation_ablation_runs(tmp_path, ablation, models):
    s = run(
        tmp_path,
        {
            "method": "fmd",
            **ONE_CLASS,
            **TINY_TEACHER,
            "num-server-rounds": 2,
            "public-fraction": 0.2,
            "probe": "server",
            "fmd-server-distill": ablation,
            "models": models,
        },
    )
    assert s["status"] == "completed"
    assert "distill-loss/cnn-small" in rows(s)[1]["train"]
    if models == "heterogeneous":  # students of every architecture, each distilled
        assert {"distill-loss/mlp", "distill-loss/cnn-large"} <= set(rows(s)[1]["train"])
    assert np.isfinite(s["final-accuracy"])


@pytest.mark.parametrize("weighting", ["class-accuracy", "teacher-correct"])
def test_students_report_their_trust_in_the_teacher(tmp_path, weighting):
    """Both weightings average, over a node's examples, to the teacher's accuracy there (the
    class-accuracy weights are per-class accuracies weighted by the class counts)."""
    settings = {"method": "fmd", **ONE_CLASS, **TINY_TEACHER, "num-server-rounds": 2}
    s = run(tmp_path, {**settings, "kd-weighting": weighting, "num-partitions": 4})
    assert s["status"] == "completed"
    train = rows(s)[1]["train"]
    assert 0.0 <= train["kd-mean-trust"] <= 1.0
    assert train["kd-mean-trust"] == pytest.approx(train["teacher-local-accuracy"], abs=1e-6)


def _lda_settings():
    return {"method": "fmd", **ONE_CLASS, **TINY_TEACHER, "probe": "lda", "num-server-rounds": 1}


def test_the_lda_probe_is_the_pooled_datas_head_at_one_class_per_client(tmp_path, one_class_runs):
    """Ten 1-class nodes send their class statistics; the head is the LDA of the pooled
    partitions (as if their features were in one place), scaled by the calibrated factor, and
    beats the federated probe, which drifts under the skew."""
    s = run(tmp_path, _lda_settings())
    assert s["status"] == "completed" and s["teacher"]["probe"] == "lda"
    history = ServerState.load(s["paths"]["checkpoint-last"]).extra["probe-history"]
    assert len(history) == 1 and history[0]["probe-scale"] in SCALES
    state = ServerState.load(s["paths"]["checkpoint-last"])

    cfg = load_config({**DEFAULTS, **FAST, **_lda_settings(), "output-dir": str(tmp_path)})
    fed = Federation(data_spec(cfg))
    teacher = PixelTeacher(fed.input_shape, fed.num_classes)
    idx = np.concatenate(fed.partitions())
    pooled = class_statistics(
        teacher.features(fed.source.x_train[idx]), fed.source.y_train[idx], 10
    )
    expected = scaled_head(
        lda_head(
            pooled["class-sums"], pooled["class-counts"], pooled["second-moment"], shrinkage=0.05
        ),
        history[0]["probe-scale"],
    )
    # The statistics travel in float32 (relative rounding 6e-8), which the shrunk covariance's
    # condition number (thousands for 784 pixels, many constant) lifts to ~1e-3 of the weights.
    weight = state.data["teacher-head/weight"]
    np.testing.assert_allclose(weight, expected["weight"], atol=2e-3 * np.abs(weight).max())
    test_x = teacher.features(fed.test.x)
    ours = (test_x @ weight.T + state.data["teacher-head/bias"]).argmax(1)
    pooled_prediction = (test_x @ expected["weight"].T + expected["bias"]).argmax(1)
    assert (ours == pooled_prediction).mean() >= 0.99

    _, federated = one_class_runs
    assert s["teacher"]["test"]["accuracy"] > federated["teacher"]["test"]["accuracy"]
    # Round 1's uplink carries each node's statistics once: 784 x 785 / 2 float32 and more.
    assert rows(s)[0]["bytes-up"] > 10 * 784 * 785 / 2 * 4


def test_forged_class_statistics_are_dropped_with_the_reason(tmp_path):
    def inflate(msg: Message, reply: Message):
        if msg.metadata.message_type != QUERY_FEATURE_STATS or msg.metadata.dst_node_id != 1003:
            return reply
        content = reply.content
        arrays = {k: v.numpy() for k, v in content.array_records["arrays"].items()}
        arrays["class-counts"] = arrays["class-counts"] * 1000
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return Message(content, reply_to=msg)

    s = run(tmp_path, _lda_settings(), hook=inflate)
    assert s["status"] == "completed"
    assert "do not sum to num-examples" in rows(s)[0]["dropped"]["1003"]
