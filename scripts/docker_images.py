"""Build bouquet's docker images air-gapped: no container ever reaches a registry or an index.

    python scripts/docker_images.py                # base, Flower stand-ins, app and edge images
    docker compose --env-file docker/airgapped.env -f docker/compose.yml up -d

Steps, each skipped when its inputs are unchanged (an image carries the digest of its inputs
as the label ``bouquet.inputs``; the wheelhouse keeps it in ``.inputs``):

1. ``base``: Debian (bookworm) ``minbase`` by ``debootstrap`` from the host's own apt mirror, with
   python3, venv, pip, ca-certificates and libsqlite3, imported with ``docker import``.
2. ``wheels``: every wheel the images install, built on the host by pip into docker/wheelhouse
   (CPU torch, flwr without the simulation extra, the app's dependencies and build backend).
3. ``flwr``: stand-ins for ``flwr/superlink|supernode|superexec:1.39.0`` (docker/Dockerfile.flwr:
   the official layout, so the project's Dockerfiles build unchanged).
4. ``app`` and ``edge``: docker/Dockerfile and docker/Dockerfile.edge with ``PIP_OFFLINE=1``.

Writes docker/airgapped.env (the image names, for ``docker compose --env-file``). Needs root
(debootstrap) and a running Docker engine. With internet, none of this is needed: the compose
files default to Flower's official images and build the app image from them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
WHEELHOUSE = DOCKER / "wheelhouse"
ENV_FILE = DOCKER / "airgapped.env"
FLWR_VERSION = "1.39.0"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "libsqlite3-0")
APP_SOURCES = (
    "pyproject.toml",
    "README.md",
    "bouquet",
    "server_app",
    "client_app",
    "strategies",
    "protocol",
    "models",
    "federated_data",
)
STEPS = ("base", "wheels", "flwr", "app", "edge")
LABEL = "bouquet.inputs"
# The legacy builder: BuildKit needs the buildx plugin, and its front end comes from a registry.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}


@dataclass(frozen=True)
class Images:
    """The image names one build produces (``prefix`` keeps them apart from official ones)."""

    prefix: str = "bouquet"
    suite: str = "bookworm"
    arch: str = ""  # "" = the host's; "arm64" = the edge image for 64-bit ARM devices

    @property
    def tag_suffix(self) -> str:
        return f"-{self.arch}" if self.arch else ""

    @property
    def base(self) -> str:
        return f"{self.prefix}-base:{self.suite}{self.tag_suffix}"

    @property
    def wheelhouse(self) -> Path:
        return WHEELHOUSE.with_name(f"wheelhouse{self.tag_suffix}")

    def flwr(self, role: str) -> str:
        return f"{self.prefix}-flwr/{role}:{FLWR_VERSION}"

    @property
    def app(self) -> str:
        return f"{self.prefix}-app:latest"

    @property
    def edge(self) -> str:
        return f"{self.prefix}-edge:{self.arch or 'latest'}"

    def tags(self) -> list[str]:
        if self.arch:
            return [self.base, self.edge]
        return [
            self.base,
            *(self.flwr(r) for r in ("superlink", "supernode", "superexec")),
            self.app,
            self.edge,
        ]

    def env_file(self) -> str:
        """Variables the compose files read (image names and the offline build switch)."""
        return (
            "\n".join(
                [
                    "# Written by scripts/docker_images.py: the air-gapped images, for compose.",
                    f"SUPERLINK_IMAGE={self.flwr('superlink')}",
                    f"SUPERNODE_IMAGE={self.flwr('supernode')}",
                    f"SUPEREXEC_IMAGE={self.flwr('superexec')}",
                    f"APP_IMAGE={self.app}",
                    f"EDGE_IMAGE={self.edge}",
                    "PIP_OFFLINE=1",
                ]
            )
            + "\n"
        )


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """Run ``cmd``; on failure raise with its output, which names what went wrong."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=DOCKER_ENV, **kwargs)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise SystemExit(f"[docker-images] failed ({done.returncode}): {' '.join(cmd)}\n{tail}")
    return done


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_digest(paths: list[Path]) -> str:
    """Digest of every file under ``paths`` (names and contents; caches excluded)."""
    parts: list[str | bytes] = []
    for path in paths:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                parts += [f.relative_to(ROOT).as_posix(), f.read_bytes()]
    return digest(*parts)


def image_inputs(tag: str) -> str | None:
    """The ``bouquet.inputs`` label of image ``tag``, or None when there is no such image."""
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        capture_output=True,
        text=True,
        env=DOCKER_ENV,
    )
    if done.returncode != 0:
        return None
    return (json.loads(done.stdout) or {}).get(LABEL)


