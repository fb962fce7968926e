"""A real `flwr run` local simulation on a small Fashion-MNIST subset.

The run's final status is read with `flwr ls` (by scripts/simulate.py), never from the exit code
of `flwr run`, and the managed SuperLink is stopped by PID afterwards.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from federated_data.sources import DatasetUnavailableError, load_source

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, port: str) -> dict[str, str]:
    """A project-local Flower home, its own local SuperLink port and outputs under tmp_path."""
    return {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr_home"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": port,
        "BOUQUET_OUTPUT_ROOT": str(tmp_path),
    }


@pytest.mark.flwr_run
@pytest.mark.parametrize(
    "method_config",
    [
        "",
        # FMD with the real EfficientNet teacher: its message types, the probe and the teacher
        # cache written by concurrent Ray workers (32 px keeps the featurisation to seconds).
        'method="fmd" teacher-image-size=32 probe-rounds=5',
        # Mosaic: generator training, synthetic prototypes and the distillation in round 1, then
        # a fine-tuning round; generators cached by concurrent Ray workers.
        'method="mosaic" mosaic-distill-round=1 generator-steps=150 generator-width=8 '
        "generator-aux-steps=60 prototype-confidence=0.5 meta-steps=50 mosaic-distill-steps=20",
        # PRISM: coded masks up, client optimizer state in context.state across rounds, the
        # exported generator written by the ServerApp. CI runs PRISM through real Flower in
        # tests/test_deployment.py (process per message, compared with the in-process run);
        # this simulation run is in `pytest -m exhaustive`.
        pytest.param(
            'method="prism" lr=0.1 batch-size=16 prism-eval-samples=200 prism-judge-steps=200',
            marks=pytest.mark.exhaustive,
        ),
    ],
    ids=["fedavg", "fmd", "mosaic", "prism"],
)
def test_flwr_run_simulation_completes_and_writes_outputs(tmp_path, method_config, free_ports):
    try:
        load_source("fmnist")
    except DatasetUnavailableError as err:
        if os.environ.get("CI"):
            raise  # the test command provisions Fashion-MNIST; missing data is a CI failure
        pytest.skip(str(err))
    port = str(free_ports(1)[0])
    env = _env(tmp_path, port)
    run_config = (
        f'train-subset=3000 num-server-rounds=2 local-steps=20 run-name="smoke" {method_config}'
    )
    done = subprocess.run(
        [
            sys.executable,
            "scripts/simulate.py",
            "--num-supernodes",
            "3",
            "--run-config",
            run_config,
            "--timeout",
            "600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "finished:completed" in done.stdout
    summary = json.loads((tmp_path / "outputs" / "smoke" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds-completed"] == 2
    if "prism" in method_config:
        assert summary["final-fd"] > 0 and summary["export"]["bytes"] < 60_000
        assert 0.5 < summary["prism"]["uplink-bits-per-weight"] < 1.0  # entropy-coded
        samples = tmp_path / "outputs" / "smoke" / "samples"
        assert (samples / "generator-round2.png").exists()
    else:
        assert summary["final-accuracy"] > 0.3
    if "fmd" in method_config:
        assert summary["teacher"]["name"] == "efficientnet-lite0"
        assert summary["teacher"]["test"]["accuracy"] > 0.3
        cache = Path(os.environ["BOUQUET_DATA_DIR"]) / "cache" / "teachers"
        assert list(cache.glob("efficientnet-lite0-*.index.npz"))
    if "mosaic" in method_config:
        event = summary["mosaic"]["event"]
        assert event["round"] == 1 and event["prototypes"] == "synthetic"
        assert event["teacher"] == "meta-model-ema" and event["num-prototypes"] > 0
        samples = tmp_path / "outputs" / "smoke" / "samples"
        assert sorted(p.name for p in samples.iterdir()) == [
            f"generator-p{i}-round1.png" for i in range(3)
        ]
    # No SuperLink outlives the test.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0


@pytest.mark.flwr_run
def test_a_failing_run_is_reported_as_failed(tmp_path, free_ports):
    env = _env(tmp_path, str(free_ports(1)[0]))
    # cifar10 is online-only: the ServerApp raises before round 1, `flwr run` still exits 0.
    done = subprocess.run(
        [
            sys.executable,
            "scripts/simulate.py",
            "--num-supernodes",
            "2",
            "--run-config",
            'dataset="cifar10"',
            "--timeout",
            "300",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout[-3000:]
    assert "finished:failed" in done.stdout


@pytest.mark.flwr_run
def test_an_explicit_value_equal_to_its_default_beats_the_experiment_file(tmp_path, free_ports):
    """Flower merges defaults and --run-config before the ServerApp sees them; the explicit
    method="fedavg" (the default) must still win over the file's method: fedprox."""
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("method: fedprox\nproximal-mu: 0.3\nlocal-steps: 5\n")
    env = _env(tmp_path, str(free_ports(1)[0]))
    run_config = (
        f'experiment="{experiment}" method="fedavg" dataset="digits" num-server-rounds=1 '
        'run-name="precedence"'
    )
    command = ["scripts/simulate.py", "--num-supernodes", "2", "--run-config", run_config]
    done = subprocess.run(
        [sys.executable, *command, "--timeout", "300"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    resolved = yaml.safe_load((tmp_path / "outputs" / "precedence" / "config.yaml").read_text())
    assert resolved["method"] == "fedavg"  # explicit, equal to the default
    assert resolved["proximal-mu"] == 0.3 and resolved["local-steps"] == 5  # from the file
