"""The Helm chart: lint, render every scenario, validate against Kubernetes' schemas, and check
what the manifests promise (locked-down pods, a drain that loses nothing, settings the services
accept) with the real helm and kubernetes-validate.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common.env import SettingsError
from consumers.changelog import state_topic
from consumers.metrics.settings import MetricsSettings
from consumers.processor.pipeline import PartitionPipeline
from consumers.settings import ProcessorSettings
from ingest.settings import EdgeSettings
from tests.deploy.support import (
    CHART,
    DEFAULTS,
    KUBE_VERSIONS,
    PSEUDONYM_KEY_SECRET,
    REQUIRED_VALUES,
    SCENARIOS,
    component,
    helm_template,
    of_kind,
    pod_specs,
    render,
    run,
    scenario_args,
    tool,
    validate_manifest,
)
from tests.deploy.test_image import command_runs

PLACEHOLDER_CHARS = 64
# Custom resources have no schema in kubernetes-validate; the chart may only make these.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "KafkaTopic"}
SETTINGS: dict[str, Callable[[Mapping[str, str]], object]] = {
    "edge": EdgeSettings.from_environ,
    "processor": ProcessorSettings.from_environ,
    "metrics": MetricsSettings.from_environ,
}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment; values from Secrets become placeholders (`from-secret-<key>`,
    padded to pass a length check such as the pseudonym key's)."""
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            key = variable["valueFrom"]["secretKeyRef"]["key"]
            env[variable["name"]] = f"from-secret-{key}".ljust(PLACEHOLDER_CHARS, ".")
    return env


class Recording(dict[str, str]):
    """An environment that remembers which variables the settings asked for."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def deployments(scenario: str) -> dict[str, dict[str, Any]]:
    return {component(d): d for d in of_kind(render(scenario), "Deployment")}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_passes(scenario: str) -> None:
    """`helm lint --strict` finds nothing to warn about, with every scenario's values."""
    result = run(tool("helm"), "lint", "--strict", str(CHART), *scenario_args(scenario))

    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_match_the_kubernetes_schemas(scenario: str, kube_version: str) -> None:
    """Every manifest is valid for the oldest and newest supported Kubernetes; no unknown field."""
    manifests = render(scenario, kube_version=kube_version)

    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        validate_manifest(manifest, kube_version)


