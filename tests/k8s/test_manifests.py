"""The Kubernetes manifests (k8s/): every overlay renders offline, every object passes strict
schema validation, and the manifests agree with the code (paths, port, settings, shutdown
timing, sizing, the config file), so a change on either side that breaks the other fails here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from bridge.cli import _parser
from bridge.service.server import HEALTH_PATH, METRICS_PATH, READY_PATH
from bridge.service.workers import STOP_TIMEOUT
from bridge.settings.config import DEFAULT_CONFIG_PATH, Settings, env_name, load_settings
from tests.k8s.tools import K8S, KUSTOMIZE, OVERLAYS, REPO, ensure, render

Obj = dict[str, Any]

# The oldest Kubernetes the manifests support and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Custom resources (no schema offline): checked field by field in test_service_monitor.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SECRET_NAME = "room-bridge"
SECRET_KEYS = {
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "OPENAI_API_KEY",
    "BRIDGE_DISPATCH_TOKEN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
}
# OpenTelemetry's own variables (bridge/tracing/export.py) and what they are built from.
OTEL_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "POD_NAME",
    "POD_NAMESPACE",
    "NODE_NAME",
}
# Environment variables a container may set besides the settings.
EXTRA_ENV = {"PROMETHEUS_MULTIPROC_DIR", *OTEL_ENV}
# Sizing (k8s/base/deployment.yaml): one worker per core, 8 sessions per worker; memory in MiB.
SESSIONS_PER_WORKER = 8
PARENT_MIB, WORKER_MIB, SESSION_MIB, HEADROOM = 100, 130, 15, 1.2
# The image's user and group (k8s/Dockerfile), repeated in every pod's securityContext.
UID = 10001


# ---- rendering and lookups -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    kustomize = ensure(KUSTOMIZE)
    return {o: [d for d in yaml.safe_load_all(render(o, kustomize)) if d] for o in OVERLAYS}


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def containers(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(Deployment, container) for every container of every Deployment."""
    for deployment in of_kind(objs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def cli_args(container: Obj) -> Any:
    """The container's arguments as `room-bridge` parses them (the image's ENTRYPOINT)."""
    assert "command" not in container, "keep the image's ENTRYPOINT (room-bridge)"
    return _parser().parse_args(container["args"])


def serve_containers(objs: list[Obj]) -> list[tuple[Obj, Obj]]:
    found = [(d, c) for d, c in containers(objs) if cli_args(c).command == "serve"]
    assert found, "no container runs `room-bridge serve`"
    return found


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def config_file(objs: list[Obj], deployment: Obj, container: Obj, path: Path) -> str:
    """The text of ``path`` inside the container: the ConfigMap mounted on its directory."""
    pod = deployment["spec"]["template"]["spec"]
    for mount in container.get("volumeMounts", []):
        if PurePosixPath(path).parent == PurePosixPath(mount["mountPath"]):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            config_map = named(objs, "ConfigMap", volume["configMap"]["name"])
            return str(config_map["data"][path.name])
    raise AssertionError(f"nothing mounted at {path.parent}")


def pod_settings(objs: list[Obj], deployment: Obj, container: Obj, tmp: Path) -> Settings:
    """The settings the container would load: its env (secrets and pod fields as stand-ins)
    over its config file (the mounted ConfigMap, or the image's config/bridge.toml)."""
    args = cli_args(container)
    if args.config is not None:
        path = tmp / "bridge.toml"
        path.write_text(config_file(objs, deployment, container, args.config))
    else:
        path = REPO / DEFAULT_CONFIG_PATH  # the image copies it to WORKDIR/config/bridge.toml
    env = {}
    for name, entry in env_of(container).items():
        if "value" in entry:
            env[name] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            env[name] = "stand-in-secret-" + "x" * 32
        elif entry["valueFrom"].get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[name] = "10.0.0.7"
        elif "fieldRef" in entry["valueFrom"]:  # the pod's name, namespace, node
            env[name] = "stand-in-field"
        else:
            raise AssertionError(f"{name}: unexpected valueFrom {entry['valueFrom']}")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("BRIDGE_", "LIVEKIT_", "OPENAI_")):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        return load_settings(path)


