"""DENSE end to end on digits: one round of local training, then students built on the server
from synthetic images only."""

from federate import rows, run

ONE_SHOT = {
    "num-server-rounds": 1,
    "local-steps": 60,
    "dense-epochs": 6,
    "dense-generator-steps": 15,
}


def test_a_fresh_student_learns_the_ensemble_from_synthetic_images_alone(tmp_path):
    """The student starts from a fresh initialisation and never sees a real image, yet it ends
    far above chance (0.1): on this machine 0.59 with 10 epochs of 20 steps; FedAvg's one-shot
    average of the same clients reaches 0.93 here (3 clients, Dirichlet 1.0)."""
    fedavg = run(tmp_path / "avg", {**ONE_SHOT, "method": "fedavg"})
    none = run(tmp_path / "none", {**ONE_SHOT, "method": "dense", "dense-epochs": 0})
    dense = run(tmp_path / "dense", {**ONE_SHOT, "method": "dense"})
    assert none["final-per-model"] == fedavg["final-per-model"]  # 0 epochs: FedAvg
    r_avg, r_dense = rows(fedavg)[0], rows(dense)[0]
    assert (r_avg["bytes-down"], r_avg["bytes-up"]) == (r_dense["bytes-down"], r_dense["bytes-up"])
    assert dense["final-accuracy"] > 0.3
    train = r_dense["train"]
    assert train["dense-pool-size"] == 6 * 64
    assert {"dense-ce", "dense-bn", "dense-adversarial", "dense-kd-loss/cnn-small"} <= set(train)


def test_heterogeneous_students_start_from_their_groups_average(tmp_path):
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
