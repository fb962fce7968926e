"""PRISM and its dense baseline end to end through the real ServerApp loop and ClientApp on
digits: entropy-coded and bit-packed uplinks, training dynamics, metrics, sample grids, export,
resume, DP and bad masks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from federate import rows, run
from flwr.app import Array, ArrayRecord

from federated_data import Federation
from models.masked import load_generator, num_masked
from protocol import CODED_MASK, MASK_KEY, TRAIN_MASK
from server_app.config import DEFAULTS, load_config
from server_app.runner import build_strategy, data_spec
from strategies.state import ServerState

SMALL = {
    "method": "prism",
    "num-partitions": 3,
    "num-server-rounds": 2,
    "local-steps": 3,
    "batch-size": 16,
    "lr": 0.1,
    "prism-eval-samples": 120,
    "prism-judge-steps": 150,
    "prism-sample-every": 1,
}
SMALL_WEIGHTS = 418_192  # the "small" generator for one channel (checked below)


@pytest.fixture(scope="module")
def prism_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prism")
    return run(tmp, {**SMALL, "run-name": "prism"}), tmp


def test_uplink_is_coded_below_one_bit_per_weight(prism_run):
    summary, _ = prism_run
    assert summary["status"] == "completed"
    info = summary["prism"]
    assert info["masked-weights"] == SMALL_WEIGHTS
    assert info["mask-bytes"] == (SMALL_WEIGHTS + 7) // 8
    # Scores ~ N(0, 1) at the start: about 0.87 bits per weight under the global theta; MADA
    # spreads the scores (more weights near 0 or 1), so later rounds cost less.
    bpw = [row["train"]["uplink-bits-per-weight"] for row in rows(summary)]
    assert 0.8 < bpw[0] < 0.95 and 0.5 < bpw[1] < bpw[0]
    for row in rows(summary):
        for down, up in row["bytes-per-node"].values():
            assert up < 0.95 * info["mask-bytes"] + 2_000  # the serialised reply
            assert down > 4 * SMALL_WEIGHTS  # float32 scores go down
        assert row["num-ok"] == 3
    assert info["uplink-bits-per-weight"] == rows(summary)[-1]["train"]["uplink-bits-per-weight"]


def test_training_dynamics_per_round(prism_run):
    summary, _ = prism_run
    for row in rows(summary):
        train = row["train"]
        assert 0 < train["theta-drift"] < 0.2  # 3 local steps move theta a little
        assert 0.4 < train["global-theta-mean"] < 0.6
        assert 0 < train["theta-low-share"] < 0.3 and 0 < train["theta-high-share"] < 0.3
    assert (Path(summary["run-dir"]) / "plots" / "dynamics.png").exists()


def test_metrics_grids_and_export(prism_run):
    summary, _ = prism_run
    last = rows(summary)[-1]
    metrics = last["per-model"]["generator"]
    expected = {"fd", "kid", "precision", "recall", "density", "coverage"}
    assert expected | {"classes-covered", "class-tv"} <= set(metrics)
    assert last["fd"] == metrics["fd"] and np.isfinite(metrics["fd"])
    assert 0 <= last["train"]["mada-hamming"] <= 1
    floor = summary["prism"]["real-floor"]
    assert floor["fd"] < metrics["fd"]  # an untrained generator is far from real images
    run_dir = Path(summary["run-dir"])
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "generator-round1.png",
        "generator-round2.png",
    ]
    assert (run_dir / "plots" / "fd.png").exists()
    export = summary["export"]
    assert export["bytes"] < 60_000 and 0.3 < export["density"] < 0.7
    model = load_generator(export["path"])
    assert num_masked(model) == SMALL_WEIGHTS
    assert model.sample(4).shape == (4, 1, 32, 32)


def test_exported_generator_is_the_evaluated_one(prism_run):
    summary, tmp = prism_run
    cfg = load_config({**DEFAULTS, "dataset": "digits", **SMALL, "output-dir": str(tmp)})
    fed = Federation(data_spec(cfg))
    strategy = build_strategy(cfg, fed, torch.device("cpu"))
    state = ServerState.load(Path(summary["run-dir"]) / "checkpoints" / "last.npz")
    torch.manual_seed(5)
    a = strategy.generator(state).eval().sample(6)
    torch.manual_seed(5)
    b = load_generator(summary["export"]["path"]).sample(6)
    torch.testing.assert_close(a, b)


def test_resume_continues_from_the_checkpoint(tmp_path):
    cfg = {**SMALL, "run-name": "resume", "num-server-rounds": 1}
    first = run(tmp_path, cfg)
    assert first["rounds-completed"] == 1
    second = run(tmp_path, {**cfg, "num-server-rounds": 2, "resume": True})
    assert second["rounds-completed"] == 2
    assert [r["round"] for r in rows(second)] == [1, 2]


def _bad_mask(msg, reply):
    """Partition 0 replies a packed mask one byte short, partition 1 a coded mask with one bit
    of its stream flipped."""
    if msg.metadata.message_type != TRAIN_MASK or not reply.has_content():
        return reply
    pid = reply.content["metrics"]["partition-id"]
    (name,) = reply.content[MASK_KEY].keys()
    array = reply.content[MASK_KEY][name].numpy().copy()
    if pid == 0:
        short = np.zeros((SMALL_WEIGHTS + 7) // 8 - 1, dtype=np.uint8)
        reply.content[MASK_KEY] = ArrayRecord({MASK_KEY: Array(short)})
    if pid == 1:
        assert name == CODED_MASK
        array[len(array) // 2] ^= 1
        reply.content[MASK_KEY] = ArrayRecord({CODED_MASK: Array(array)})
    return reply


def test_malformed_masks_are_dropped_and_the_round_goes_on(tmp_path):
    cfg = {**SMALL, "num-server-rounds": 1, "num-partitions": 4}  # min-nodes 2 stay
    summary = run(tmp_path, cfg, hook=_bad_mask)
    assert summary["status"] == "completed"
    row = rows(summary)[0]
    assert row["num-ok"] == 2
    reasons = sorted(row["dropped"].values())
    assert "bytes, expected" in reasons[0] or "bytes, expected" in reasons[1]
    assert any("does not decode cleanly" in r or "truncated" in r for r in reasons)


def test_theta_float16_downlink_halves_the_bytes_and_packed_uplink_is_one_bit(tmp_path):
    summary = run(
        tmp_path,
        {
            **SMALL,
            "num-server-rounds": 1,
            "prism-downlink": "theta-float16",
            "prism-uplink": "packed",
        },
    )
    row = rows(summary)[0]
    down = [d for d, _ in row["bytes-per-node"].values()]
    assert all(2 * SMALL_WEIGHTS <= d < 2.2 * SMALL_WEIGHTS for d in down)
    assert row["train"]["uplink-bits-per-weight"] == 8 * ((SMALL_WEIGHTS + 7) // 8) / SMALL_WEIGHTS
    mask_bytes = summary["prism"]["mask-bytes"]
    assert all(mask_bytes <= u < mask_bytes + 2_000 for _, u in row["bytes-per-node"].values())


def test_dp_reports_epsilon_and_changes_the_statistics(tmp_path):
    summary = run(tmp_path, {**SMALL, "num-server-rounds": 1, "prism-dp-epsilon": 9.8})
    dp = summary["prism"]["dp"]
    assert dp["epsilon"] <= 9.8 and dp["epsilon"] > 9.0
    assert dp["delta"] == 1e-5 and dp["noise-multiplier"] > 0


def test_pixel_mmd_and_no_mada(tmp_path):
    summary = run(
        tmp_path,
        {**SMALL, "num-server-rounds": 1, "prism-loss": "pixel-mmd", "prism-aggregation": "mean"},
    )
    row = rows(summary)[0]
    assert summary["status"] == "completed" and "mada-hamming" not in row["train"]


def test_dense_baseline_averages_float_weights(tmp_path):
    summary = run(tmp_path, {**SMALL, "method": "fedavg-generator", "lr": 0.0005})
    assert summary["status"] == "completed"
    assert summary["prism"]["dense-weights"] == SMALL_WEIGHTS
    for row in rows(summary):
        for _, up in row["bytes-per-node"].values():
            assert up > 4 * SMALL_WEIGHTS  # float32 weights go up: 32x PRISM's uplink
    assert np.isfinite(rows(summary)[-1]["fd"])


class _StandInFeatures:
    """In place of Inception-v3 (not available offline): 8x8 average-pooled pixels."""

    def __call__(self, images):
        pooled = torch.nn.functional.adaptive_avg_pool2d(images, 8)
        return pooled.flatten(1).double().numpy()


def test_real_fid_option_scores_samples_and_floor(tmp_path, monkeypatch):
    from strategies import prism

    with pytest.raises(RuntimeError, match="prism-fid=true"):  # offline: a named error
        run(tmp_path / "offline", {**SMALL, "num-server-rounds": 1, "prism-fid": True})
    monkeypatch.setattr(prism, "InceptionFeatures", lambda download: _StandInFeatures())
    summary = run(tmp_path / "fid", {**SMALL, "num-server-rounds": 1, "prism-fid": True})
    fid = summary["final-per-model"]["generator"]["fid-torchvision"]
    floor = summary["prism"]["real-floor"]["fid-torchvision"]
    assert np.isfinite(fid) and 0 <= floor < fid  # real images are closer than samples