def test_schema_validation_catches_a_misplaced_field() -> None:
    """The validation above can fail: a typo'd field in a Deployment is reported."""
    deployment = copy.deepcopy(deployments(DEFAULTS)["edge"])
    deployment["spec"]["template"]["spec"]["containers"][0]["envv"] = []

    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment, KUBE_VERSIONS[-1])


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SELECTOR = closed({"matchLabels": STRINGS}, ("matchLabels",))
NAMESPACES = closed({"matchNames": {"type": "array", "items": {"type": "string"}}})
ENDPOINT = closed(
    {name: {"type": "string"} for name in ("port", "path", "interval", "scrapeTimeout")},
    ("port", "path"),
)
RULE = closed(
    {
        "record": {"type": "string", "pattern": "^[a-z_:][a-z0-9_:]*$"},
        "alert": {"type": "string", "pattern": "^[A-Za-z]+$"},
        "expr": {"type": "string"},
        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
        "labels": STRINGS,
        "annotations": STRINGS,
    },
    ("expr",),
)
SPEC = {
    "ServiceMonitor": closed(
        {
            "jobLabel": {"type": "string"},
            "selector": SELECTOR,
            "namespaceSelector": NAMESPACES,
            "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
        },
        ("selector", "endpoints"),
    ),
    "PodMonitor": closed(
        {
            "jobLabel": {"type": "string"},
            "selector": SELECTOR,
            "namespaceSelector": NAMESPACES,
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
        },
        ("selector", "podMetricsEndpoints"),
    ),
    "PrometheusRule": closed(
        {
            "groups": {
                "type": "array",
                "items": closed(
                    {"name": {"type": "string"}, "rules": {"type": "array", "items": RULE}},
                    ("name", "rules"),
                ),
            }
        },
        ("groups",),
    ),
    "KafkaTopic": closed(
        {
            "topicName": {"type": "string"},
            "partitions": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1},
            "config": {"type": "object"},
        },
        ("topicName", "partitions", "replicas"),
    ),
}
API_VERSIONS = {
    "ServiceMonitor": {"monitoring.coreos.com/v1"},
    "PodMonitor": {"monitoring.coreos.com/v1"},
    "PrometheusRule": {"monitoring.coreos.com/v1"},
    "KafkaTopic": {"kafka.strimzi.io/v1beta2", "kafka.strimzi.io/v1"},
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_resources_use_only_fields_their_operators_know(scenario: str) -> None:
    """ServiceMonitor, PodMonitor, PrometheusRule and KafkaTopic specs hold no misspelt field.

    kubernetes-validate has no schema for custom resources; these are the fields the chart uses,
    as the Prometheus Operator's and Strimzi's API references spell them.
    """
    for manifest in render(scenario):
        kind = manifest["kind"]
        if kind not in CUSTOM_KINDS:
            continue
        assert manifest["apiVersion"] in API_VERSIONS[kind], kind
        assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}, kind
        assert set(manifest["metadata"]) <= {"name", "namespace", "labels", "annotations"}, kind
        jsonschema.validate(manifest["spec"], SPEC[kind])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_known_custom_resources(scenario: str) -> None:
    """Custom resources are the Prometheus Operator's and Strimzi's, and only when asked for."""
    kinds = {manifest["kind"] for manifest in render(scenario)}

    assert kinds - CUSTOM_KINDS <= {
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy",
        "Pod", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount",
    }  # fmt: skip
    if scenario == DEFAULTS:
        assert not kinds & CUSTOM_KINDS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_locked_down(scenario: str) -> None:
    """Non-root, read-only root, no capabilities, RuntimeDefault seccomp, no API token."""
    for name, spec in pod_specs(render(scenario)):
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_account_mounts_no_token(scenario: str) -> None:
    """The pods' ServiceAccount, when the chart makes one, never gets an API token mounted."""
    for account in of_kind(render(scenario), "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_workload_runs_a_service_the_image_has(scenario: str) -> None:
    """Each Deployment's args name a command of the image, and the services map one to one."""
    commands = {}
    for name, spec in pod_specs(render(scenario)):
        (container,) = spec["containers"]
        if "command" in container:  # the test hook runs a script with the image's python
            assert container["command"] == ["python", "-c"], name
            compile(container["args"][0], name, "exec")
            continue
        (command,) = container["args"]
        assert command_runs(command), f"{name}: postback-pipeline {command} would not start"
        commands[name.rsplit("-", 1)[-1]] = command

    assert commands == {"edge": "edge", "processor": "processor", "metrics": "metrics"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_accept_the_rendered_settings(scenario: str) -> None:
    """Each service starts with the environment the chart gives it, and reads every variable."""
    for name, deployment in deployments(scenario).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = Recording(env_of(container))

        try:
            SETTINGS[container["args"][0]](env)
        except SettingsError as error:
            pytest.fail(f"{name}: the service would exit 2: {error}")
        unread = set(env) - env.read
        assert not unread, f"{name}: variables no service reads (a typo?): {unread}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_use_healthz_and_readyz(scenario: str) -> None:
    """Liveness asks /healthz, readiness /readyz, and start-up allows Kafka's start-up timeout."""
    for name, deployment in deployments(scenario).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        startup = container["startupProbe"]
        timeout = float(env_of(container)["KAFKA_STARTUP_TIMEOUT_SECONDS"])

        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert startup["httpGet"]["path"] == "/healthz", name
        assert startup["periodSeconds"] * startup["failureThreshold"] > timeout + 10, name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_edge_rollout_loses_nothing(scenario: str) -> None:
    """The edge leaves the endpoints before SIGTERM and may finish its drain before SIGKILL."""
    pod = deployments(scenario)["edge"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env["EDGE_DRAIN_TIMEOUT_SECONDS"])

    assert pre_stop >= 5, "endpoints and ingress upstreams need seconds to drop the pod"
    assert env["EDGE_SHUTDOWN_DELAY_SECONDS"] == "0", "the preStop hook already waited"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 1
    assert deployments(scenario)["edge"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_consumers_may_finish_their_transactions(scenario: str) -> None:
    """Processor and metrics service get time to commit, and replace one pod at a time."""
    for name in ("processor", "metrics"):
        deployment = deployments(scenario)[name]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]

        assert pod["terminationGracePeriodSeconds"] >= 30, name
        assert "lifecycle" not in container, f"{name}: SIGTERM at once; it leaves its group itself"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_disruption_budgets_cover_every_workload(scenario: str) -> None:
    """Voluntary evictions (node drains) take at most one pod of each service at a time."""
    budgets = {component(b): b for b in of_kind(render(scenario), "PodDisruptionBudget")}
    if scenario == "minimal-values":
        assert set(budgets) == {"metrics"} - {"metrics"}
        return

    assert set(budgets) == {"edge", "processor", "metrics"}
    for name, budget in budgets.items():
        labels = deployments(scenario)[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_edge_autoscales_and_spreads(scenario: str) -> None:
    """The HPA owns the edge's replica count, and replicas spread over zones and nodes."""
    edge = deployments(scenario)["edge"]
    autoscalers = of_kind(render(scenario), "HorizontalPodAutoscaler")
    if scenario == "minimal-values":
        assert not autoscalers
        assert edge["spec"]["replicas"] == 1
        return

    (hpa,) = autoscalers
    assert hpa["spec"]["scaleTargetRef"]["name"] == edge["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in edge["spec"], "a fixed count would fight the autoscaler"
    keys = {c["topologyKey"] for c in edge["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policy_opens_only_the_service_port_and_kafka(scenario: str) -> None:
    """Ingress only on each pod's port; egress only DNS and the bootstrap servers' ports."""
    policies = of_kind(render(scenario), "NetworkPolicy")
    if scenario == "minimal-values":
        assert not policies
        return
    env = env_of(deployments(scenario)["edge"]["spec"]["template"]["spec"]["containers"][0])
    kafka_ports = {int(s.rsplit(":", 1)[1]) for s in env["KAFKA_BOOTSTRAP_SERVERS"].split(",")}

    assert {component(p) for p in policies} == {"edge", "processor", "metrics"}
    for policy in policies:
        ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
        assert ports == {53} | kafka_ports
        for rule in policy["spec"]["ingress"]:
            assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_network_policy_lets_the_helm_test_reach_a_fenced_edge() -> None:
    """With the edge reachable only from the ingress controller, the test pod still gets in."""
    manifests = render("production-values")
    (edge_policy,) = [p for p in of_kind(manifests, "NetworkPolicy") if component(p) == "edge"]
    (test_pod,) = of_kind(manifests, "Pod")
    peers = [peer for rule in edge_policy["spec"]["ingress"] for peer in rule.get("from", [])]

    selectors = [peer["podSelector"]["matchLabels"] for peer in peers if "podSelector" in peer]
    assert any(s.items() <= test_pod["metadata"]["labels"].items() for s in selectors)


def test_ingress_fits_the_edge_settings() -> None:
    """ingress-nginx lets the edge answer 413 and 503 itself, over TLS, on the postback paths."""
    manifests = render("production-values")
    (ingress,) = of_kind(manifests, "Ingress")
    env = env_of(
        deployments("production-values")["edge"]["spec"]["template"]["spec"]["containers"][0]
    )
    annotations = ingress["metadata"]["annotations"]
    body_limit = int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].removesuffix("k"))

    assert body_limit * 1024 > int(env["EDGE_MAX_BODY_BYTES"])
    deadline = float(env["EDGE_ANSWER_DEADLINE_SECONDS"])
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > deadline
    assert annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"] == "off"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["postbacks.example.com"], "secretName": "postbacks-example-com-tls"}
    ]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/postbacks"


def test_production_settings_reach_the_edge() -> None:
    """Allowlist, trusted proxies, sources and Basic credentials from a Secret reach the edge."""
    (container,) = deployments("production-values")["edge"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(container)
    settings = EdgeSettings.from_environ(env)

    assert env["EDGE_ALLOWED_CIDRS"] == "198.51.100.0/24,203.0.113.10,10.0.0.0/8"
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8"]
    assert settings.sources == {"mt", "mo", "helm-test"}
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v}
    assert refs["EDGE_BASIC_AUTH_PASSWORD"] == {"name": "postback-basic-auth", "key": "password"}
    assert container["image"].endswith("@sha256:" + "0123456789abcdef" * 4)


@pytest.mark.parametrize(
    ("scenario", "protocol", "mechanism", "mounts"),
    [
        ("strimzi-scram-values", "SASL_SSL", "SCRAM-SHA-512", {"kafka-ca"}),
        ("strimzi-mtls-values", "SSL", None, {"kafka-ca", "kafka-client"}),
        ("msk-values", "SASL_SSL", "SCRAM-SHA-512", set()),
        ("confluent-cloud-values", "SASL_SSL", "PLAIN", set()),
    ],
)
def test_managed_kafka_settings(
    scenario: str, protocol: str, mechanism: str | None, mounts: set[str]
) -> None:
    """SASL passwords come from Secrets, CA and client certificates are mounted as files."""
    for name, deployment in deployments(scenario).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        settings = SETTINGS[container["args"][0]](env_of(container))
        kafka = settings.kafka  # type: ignore[attr-defined]
        mounted = {m["name"] for m in container["volumeMounts"]} - {"tmp"}

        assert kafka.security_protocol == protocol, name
        assert (kafka.sasl_mechanism if kafka.uses_sasl else None) == mechanism, name
        assert mounted == mounts, name
        if mechanism:
            (password,) = [v for v in container["env"] if v["name"] == "KAFKA_SASL_PASSWORD"]
            assert "secretKeyRef" in password["valueFrom"], "a password never sits in the manifest"
        if "kafka-client" in mounts:
            assert kafka.ssl_certfile == "/etc/postback-pipeline/kafka-client/tls.crt"
            assert kafka.ssl_keyfile == "/etc/postback-pipeline/kafka-client/tls.key"


def test_strimzi_topics_match_what_the_services_use() -> None:
    """KafkaTopics carry the services' topic names and partitions; the services create none."""
    manifests = render("strimzi-scram-values")
    topics = {t["spec"]["topicName"]: t for t in of_kind(manifests, "KafkaTopic")}
    (container,) = deployments("strimzi-scram-values")["processor"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(container)

    assert set(topics) == {
        env["KAFKA_TOPIC_RAW"],
        env["KAFKA_TOPIC_EVENTS"],
        env["KAFKA_TOPIC_DLQ"],
        env["KAFKA_TOPIC_STATE"],
    }
    # The state topic as the processor would create it: a partition per raw partition, and
    # kept as long as a rebuild looks back.
    settings = ProcessorSettings.from_environ(env)
    span_ms = PartitionPipeline.from_settings(settings, "raw", 0).replay_span_ms
    wanted = state_topic(settings, span_ms)
    state = topics[env["KAFKA_TOPIC_STATE"]]["spec"]
    assert state["partitions"] == wanted.partitions == int(env["KAFKA_TOPIC_RAW_PARTITIONS"])
    assert state["config"]["retention.ms"] == wanted.retention_ms
    rendered = {key: str(value) for key, value in state["config"].items()}
    assert dict(wanted.configs).items() <= rendered.items()
    raw = topics[env["KAFKA_TOPIC_RAW"]]
    assert raw["spec"]["partitions"] == int(env["KAFKA_TOPIC_RAW_PARTITIONS"])
    assert raw["spec"]["config"]["retention.ms"] == int(env["KAFKA_TOPIC_RAW_RETENTION_MS"])
    assert raw["metadata"]["labels"]["strimzi.io/cluster"] == "events"
    assert raw["metadata"]["namespace"] == "kafka"
    assert raw["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert env["KAFKA_CREATE_TOPICS"] == "false"


@pytest.mark.parametrize(
    "scenario", ["strimzi-scram-values", "strimzi-mtls-values", "production-values"]
)
def test_scrape_resources_give_every_service_its_job(scenario: str) -> None:
    """With ServiceMonitors or PodMonitors, job is <fullname>-<component>, as the rules expect."""
    manifests = render(scenario)
    monitors = of_kind(manifests, "ServiceMonitor") + of_kind(manifests, "PodMonitor")
    services = {component(s): s for s in of_kind(manifests, "Service")}

    assert {component(m) for m in monitors} == {"edge", "processor", "metrics"}
    for monitor in monitors:
        name = component(monitor)
        job_label = monitor["spec"]["jobLabel"]
        pod_labels = deployments(scenario)[name]["spec"]["template"]["metadata"]["labels"]
        assert pod_labels[job_label] == services[name]["metadata"]["labels"][job_label]
        assert pod_labels[job_label] == f"pp-postback-pipeline-{name}"
        endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
        assert endpoints[0]["port"] == "http"
        assert endpoints[0]["path"] == "/metrics"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_dashboard_ships_for_the_grafana_sidecar() -> None:
    """The dashboard JSON is in a ConfigMap carrying the sidecar's label."""
    (config_map,) = of_kind(render("strimzi-scram-values"), "ConfigMap")

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert (CHART / "dashboards" / "postback-pipeline.json").read_text().strip() == config_map[
        "data"
    ]["postback-pipeline.json"].strip()


def test_helm_test_posts_to_the_edge_service() -> None:
    """`helm test` posts through the edge's Service, to an allowed source, with the credentials."""
    manifests = render("production-values")
    (pod,) = of_kind(manifests, "Pod")
    (edge_service,) = [s for s in of_kind(manifests, "Service") if component(s) == "edge"]
    env = env_of(pod["spec"]["containers"][0])

    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    name, port = edge_service["metadata"]["name"], edge_service["spec"]["ports"][0]["port"]
    assert env["EDGE_URL"] == f"http://{name}:{port}/postbacks/helm-test"
    assert env["EDGE_BASIC_AUTH_PASSWORD"].startswith("from-secret-password")


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("edge.replicas=3", "replicas"),
        ("kafka.securityProtocol=TLS", "securityProtocol"),
        ("edge.answerDeadlineSeconds=12", "answerDeadlineSeconds"),
        ("edge.headerTimeoutSeconds=10", "headerTimeoutSeconds"),
        ("edge.maxHeaderBytes=100", "maxHeaderBytes"),
        ("processor.dedupeWindowSeconds=600", "dedupeWindowSeconds"),
        ("edge.allowedCidrs[0]=everyone", "allowedCidrs"),
        ("kafka.bootstrapServers=kafka", "bootstrapServers"),
        ("monitoring.serviceMonitor.interval=30", "interval"),
    ],
)
def test_values_schema_rejects_mistakes(setting: str, complaint: str) -> None:
    """A typo or an impossible value stops `helm install` and names the value."""
    result = helm_template(*scenario_args(DEFAULTS), "--set", setting, check=False)

    assert result.returncode != 0
    assert complaint in result.stderr


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        (["kafka.securityProtocol=SASL_SSL"], "kafka.sasl.existingSecret"),
        (["kafka.securityProtocol=SASL_SSL", "kafka.sasl.existingSecret=s"], "kafka.sasl.username"),
        (["kafka.tls.caSecret=ca"], "kafka.tls"),
        (["edge.sources={mt}"], "tests.source"),
        (
            ["monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"],
            "not both",
        ),
    ],
)
def test_inconsistent_values_fail_with_the_value_name(settings: list[str], complaint: str) -> None:
    """Settings that only fail together are caught at render time, not at 3 a.m."""
    args = [arg for setting in settings for arg in ("--set", setting)]
    result = helm_template(*scenario_args(DEFAULTS), *args, check=False)

    assert result.returncode != 0
    assert complaint in result.stderr


@pytest.mark.parametrize(
    "settings",
    [
        [],
        ['edge.allowedCidrs=["198.51.100.0/24", "0.0.0.0/0"]'],
        ['edge.allowedCidrs=["::/0"]'],
        ['edge.allowedCidrs=["198.51.100.7/0"]'],
    ],
    ids=["defaults", "the world among others", "every IPv6 address", "a /0 in disguise"],
)
def test_the_chart_does_not_render_an_edge_anyone_may_post_to(settings: list[str]) -> None:
    """By default anyone could post forged delivery reports: the chart refuses to render, and
    says the three ways out."""
    result = helm_template(*[arg for s in settings for arg in ("--set-json", s)], check=False)

    assert result.returncode != 0
    assert "edge: anyone could post forged postbacks" in result.stderr
    for value in (
        "edge.allowedCidrs to the provider's addresses",
        "edge.basicAuth.existingSecret",
        "edge.allowAnySender=true",
    ):
        assert value in result.stderr


@pytest.mark.parametrize(
    ("setting", "any_sender"),
    [
        ('edge.allowedCidrs=["198.51.100.0/24", "2001:db8::/32"]', False),
        ('edge.basicAuth.existingSecret="postback-basic-auth"', False),
        ("edge.allowAnySender=true", True),
    ],
    ids=["allowlist", "credentials", "explicit opt-in"],
)
def test_an_allowlist_credentials_or_an_opt_in_let_the_edge_render_and_start(
    setting: str, any_sender: bool
) -> None:
    """Each of the three ways renders, and the edge starts with what the chart gives it;
    EDGE_ALLOW_ANY_SENDER is set only by the opt-in, and without it the edge itself would
    refuse the same open environment."""
    key = f"eventsPrivacy.pseudonymKey.existingSecret={PSEUDONYM_KEY_SECRET}"
    result = helm_template("--set-json", setting, "--set", key)
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (edge,) = [d for d in of_kind(manifests, "Deployment") if component(d) == "edge"]
    env = env_of(edge["spec"]["template"]["spec"]["containers"][0])

    EdgeSettings.from_environ(env)
    assert ("EDGE_ALLOW_ANY_SENDER" in env) is any_sender
    if any_sender:
        assert env["EDGE_ALLOW_ANY_SENDER"] == "true"
        del env["EDGE_ALLOW_ANY_SENDER"]
        with pytest.raises(SettingsError, match="EDGE_ALLOW_ANY_SENDER=true"):
            EdgeSettings.from_environ(env)


def test_chart_refuses_kubernetes_without_the_sleep_hook() -> None:
    """The preStop sleep action needs Kubernetes 1.30; older clusters are refused up front."""
    result = helm_template(*scenario_args(DEFAULTS), kube_version="1.29.0", check=False)

    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


def notes(tmp_path: Path, *settings: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template leaves it out, so a copy of the
    chart renders it inside a ConfigMap)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "zz-notes.yaml").write_text(
        '{{- define "test.notes" }}' + text + "{{- end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n'
    )
    args = [*REQUIRED_VALUES, *[arg for setting in settings for arg in ("--set", setting)]]
    output = run(
        tool("helm"), "template", "pp", str(chart), "--show-only", "templates/zz-notes.yaml", *args
    )
    rendered: str = yaml.safe_load(output.stdout)["data"]["notes"]
    return rendered


