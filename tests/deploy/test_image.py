"""The container image: what the Dockerfile promises, checked without a Docker engine.

hadolint lints the Dockerfile; the rest reads it as a builder would (stages, build context
after .dockerignore) and checks every command it runs against the installed package.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.env import SettingsError
from ingest.settings import EdgeSettings
from postback_pipeline.cli import BY_NAME
from tests.deploy.support import REPO, dockerfile_args, dockerfile_stages, run, tool

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def final_stage() -> dict[str, list[str]]:
    """The last stage's instructions, by keyword."""
    instructions: dict[str, list[str]] = {}
    for instruction in dockerfile_stages()[-1]:
        instructions.setdefault(instruction.keyword, []).append(instruction.arguments)
    return instructions


@functools.cache
def command_runs(name: str) -> bool:
    """`postback-pipeline NAME` would run: the installed console script has the command and
    loads it (its --help does)."""
    script = Path(sys.executable).with_name("postback-pipeline")
    result = subprocess.run([script, name, "--help"], capture_output=True, check=False)
    return result.returncode == 0 and name in BY_NAME


def test_hadolint_finds_nothing() -> None:
    """The Dockerfile passes hadolint with every rule on, so the image follows its practices."""
    result = run(tool("hadolint"), "--no-color", "Dockerfile", check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint step can fail: a floating base tag and a shell-form command are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install aiokafka\nCMD python -m ingest\n")

    result = run(tool("hadolint"), "--no-color", str(bad), check=False)

    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_builder_and_final_stages_share_a_pinned_slim_base() -> None:
    """The virtualenv built in the first stage runs on the identical, patch-pinned slim Python."""
    stages = dockerfile_stages()
    base = dockerfile_args()["PYTHON_IMAGE"]

    assert len(stages) >= 2
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base)
    assert stages[0][0].arguments == "${PYTHON_IMAGE} AS builder"
    assert stages[-1][0].arguments == "${PYTHON_IMAGE}"


def test_final_stage_has_no_build_tools() -> None:
    """Nothing is compiled or installed in the final stage: it only copies the built venv."""
    final = final_stage()
    builder = " ".join(i.arguments for i in dockerfile_stages()[0])

    assert "RUN" not in final, final.get("RUN")
    assert final["COPY"] == ["--from=builder /opt/venv /opt/venv"]
    assert "PIP_ONLY_BINARY=:all:" in builder, "dependencies must come as wheels, never compiled"
    assert "venv --without-pip /opt/venv" in builder, "no installer in the copied environment"
    assert not re.search(r"\b(gcc|build-essential|apt-get)\b", builder)


def test_dependencies_are_installed_from_the_constraints() -> None:
    """Every runtime dependency, transitive ones too, is pinned in constraints.txt."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version.strip()
    builder = " ".join(i.arguments for i in dockerfile_stages()[0])
    wanted = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate()):
            continue
        seen.add(name)
        assert name in pins, f"{name} is a runtime dependency but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"
        for text in metadata.requires(name) or []:
            dependency = Requirement(text)
            if not dependency.marker or dependency.marker.evaluate({"extra": ""}):
                wanted.append(dependency)

    assert "PIP_CONSTRAINT=/src/constraints.txt" in builder
    steps = [f"{i.keyword} {i.arguments}" for i in dockerfile_stages()[0]]
    pins_copied = steps.index("COPY pyproject.toml constraints.txt ./")
    installed = next(n for n, step in enumerate(steps) if "--requirement" in step)
    sources_copied = steps.index("COPY ingest ./ingest")
    assert pins_copied < installed < sources_copied, "the dependency layer comes before the source"


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker's build context leaves `path` out (last matching pattern wins)."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = Path(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))] + list(parts)
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            excluded = not negated
    return excluded


def test_build_context_holds_what_is_copied_and_nothing_else() -> None:
    """The .dockerignore sends the sources and pins, never tests, venvs, caches or git."""
    copied = []
    for instruction in dockerfile_stages()[0]:
        if instruction.keyword == "COPY":
            copied.extend(instruction.arguments.split()[:-1])
    packages = {
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }

    for source in copied:
        assert (REPO / source).exists(), source
        assert not dockerignore_excludes(source), f"{source} is copied but .dockerignore drops it"
    assert packages <= set(copied), f"packages not copied: {packages - set(copied)}"
    assert dockerignore_excludes("consumers/events/schema.json") is False
    for private in (
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "ingest/__pycache__/app.cpython-311.pyc",
        "bench/serial.py",
        "testkit/traffic.py",
    ):
        assert dockerignore_excludes(private), private


def test_runs_as_a_numeric_non_root_user() -> None:
    """Kubernetes' runAsNonRoot can verify the user without reading /etc/passwd."""
    (user,) = final_stage()["USER"]

    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0


def test_entrypoint_and_command_are_exec_form_commands_the_package_has() -> None:
    """`docker run IMAGE [command]` starts the console script directly (it gets SIGTERM) on a
    command it has."""
    final = final_stage()
    (entrypoint,) = final["ENTRYPOINT"]
    (command,) = final["CMD"]

    assert json.loads(entrypoint) == ["postback-pipeline"]
    assert PYPROJECT["project"]["scripts"]["postback-pipeline"] == "postback_pipeline.cli:main"
    assert json.loads(command) == ["edge"]
    for service in ("edge", "processor", "metrics"):
        assert command_runs(service), service
    assert not command_runs("ingest")


def test_services_listen_on_all_interfaces_in_the_container() -> None:
    """The services default to loopback; the image must bind 0.0.0.0 and expose their ports."""
    env = " ".join(final_stage()["ENV"])

    for variable in ("EDGE_HOST", "PROCESSOR_HOST", "METRICS_HOST"):
        assert f"{variable}=0.0.0.0" in env
    assert final_stage()["EXPOSE"] == ["8080 9101 9102"]
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only at run time"


def test_the_image_alone_starts_no_edge_anyone_may_post_to() -> None:
    """Run with only a Kafka address, the image's edge (on 0.0.0.0) refuses to start until an
    allowlist, Basic credentials or EDGE_ALLOW_ANY_SENDER=true says who may post."""
    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(final_stage()["ENV"])))
    environ = {**image_env, "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}

    with pytest.raises(SettingsError, match="EDGE_ALLOW_ANY_SENDER=true"):
        EdgeSettings.from_environ(environ)
    EdgeSettings.from_environ({**environ, "EDGE_ALLOWED_CIDRS": "198.51.100.0/24"})


def test_oci_labels_describe_the_image() -> None:
    """Registries and scanners read the title, licence, version and base from OCI labels."""
    labels = dict(
        re.findall(
            r'(org\.opencontainers\.image\.[\w.]+)="([^"]*)"', " ".join(final_stage()["LABEL"])
        )
    )

    assert labels["org.opencontainers.image.title"] == PYPROJECT["project"]["name"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert {"description", "revision", "base.name"} <= {
        key.removeprefix("org.opencontainers.image.") for key in labels
    }