# ---- schema ----------------------------------------------------------------------------------


def schema_problem(obj: Obj, version: str) -> str | None:
    """Why ``obj`` fails strict validation for Kubernetes ``version``, or None."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return f"{exc.message} (a custom resource? see CUSTOM_KINDS)"
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_schema_valid_strict(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """No unknown or misspelt field, for the oldest and newest Kubernetes we support."""
    problems = []
    for obj in rendered[overlay]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert "namespace" not in obj["metadata"], f"{where}: manifests are namespace-agnostic"
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            problem = schema_problem(obj, version)
            if problem:
                problems.append(f"k8s/{overlay}: {where} (Kubernetes {version}): {problem}")
    assert not problems, "\n".join(problems)


def test_service_monitor(rendered: dict[str, list[Obj]]) -> None:
    """The one custom resource, checked by hand: it scrapes the bridge Service's /metrics."""
    objs = rendered["overlays/servicemonitor"]
    (monitor,) = of_kind(objs, "ServiceMonitor")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    services = [
        s
        for s in of_kind(objs, "Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["room-bridge"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] == METRICS_PATH
    # Only the overlay that asks for it has one.
    for overlay in OVERLAYS:
        if overlay != "overlays/servicemonitor":
            assert not of_kind(rendered[overlay], "ServiceMonitor"), overlay


# ---- the code's side: paths, port, settings --------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_vars_are_settings(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """The settings loader stops on an unknown BRIDGE_* variable: every name must be a setting."""
    known = {env_name(field) for field in Settings.model_fields} | EXTRA_ENV
    for deployment, container in containers(rendered[overlay]):
        where = f"{deployment['metadata']['name']}/{container['name']}"
        names = [e["name"] for e in container.get("env", [])]
        assert len(names) == len(set(names)), f"{where}: duplicate env var"
        assert not set(names) - known, f"{where}: not a setting: {sorted(set(names) - known)}"
        # envFrom would hide the names from this check (and any extra key would stop the bridge).
        assert "envFrom" not in container, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_settings_load(rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path) -> None:
    """Env plus config file as the pod has them load without error, and `serve` listens on
    every interface with JSON logs."""
    objs = rendered[overlay]
    for deployment, container in containers(objs):
        settings = pod_settings(objs, deployment, container, tmp_path)
        assert settings.log_format == "json"
    for deployment, container in serve_containers(objs):
        settings = pod_settings(objs, deployment, container, tmp_path)
        settings.require("livekit_api_key", "livekit_api_secret", "openai_api_key")
        assert (cli_args(container).host or settings.server_host) == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_port_match_the_server(
    rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path
) -> None:
    objs = rendered[overlay]
    for deployment, container in serve_containers(objs):
        settings = pod_settings(objs, deployment, container, tmp_path)
        port = cli_args(container).port or settings.server_port
        (http,) = (p for p in container["ports"] if p["name"] == "http")
        assert http["containerPort"] == port
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["readinessProbe"]["path"] == READY_PATH
        assert probes["livenessProbe"]["path"] == HEALTH_PATH
        assert probes["startupProbe"]["path"] == HEALTH_PATH
        for probe in probes.values():
            assert probe["port"] in ("http", port)
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == METRICS_PATH
        # The Service routes its `http` port to this container port.
        services = [
            s
            for s in of_kind(objs, "Service")
            if selects(s["spec"]["selector"], template["metadata"]["labels"])
        ]
        assert [s["metadata"]["name"] for s in services] == ["room-bridge"]
        (service_port,) = (p for p in services[0]["spec"]["ports"] if p["name"] == "http")
        assert service_port["targetPort"] in ("http", port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_the_drain(
    rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path
) -> None:
    """grace > preStop sleep + drain_timeout + the workers' stop timeout: Kubernetes must not
    SIGKILL a pod that is still letting its calls finish."""
    objs = rendered[overlay]
    for deployment, container in serve_containers(objs):
        settings = pod_settings(objs, deployment, container, tmp_path)
        pod = deployment["spec"]["template"]["spec"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = float(command[1])
        assert pre_stop >= 5, "give endpoints time to drop the pod before SIGTERM"
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > pre_stop + settings.drain_timeout + STOP_TIMEOUT, (
            f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain_timeout "
            f"{settings.drain_timeout} + worker stop {STOP_TIMEOUT}"
        )
        # ... but not absurdly more: the margin is for the hang-up, not a second drain.
        assert grace <= pre_stop + settings.drain_timeout + 300


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sizing_follows_the_formula(
    rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path
) -> None:
    """--workers = CPU cores; BRIDGE_MAX_SESSIONS = 8 per worker; memory for all of it."""
    objs = rendered[overlay]
    for deployment, container in serve_containers(objs):
        settings = pod_settings(objs, deployment, container, tmp_path)
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], "Guaranteed QoS"
        cores = cpu_cores(resources["limits"]["cpu"])
        workers = cli_args(container).workers or settings.workers
        assert workers == cores, f"--workers {workers} for {cores} cores"
        assert settings.max_sessions == SESSIONS_PER_WORKER * workers
        needed = PARENT_MIB + WORKER_MIB * workers + SESSION_MIB * settings.max_sessions
        memory = mebibytes(resources["limits"]["memory"])
        assert memory >= needed * HEADROOM, f"{memory} MiB < {needed} MiB x {HEADROOM}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    for deployment, container in containers(objs):
        where = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == UID, where
        assert pod["securityContext"]["runAsGroup"] == UID, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["enableServiceLinks"] is False, where
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert sc.get("runAsUser", UID) == UID, where
        assert sc.get("runAsGroup", UID) == UID, where
        # The one writable path (the Prometheus multiprocess directory lives under it).
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
        assert "emptyDir" in volume, where
        account = named(objs, "ServiceAccount", pod["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_link_can_look_like_a_setting(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    """Service links are off; were they on, <SERVICE>_PORT... must not start with BRIDGE_."""
    for service in of_kind(rendered[overlay], "Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        assert not prefix.startswith("BRIDGE_"), service["metadata"]["name"]


def test_config_map_is_config_bridge_toml(rendered: dict[str, list[Obj]]) -> None:
    expected = (REPO / DEFAULT_CONFIG_PATH).read_text()
    assert (K8S / "base" / "bridge.toml").read_text() == expected, (
        "k8s/base/bridge.toml differs from config/bridge.toml: "
        "cp config/bridge.toml k8s/base/bridge.toml"
    )
    for overlay in OVERLAYS:
        objs = rendered[overlay]
        for deployment, container in serve_containers(objs):
            path = cli_args(container).config
            assert path is not None, "serve runs with --config (the ConfigMap)"
            assert config_file(objs, deployment, container, path) == expected, overlay


# ---- secrets ---------------------------------------------------------------------------------


def test_secret_is_a_template_never_rendered(rendered: dict[str, list[Obj]]) -> None:
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    for version in KUBERNETES_VERSIONS:
        assert schema_problem(template, version) is None
    assert template["metadata"]["name"] == SECRET_NAME
    assert set(template["stringData"]) == SECRET_KEYS
    assert set(template["stringData"].values()) == {"replace-me"}
    for overlay in OVERLAYS:
        objs = rendered[overlay]
        # The only Secret ever rendered is the dev emulator's generated (not secret) key.
        rendered_secrets = [s["metadata"]["name"] for s in of_kind(objs, "Secret")]
        if overlay == "overlays/dev":
            assert [n.rsplit("-", 1)[0] for n in rendered_secrets] == ["room-bridge-emulator-key"]
        else:
            assert rendered_secrets == [], overlay
        for _, container in containers(objs):
            for name, entry in env_of(container).items():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == SECRET_NAME:
                    assert ref["key"] == name and name in SECRET_KEYS, (overlay, name)
    base_refs = {
        name
        for _, container in serve_containers(rendered["base"])
        for name, entry in env_of(container).items()
        if entry.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET_NAME
    }
    assert base_refs == SECRET_KEYS


# ---- dev overlay: the emulator ----------------------------------------------------------------


def test_dev_bridge_talks_to_the_emulator(rendered: dict[str, list[Obj]]) -> None:
    from bridge.emulator.app import create_app
    from bridge.emulator.options import EmulatorOptions

    objs = rendered["overlays/dev"]
    ((bridge, container),) = serve_containers(objs)
    assert bridge["spec"]["replicas"] == 1
    assert not of_kind(objs, "HorizontalPodAutoscaler")
    url = urlsplit(env_of(container)["OPENAI_BASE_URL"]["value"])
    assert url.scheme == "http" and url.path == "/v1"
    service = named(objs, "Service", str(url.hostname))
    (service_port,) = (p for p in service["spec"]["ports"] if p["port"] == url.port)
    (emulator,) = (
        d
        for d in of_kind(objs, "Deployment")
        if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    )
    emulator_container = emulator["spec"]["template"]["spec"]["containers"][0]
    args = cli_args(emulator_container)
    assert args.command == "emulator"
    assert args.host == "0.0.0.0"
    (http,) = (p for p in emulator_container["ports"] if p["name"] == "http")
    assert http["containerPort"] == args.port
    assert service_port["targetPort"] in ("http", args.port)
    # Both read the same key: what the bridge sends is what the emulator accepts.
    key_refs = {
        json.dumps(env_of(c)["OPENAI_API_KEY"]["valueFrom"], sort_keys=True)
        for c in (container, emulator_container)
    }
    assert len(key_refs) == 1
    # The emulator's readiness path is one of its routes.
    path = emulator_container["readinessProbe"]["httpGet"]["path"]
    app = create_app(Settings(), EmulatorOptions())
    routes = {getattr(r.resource, "canonical", None) for r in app.router.routes()}
    assert path in routes
    # NetworkPolicies let the bridge reach the emulator's HTTP port.
    bridge_labels = bridge["spec"]["template"]["metadata"]["labels"]
    emulator_labels = emulator["spec"]["template"]["metadata"]["labels"]
    allowed = [
        port
        for policy in of_kind(objs, "NetworkPolicy")
        if selects(policy["spec"]["podSelector"]["matchLabels"], bridge_labels)
        for rule in policy["spec"].get("egress", [])
        if any(
            selects(peer.get("podSelector", {}).get("matchLabels", {}), emulator_labels)
            for peer in rule.get("to", [])
        )
        for port in rule.get("ports", [])
    ]
    assert {"protocol": "TCP", "port": args.port} in allowed
    assert {"protocol": "UDP"} in allowed


# ---- availability: HPA, PDB, network ---------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_and_budget_cover_the_bridge(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    ((bridge, _),) = serve_containers(objs)
    labels = bridge["spec"]["template"]["metadata"]["labels"]
    (budget,) = of_kind(objs, "PodDisruptionBudget")
    assert selects(budget["spec"]["selector"]["matchLabels"], labels)
    assert budget["spec"]["maxUnavailable"] == 1
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", bridge["metadata"]["name"])
        assert "replicas" not in bridge["spec"], "the HPA owns the replica count"
        assert hpa["spec"]["minReplicas"] >= 2
        metrics = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if "resource" in m]
        assert metrics == ["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Ingress: the http port only. Egress: DNS, LiveKit (signalling and media), the model."""
    objs = rendered[overlay]
    ((bridge, _),) = serve_containers(objs)
    labels = bridge["spec"]["template"]["metadata"]["labels"]
    policy = named(objs, "NetworkPolicy", "room-bridge")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ingress == [{"protocol": "TCP", "port": "http"}]
    egress = {
        (p["protocol"], p["port"], p.get("endPort"))
        for rule in policy["spec"]["egress"]
        for p in rule["ports"]
    }
    required = {
        ("UDP", 53, None),
        ("TCP", 53, None),
        ("TCP", 443, None),  # LiveKit signalling behind a load balancer; the model's HTTPS
        ("TCP", 7880, None),  # LiveKit signalling, direct
        ("TCP", 7881, None),  # LiveKit ICE/TCP
        ("UDP", 50000, 60000),  # LiveKit ICE/UDP port range
        ("UDP", 3478, None),  # the model's WebRTC media
        ("TCP", 4318, None),  # traces (OTLP/HTTP)
    }
    assert required <= egress, sorted(required - egress)


# ---- the image -------------------------------------------------------------------------------


def test_dockerfile_matches_the_pods(rendered: dict[str, list[Obj]]) -> None:
    text = (K8S / "Dockerfile").read_text()
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    assert not [i for i in instructions if i.startswith("HEALTHCHECK")], "probes do that"
    assert len([i for i in instructions if i.startswith("FROM ")]) >= 2, "multi-stage"
    (user,) = (i.split()[1] for i in instructions if i.startswith("USER "))
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user)
    assert user == f"{UID}:{UID}", "numeric, and what runAsUser/runAsGroup say"
    (entrypoint,) = (i for i in instructions if i.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["room-bridge"]
    (cmd,) = (i for i in instructions if i.startswith("CMD "))
    default = _parser().parse_args(json.loads(cmd.removeprefix("CMD ")))
    assert default.command == "serve" and default.host == "0.0.0.0"
    (expose,) = (int(i.split()[1]) for i in instructions if i.startswith("EXPOSE "))
    assert expose == default.port
    # The image's config/bridge.toml is where `room-bridge` looks without --config.
    assert f"COPY {DEFAULT_CONFIG_PATH} {DEFAULT_CONFIG_PATH}" in instructions
    for _, container in serve_containers(rendered["overlays/prod"]):
        (http,) = (p for p in container["ports"] if p["name"] == "http")
        assert http["containerPort"] == expose


# ---- traces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_traces_are_optional_and_configured_the_standard_way(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    """The OTLP endpoint and headers come from the Secret and may be absent (tracing off); the
    sampler is one OpenTelemetry knows; the resource names the pod through the downward API,
    each variable defined before it is used (Kubernetes expands $(VAR) only then)."""
    from opentelemetry.sdk.trace.sampling import _KNOWN_SAMPLERS

    from bridge.tracing.export import tracing_wanted

    for _, container in serve_containers(rendered[overlay]):
        env = env_of(container)
        for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS"):
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": SECRET_NAME, "key": key, "optional": True}, (overlay, key)
        plain = {name: e["value"] for name, e in env.items() if "value" in e}
        assert plain["OTEL_TRACES_SAMPLER"] in _KNOWN_SAMPLERS
        assert 0.0 <= float(plain["OTEL_TRACES_SAMPLER_ARG"]) <= 1.0
        assert not tracing_wanted(plain), "tracing must stay off until an endpoint is given"
        order = [e["name"] for e in container["env"]]
        used = re.findall(r"\$\((\w+)\)", plain["OTEL_RESOURCE_ATTRIBUTES"])
        assert used and all(order.index(v) < order.index("OTEL_RESOURCE_ATTRIBUTES") for v in used)
        attributes = dict(p.split("=", 1) for p in plain["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert set(attributes) == {"k8s.pod.name", "k8s.namespace.name", "k8s.node.name"}