def test_notes_warn_about_idle_processors_and_an_open_edge(tmp_path: Path) -> None:
    """After install, the notes say which processors will idle and that anyone may post."""
    text = notes(
        tmp_path,
        "processor.replicaCount=8",
        "kafka.topics.raw.partitions=6",
        "edge.allowAnySender=true",
    )

    assert "2 processor(s) will sit idle" in text
    assert "NOTE: edge.allowAnySender=true: any address may post, without credentials" in text
    assert "helm test pp" in text


def test_notes_say_when_only_credentials_keep_others_out(tmp_path: Path) -> None:
    """With Basic credentials and no allowlist, the notes suggest the provider's addresses."""
    text = notes(tmp_path, "edge.basicAuth.existingSecret=postback-basic-auth")

    assert "only the Basic credentials keep others out" in text


def test_notes_stay_quiet_when_all_is_well(tmp_path: Path) -> None:
    """A production install's notes carry the postback URL and no warning."""
    text = notes(tmp_path, "edge.allowedCidrs={198.51.100.0/24}", "edge.ingress.enabled=true")

    assert "https://postbacks.example.com/postbacks/<source>" in text
    assert "NOTE" not in text


# What every render must say besides the setting under test: who may post to the edge.
ALLOWLIST = ("--set-json", 'edge.allowedCidrs=["198.51.100.0/24"]')