def apt_mirror(suite: str, apt: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror for ``suite``, read from its apt sources (never hard-coded)."""
    texts = [p.read_text() for p in sorted((apt / "sources.list.d").glob("*.sources"))]
    for text in texts:  # deb822 stanzas
        for stanza in text.split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):[ \t]*(.+)$", stanza, re.M))
            if suite in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    legacy = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for line in (ln for f in legacy if f.exists() for ln in f.read_text().splitlines()):
        words = re.sub(r"\[[^]]*\]", "", line).split()  # drop [options]
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    raise SystemExit(f"[docker-images] no apt source for {suite}: pass --mirror URL")


def build_base(images: Images, mirror: str) -> None:
    inputs = digest(images.suite, mirror, images.arch, *BASE_PACKAGES)
    if image_inputs(images.base) == inputs:
        return
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise SystemExit(
            "[docker-images] the base image needs root and debootstrap "
            "(apt-get install debootstrap)"
        )
    with tempfile.TemporaryDirectory(prefix="bouquet-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                *([f"--arch={images.arch}"] if images.arch else []),
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                images.suite,
                str(rootfs),
                mirror,
            ]
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / cache).glob("*"):
                if f.is_file():
                    f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(
            [
                "docker",
                "import",
                "--change",
                f"LABEL {LABEL}={inputs}",
                "--change",
                "ENV LANG=C.UTF-8",
                "-",
                images.base,
            ],
            stdin=tar.stdout,
        )
        tar.wait()


def wheel_requirements(torch_version: str, teachers: bool = True) -> list[str]:
    """What the images install: pyproject's dependencies without the simulation extra (no Ray
    in a deployment), the teachers extra (app image), the build backend, CPU torch and flwr."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = [d for d in project["project"]["dependencies"] if not d.startswith(("flwr[", "torch"))]
    extras = project["project"]["optional-dependencies"]["teachers"] if teachers else []
    backend = project["build-system"]["requires"]
    return [f"torch=={torch_version}", f"flwr=={FLWR_VERSION}", *deps, *extras, *backend]


# Wheels for 64-bit ARM (Raspberry Pi OS 64-bit, Jetson's CPU side) and the base's Python 3.11.
AARCH64 = [
    "--only-binary=:all:",
    *("--python-version", "3.11", "--implementation", "cp"),
    *("--abi", "cp311", "--abi", "abi3", "--abi", "none"),
    *(a for t in ("_2_28", "_2_17", "2014") for a in ("--platform", f"manylinux{t}_aarch64")),
]


def _torch_dependencies(wheel: Path) -> list[str]:
    """torch's own requirements for Linux on aarch64 (pip's --platform download would judge
    their markers by this host, and ask for x86_64's CUDA libraries)."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    env = {
        "platform_machine": "aarch64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "python_version": "3.11",
        "python_full_version": "3.11.2",
        "extra": "",
    }
    reqs = [Requirement(ln.split(":", 1)[1]) for ln in lines if ln.startswith("Requires-Dist:")]
    return [str(r).split(";")[0] for r in reqs if r.marker is None or r.marker.evaluate(env)]


def build_wheelhouse(images: Images, requirements: list[str]) -> str:
    folder = images.wheelhouse
    folder.mkdir(exist_ok=True)
    stamp = folder / ".inputs"
    inputs = digest(*requirements, images.arch, sys.version.split()[0])
    if stamp.exists() and stamp.read_text() == inputs:
        return inputs
    for old in folder.glob("*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip"]
    if not images.arch:
        run([*pip, "wheel", "-q", "-w", str(folder), *requirements])
    else:
        torch, rest = requirements[0], requirements[1:]
        run([*pip, "download", "-q", "-d", str(folder), *AARCH64, "--no-deps", torch])
        wheel = next(folder.glob("torch-*.whl"))
        run(
            [
                *pip,
                "download",
                "-q",
                "-d",
                str(folder),
                *AARCH64,
                *rest,
                *_torch_dependencies(wheel),
            ]
        )
    stamp.write_text(inputs)
    return inputs


def install_tag(tag: str) -> str:
    """``name:install-<tag>``: the install stage of image ``name:<tag>``."""
    name, _, version = tag.rpartition(":")
    return f"{name}:install-{version}"


def docker_build(
    dockerfile: str, tag: str, inputs: str, target: str | None = None, **args: str
) -> None:
    """``docker build`` unless ``tag`` was built from the same inputs.

    The ``install`` stage (wheels in, environment out) is tagged ``<name>:install`` so that its
    layers stay cached for the next build and the one it replaces can be pruned."""
    if image_inputs(tag) == inputs:
        return
    cmd = ["docker", "build", "-f", str(DOCKER / dockerfile), "--label", f"{LABEL}={inputs}"]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    install = install_tag(tag)
    run([*cmd, "--target", "install", "-t", install, str(ROOT)])
    run([*cmd, *(["--target", target] if target else []), "-t", tag, str(ROOT)])
    # Only images this script made and a newer build replaced (untagged, with our label).
    run(["docker", "image", "prune", "-f", "--filter", f"label={LABEL}"])


def image_size_mb(tag: str) -> float:
    done = run(["docker", "image", "inspect", "--format", "{{.Size}}", tag])
    return round(int(done.stdout) / 1e6, 1)


def build(images: Images, steps: tuple[str, ...], mirror: str, torch_version: str) -> dict:
    """Run ``steps`` in order; returns seconds per step and the images' sizes."""
    seconds: dict[str, float] = {}
    stamp = images.wheelhouse / ".inputs"
    wheels = stamp.read_text() if stamp.exists() else ""
    for step in steps:
        t0 = time.time()
        print(f"[docker-images] {step} ...", flush=True)
        if step == "base":
            build_base(images, mirror)
        elif step == "wheels":
            requirements = wheel_requirements(torch_version, teachers=not images.arch)
            wheels = build_wheelhouse(images, requirements)
        elif step == "flwr":
            inputs = digest(
                wheels, image_inputs(images.base) or "", tree_digest([DOCKER / "Dockerfile.flwr"])
            )
            for role in ("superlink", "supernode", "superexec"):  # one install stage for all
                docker_build(
                    "Dockerfile.flwr",
                    images.flwr(role),
                    inputs,
                    target=role,
                    BASE_IMAGE=images.base,
                    FLWR_VERSION=FLWR_VERSION,
                )
        else:
            dockerfile = "Dockerfile" if step == "app" else "Dockerfile.edge"
            base = images.flwr("superexec") if step == "app" else images.base
            sources = [ROOT / s for s in APP_SOURCES] + [DOCKER / dockerfile]
            inputs = digest(wheels, image_inputs(base) or "", tree_digest(sources), torch_version)
            base_arg = {"SUPEREXEC_IMAGE" if step == "app" else "BASE_IMAGE": base}
            if step == "edge":
                base_arg["WHEELHOUSE"] = images.wheelhouse.relative_to(ROOT).as_posix()
            docker_build(
                dockerfile,
                getattr(images, step),
                inputs,
                PIP_OFFLINE="1",
                TORCH_VERSION=torch_version,
                **base_arg,
            )
        seconds[step] = round(time.time() - t0, 1)
    sizes = {t: image_size_mb(t) for t in images.tags() if image_inputs(t) is not None}
    return {"seconds": seconds, "size-mb": sizes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        action="append",
        choices=STEPS,
        help="run only these steps (repeatable); default: all, in order",
    )
    p.add_argument("--prefix", default="bouquet", help="image name prefix (default: bouquet)")
    p.add_argument("--suite", default="bookworm", help="Debian suite of the base image")
    p.add_argument("--mirror", help="Debian mirror URL (default: the host's apt source)")
    p.add_argument(
        "--arch",
        choices=("", "arm64"),
        default="",
        help="arm64: only the base and the edge image, for 64-bit ARM devices (this host must "
        "run arm64 binaries: qemu-user-static with binfmt_misc)",
    )
    p.add_argument(
        "--torch-version",
        help="default 2.13.0 (CPU wheel); on arm64 2.9.1, the newest CPU-only aarch64 wheel "
        "(2.13.0's needs CUDA libraries)",
    )
    p.add_argument("--fresh", action="store_true", help="remove the images first (timing)")
    p.add_argument("--report", type=Path, help="write seconds and sizes as JSON here")
    args = p.parse_args()
    images = Images(args.prefix, args.suite, args.arch)
    possible = ("base", "wheels", "edge") if args.arch else STEPS
    steps = tuple(s for s in possible if not args.only or s in args.only)
    torch_version = args.torch_version or ("2.9.1" if args.arch else "2.13.0")
    if args.fresh:
        tags = images.tags()[::-1]
        tags += [install_tag(t) for t in tags[:-1]]
        subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True, env=DOCKER_ENV)
        run(["docker", "image", "prune", "-f", "--filter", f"label={LABEL}"])
        (images.wheelhouse / ".inputs").unlink(missing_ok=True)
    mirror = args.mirror or (apt_mirror(args.suite) if "base" in steps else "")
    t0 = time.time()
    report = build(images, steps, mirror, torch_version)
    report["total-seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=2))
    if args.arch:
        print(f"[docker-images] done: {images.edge} for linux/{args.arch}")
    else:
        ENV_FILE.write_text(images.env_file())
        print(
            "[docker-images] done; compose: docker compose --env-file "
            f"{ENV_FILE.relative_to(ROOT)} -f docker/compose.yml up -d"
        )
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
