"""DENSE end to end on digits: one round of local training, then students built on the server
from synthetic images only."""

from federate import rows, run

ONE_SHOT = {
    "num-server-rounds": 1,
    "local-steps": 60,
    "dense-epochs": 6,
    "dense-generator-steps": 15,
}
PASSES = {"dense-kd-passes": 5}


def test_a_fresh_student_learns_the_ensemble_from_synthetic_images_alone(tmp_path):
    """The student starts from a fresh initialisation and never sees a real image, yet on most
    seeds it ends far above chance (0.1); FedAvg's one-shot average of the same clients reaches
    0.93 (3 clients, Dirichlet 1.0, seed 0). At this budget (6 epochs, 384 synthetic images)
    DENSE is seed-unstable on cnn-small, which has no batch norm to anchor the synthesis: with 5
    passes over the pool seeds 0-6 gave 0.69, 0.19, 0.85, 0.82, 0.85, 0.87, 0.91 (one pass, the
    reference: 0.29, 0.37, 0.10, 0.20), so the test asserts on the median of three seeds."""
    fedavg = run(tmp_path / "avg", {**ONE_SHOT, "method": "fedavg"})
    none = run(tmp_path / "none", {**ONE_SHOT, "method": "dense", "dense-epochs": 0})
    assert none["final-per-model"] == fedavg["final-per-model"]  # 0 epochs: FedAvg
    runs = [
        run(tmp_path / f"dense{seed}", {**ONE_SHOT, "method": "dense", "seed": seed, **PASSES})
        for seed in (0, 1, 2)
    ]
    r_avg, r_dense = rows(fedavg)[0], rows(runs[0])[0]
    assert (r_avg["bytes-down"], r_avg["bytes-up"]) == (r_dense["bytes-down"], r_dense["bytes-up"])
    accuracies = sorted(s["final-accuracy"] for s in runs)
    assert accuracies[1] > 0.3, accuracies
    train = r_dense["train"]
    assert train["dense-pool-size"] == 6 * 64
    assert {"dense-ce", "dense-bn", "dense-adversarial", "dense-kd-loss/cnn-small"} <= set(train)


def test_heterogeneous_students_start_from_their_groups_average(tmp_path, caplog):
    s = run(
        tmp_path,
        {
            **ONE_SHOT,
            "method": "dense",
            "models": "heterogeneous",
            "dense-student-init": "average",
            "dense-epochs": 2,
            "dense-generator-steps": 5,
        },
    )
    assert set(s["final-per-model"]) == {"cnn-small", "mlp", "cnn-large"}
    assert rows(s)[0]["train"]["dense-bn"] > 0  # cnn-large has batch norm; cnn-small does not
    assert "DENSE epoch 2/2: pool 128 images" in caplog.text  # progress during synthesis
    assert "KD loss cnn-large" in caplog.text
