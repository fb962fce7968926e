"""scripts/docker_images.py without a Docker engine: where the base comes from, what the
wheelhouse holds, and that the env file it writes names exactly what the compose files read.
The build itself runs in tests/docker/test_compose_federation.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import docker_images


def test_the_mirror_is_read_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert docker_images.apt_mirror("bookworm", tmp_path) == "http://mirror.test/debian"


def test_the_mirror_is_read_from_a_legacy_sources_list(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb-src http://src.test/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian bookworm main\n"
    )
    assert docker_images.apt_mirror("bookworm", tmp_path) == "http://mirror.test/debian"


def test_no_source_for_the_suite_says_what_to_pass(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    with pytest.raises(SystemExit, match="no apt source for trixie: pass --mirror"):
        docker_images.apt_mirror("trixie", tmp_path)


def test_the_wheelhouse_holds_cpu_torch_flwr_without_ray_the_teachers_and_the_backend():
    reqs = docker_images.wheel_requirements("2.13.0")
    assert reqs[:2] == ["torch==2.13.0", "flwr==1.39.0"]
    assert not any(r.startswith(("flwr[", "ray")) for r in reqs)  # no simulation extra
    assert "hatchling" in reqs and "efficientnet-lite-pytorch==0.1.0" in reqs
    assert sum(r.startswith("torch") for r in reqs) == 1


def test_the_env_file_names_every_image_variable_the_compose_files_read():
    written = {
        line.split("=")[0]
        for line in docker_images.Images().env_file().splitlines()
        if "=" in line and not line.startswith("#")
    }
    compose = " ".join(p.read_text() for p in docker_images.DOCKER.rglob("*.yml"))
    read = set(re.findall(r"\$\{(\w+):-", compose))
    images = {v for v in read if v.endswith("_IMAGE")} | {"PIP_OFFLINE"}
    assert images <= written
    assert written - {"EDGE_IMAGE"} <= read  # the edge image is run by hand, not by compose


def test_an_image_is_rebuilt_when_a_source_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(docker_images, "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = docker_images.tree_digest([tmp_path / "pkg"])
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert docker_images.tree_digest([tmp_path / "pkg"]) == before  # caches do not count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert docker_images.tree_digest([tmp_path / "pkg"]) != before


def test_the_arm64_variant_builds_only_the_base_and_the_edge_image():
    images = docker_images.Images(arch="arm64")
    assert images.tags() == ["bouquet-base:bookworm-arm64", "bouquet-edge:arm64"]
    assert images.wheelhouse.name == "wheelhouse-arm64"
    assert docker_images.install_tag(images.edge) == "bouquet-edge:install-arm64"
    assert "--platform" in docker_images.AARCH64
    assert "manylinux_2_28_aarch64" in docker_images.AARCH64


def test_torch_dependencies_are_judged_for_linux_on_aarch64(tmp_path):
    import zipfile

    wheel = tmp_path / "torch-2.9.1-cp311-cp311-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(
            "torch-2.9.1.dist-info/METADATA",
            "Name: torch\nRequires-Dist: filelock\n"
            'Requires-Dist: nvidia-cudnn-cu12==9.10.2.21; platform_machine == "x86_64"\n'
            'Requires-Dist: sympy>=1.13.3\nRequires-Dist: opt-einsum>=3.3; extra == "opt-einsum"\n',
        )
    assert docker_images._torch_dependencies(wheel) == ["filelock", "sympy>=1.13.3"]