def processor_env(*settings: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The processor's container and environment, rendered with the chart's defaults, an edge
    allowlist and `--set` settings."""
    result = helm_template(*ALLOWLIST, *[arg for setting in settings for arg in ("--set", setting)])
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (processor,) = [d for d in of_kind(manifests, "Deployment") if component(d) == "processor"]
    (container,) = processor["spec"]["template"]["spec"]["containers"]
    return container, env_of(container)


def test_events_are_private_by_default_with_the_key_from_a_secret() -> None:
    """The processor pseudonymises numbers and withholds content; its key never sits in a
    manifest as a plain value."""
    container, env = processor_env(
        f"eventsPrivacy.pseudonymKey.existingSecret={PSEUDONYM_KEY_SECRET}"
    )
    settings = ProcessorSettings.from_environ(env)
    (key,) = [v for v in container["env"] if v["name"] == "EVENTS_PSEUDONYM_KEY"]

    assert settings.pseudonymise_numbers is True
    assert settings.include_content is False
    assert key["valueFrom"]["secretKeyRef"] == {
        "name": PSEUDONYM_KEY_SECRET,
        "key": "pseudonym-key",
    }


def test_a_key_given_as_a_value_is_rendered_into_a_secret() -> None:
    """Without an existing Secret the chart makes one and points the processor at it."""
    key = "k" * 32
    manifests = helm_template(*ALLOWLIST, "--set", f"eventsPrivacy.pseudonymKey.value={key}").stdout
    documents = [doc for doc in yaml.safe_load_all(manifests) if doc]
    (secret,) = of_kind(documents, "Secret")
    (processor,) = [d for d in of_kind(documents, "Deployment") if component(d) == "processor"]
    (container,) = processor["spec"]["template"]["spec"]["containers"]
    (reference,) = [v for v in container["env"] if v["name"] == "EVENTS_PSEUDONYM_KEY"]

    assert reference["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"]["pseudonym-key"]).decode() == key
    assert key not in json.dumps(processor)


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ([], "eventsPrivacy.pseudonymKey: set existingSecret"),
        (["eventsPrivacy.pseudonymKey.value=short"], "at least 32 characters"),
    ],
)
def test_privacy_without_a_key_fails_the_render(settings: list[str], complaint: str) -> None:
    """The chart asks for the pseudonym key instead of deploying a processor that cannot start."""
    result = helm_template(
        *ALLOWLIST, *[arg for s in settings for arg in ("--set", s)], check=False
    )

    assert result.returncode != 0
    assert complaint in result.stderr


def test_turning_privacy_off_needs_no_key() -> None:
    """Publishing numbers as given is an explicit choice, and then no Secret is involved."""
    _, env = processor_env(
        "eventsPrivacy.pseudonymiseNumbers=false", "eventsPrivacy.includeContent=true"
    )
    settings = ProcessorSettings.from_environ(env)

    assert "EVENTS_PSEUDONYM_KEY" not in env
    assert (settings.pseudonymise_numbers, settings.include_content) == (False, True)
