"""The ``bouquet`` command line: arguments, errors that name the problem, a run in process with
its TensorBoard curves and provenance, and ``--from`` to rerun a run's settings."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import yaml

from bouquet.cli import main, parse_overrides
from server_app.provenance import git_state

TINY = ["dataset=digits", "num-partitions=2", "num-server-rounds=2", "local-steps=5"]


def test_overrides_are_yaml_scalars():
    assert parse_overrides(["alpha=0.1", "method=fedavg", "resume=true", "run-name="]) == {
        "alpha": 0.1,
        "method": "fedavg",
        "resume": True,
        "run-name": "",
    }
    with pytest.raises(SystemExit, match="'alpha' is not key=value"):
        parse_overrides(["alpha"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "seed=1", "methd=fedavg"], "unknown run-config keys \\['methd'\\]"),
        (["run", "alpha=-1"], "alpha"),
        (["run", "configs/nope.yaml"], "experiment file configs/nope.yaml not found"),
        (["run", "--from", "/nonexistent"], "--from /nonexistent: no config.yaml there"),
        (["run", "configs/fedavg-fmnist-a0.5.yaml", "--from", "x"], "not both"),
        (["grid", "/nonexistent.yaml"], "not found, or not a mapping"),
    ],
)
def test_bad_arguments_name_the_problem(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_the_command_is_installed_and_documents_itself():
    done = subprocess.run(
        [sys.executable, "-m", "bouquet.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for command in ("run", "grid", "compare", "deploy", "data"):
        assert command in done.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["deploy", "--help"], "--no-warm-worker"),  # an option first reaches the script
        (["deploy", "--insecure", "status"], "[deploy]"),
        (["data", "--help"], "--data-dir"),
    ],
)
def test_deploy_and_data_pass_every_argument_to_their_scripts(argv, expected, tmp_path):
    if argv[1] == "--insecure":
        argv = ["deploy", "--insecure", "--state", str(tmp_path), "status"]
    done = subprocess.run(
        [sys.executable, "-m", "bouquet.cli", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout + done.stderr


def _scalar_tags(folder) -> set[str]:
    """Tags of the scalars in TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            tags |= {v.tag for v in event.summary.value if v.HasField("simple_value")}
            offset += 12 + length + 4
    return tags


def test_a_run_in_process_writes_curves_and_provenance_and_reruns_from_its_directory(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--in-process", *TINY, f"output-dir={out}", "run-name=first"]) == 0
    run = out / "first"
    tags = _scalar_tags(run / "tensorboard")
    assert {"score/accuracy", "score/loss", "round/bytes-up", "round/num-dropped"} <= tags
    assert "per-model/cnn-small/accuracy" in tags
    summary = json.loads((run / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["packages"]["flwr"] == "1.39.0" and "torch" in prov["packages"]
    assert prov["git"] is None or len(prov["git"]["commit"]) == 40

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert main(["run", "--in-process", "--from", str(run), "run-name=again"]) == 0
    again = yaml.safe_load((out / "again" / "config.yaml").read_text())
    assert {**again, "run-name": "first"} == config  # the same settings, a new directory
    first = json.loads((run / "summary.json").read_text())["final-accuracy"]
    assert json.loads((out / "again" / "summary.json").read_text())["final-accuracy"] == first


def test_trackers_must_exist_and_be_installed():
    with pytest.raises(SystemExit, match="trackers: 'neptune' is unknown"):
        main(["run", "--in-process", "trackers=neptune"])
    with pytest.raises(SystemExit, match='pip install "bouquet\\[wandb\\]"'):
        main(["run", "--in-process", "trackers=tensorboard,wandb"])


def test_git_state_outside_and_inside_a_checkout(tmp_path):
    assert git_state(tmp_path) is None
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
    }
    for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(["git", "add", "f"], cwd=tmp_path, env=env, check=True)
    state = git_state(tmp_path)
    assert state is not None and len(state["commit"]) == 40 and state["dirty"] is True
