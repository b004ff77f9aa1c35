"""The deployment files against the code: what the Dockerfile's image installs, what
compose.yaml configures and mounts, and what the alert rules and the dashboard query.

Docker does not run here, so the image is rebuilt the closest way there is: the files the
Dockerfile copies (less .dockerignore's) built and installed into a fresh venv the way
`docker build` does it, and its components imported from there.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib
import json
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
import venv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints
from packaging.requirements import Requirement
from prometheus_client import REGISTRY

from flotilla.embedded import free_port, nats_server_binary, redis_server_binary
from flotilla.settings import _GATEWAY_ALIASES, GatewaySettings, Settings

REPO = Path(__file__).parents[2]

OPERATOR_ENV = {"GATEWAY_API_KEYS": "key-1:acme"}
"""What an operator must set for compose.yaml (its header); everything else has a default."""

COMPONENT_MODULES = ("flotilla.cli", "router", "workers", "workers._litellm", "gateway._serve")
"""What `flotilla router|worker|gateway` import, and the LLM adapter of every non-mock model."""

NOT_IN_IMAGE = {"ops"}
"""pyproject's packages the image leaves out: its benchmarks and fuzzing need the dev extra."""

EXPOSED_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
"""What prometheus_client adds to a metric family's name in the exposition (gauges: none)."""

EXPORTER_IMAGES = {
    "gnatsd_": "natsio/prometheus-nats-exporter",
    "jetstream_": "natsio/prometheus-nats-exporter",
    "redis_": "oliver006/redis_exporter",
}
"""The metric name prefixes of the exporters in front of NATS and Redis, and their images."""

PROMETHEUS_OWN = {"up"}
"""Series Prometheus writes itself for every scrape target."""


# -- compose.yaml -------------------------------------------------------------------------------
@cache
def services() -> dict[str, Any]:
    """compose.yaml's services (YAML merge keys applied)."""
    services: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    return services


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (an empty value counts as
    unset, as with the colon forms compose.yaml uses)."""

    def substitute(match: re.Match[str]) -> str:
        found, op = env.get(match["name"]), match["op"] or ""
        if not found and op.endswith("?"):
            raise AssertionError(f"compose.yaml requires {match['name']}: {match['arg']}")
        return found or (match["arg"] if op.endswith("-") else "")

    return _VARIABLE.sub(substitute, value)


def environment(service: str) -> dict[str, str]:
    """A service's environment as compose passes it, given OPERATOR_ENV."""
    raw: dict[str, Any] = services()[service].get("environment", {})
    return {name: interpolate(str(value), OPERATOR_ENV) for name, value in raw.items()}


def fleet_services() -> list[str]:
    """The services that run the Dockerfile's image."""
    return [name for name, service in services().items() if "build" in service]


def services_of(image: str) -> list[str]:
    return [name for name, s in services().items() if s.get("image", "").startswith(image)]


@dataclass(frozen=True)
class Mount:
    service: str
    source: Path
    target: PurePosixPath


def bind_mounts() -> list[Mount]:
    """Every repository path that compose.yaml mounts into a container (short syntax)."""
    mounts = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            assert isinstance(volume, str), f"{name}: use the short volume syntax"
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mounts.append(Mount(name, REPO / source, PurePosixPath(target)))
    return mounts


def host_path(service: str, path: str) -> Path:
    """The repository file that `service` sees at `path`, through its bind mounts."""
    inside = PurePosixPath(path)
    for mount in bind_mounts():
        if mount.service == service and inside.is_relative_to(mount.target):
            return mount.source / inside.relative_to(mount.target)
    raise AssertionError(f"{service} mounts nothing at {path}")


def load(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def hostname(address: str) -> str:
    return urlsplit(address if "://" in address else f"//{address}").hostname or ""


def redis_command(service: str) -> tuple[Path, list[str]]:
    """The repository file a Redis node or Sentinel loads and its other redis-server arguments.
    A Sentinel rewrites its file, so it runs a copy (`cp -n <mounted> <in its volume>`)."""
    command: list[str] = services()[service]["command"]
    words = shlex.split(command[-1]) if command[0] == "sh" else command
    copies = {words[i + 3]: words[i + 2] for i, word in enumerate(words) if word == "cp"}
    config, *args = words[words.index("redis-server") + 1 :]
    return host_path(service, copies.get(config, config)), args


# -- Prometheus and Grafana, as the containers see their files --------------------------------
def prometheus_config() -> dict[str, Any]:
    flag = next(a for a in services()["prometheus"]["command"] if a.startswith("--config.file="))
    config: dict[str, Any] = load(host_path("prometheus", flag.partition("=")[2]))
    return config


def rule_files() -> list[Path]:
    files = []
    for pattern in prometheus_config()["rule_files"]:
        found = sorted(host_path("prometheus", pattern).parent.glob(PurePosixPath(pattern).name))
        assert found, f"rule_files {pattern} matches no file"
        files += found
    return files


def grafana_provisioning(kind: str) -> Iterator[dict[str, Any]]:
    """The entries of Grafana's provisioning files of `kind` (datasources, providers)."""
    folder = "dashboards" if kind == "providers" else kind
    for path in sorted(host_path("grafana", f"/etc/grafana/provisioning/{folder}").glob("*.y*ml")):
        yield from load(path)[kind]


def dashboards() -> list[Path]:
    providers = grafana_provisioning("providers")
    found = (host_path("grafana", p["options"]["path"]).glob("*.json") for p in providers)
    return sorted(path for paths in found for path in paths)


def queries() -> Iterator[str]:
    """The PromQL of every alert rule and dashboard panel."""
    for path in rule_files():
        yield from (rule["expr"] for group in load(path)["groups"] for rule in group["rules"])
    for path in dashboards():
        yield from _values(load(path), "expr")


def _values(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for name, value in node.items():
            yield from [value] if name == key else _values(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _values(item, key)


_PROMQL_NOT_NAMES = re.compile(
    r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"  # strings
    r"|\{[^}]*\}|\[[^\]]*\]"  # label matchers, ranges
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\$\w+"  # Grafana's variables
)
_PROMQL_WORD = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*+(?!\s*\()")  # a call's name excluded
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords, labels)."""
    words = _PROMQL_WORD.findall(_PROMQL_NOT_NAMES.sub(" ", expr))
    return {word for word in words if word.lower() not in _PROMQL_KEYWORDS | {"nan"}}


def exposed_metric_names() -> set[str]:
    """Every sample name the fleet's processes can expose (all their modules imported)."""
    for package in ("flotilla", "workers", "router", "gateway"):
        path = importlib.import_module(package).__path__
        for module in pkgutil.walk_packages(path, f"{package}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in EXPOSED_SUFFIXES.get(family.type, ("",))
    }


# -- the Dockerfile ------------------------------------------------------------------------------
@cache
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", "")
    lines = (line.strip() for line in text.splitlines())
    return [
        (keyword.upper(), args)
        for keyword, _, args in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def copied_sources() -> list[str]:
    """The build context's paths that COPY takes, each kept at its own path in the image."""
    sources = []
    for keyword, args in instructions():
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if keyword == "COPY" and not args.startswith("--from"):
            *paths, destination = words
            assert destination in (".", "./") or [destination.rstrip("/")] == paths, args
            sources += paths
    return sources


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV (but PATH)."""
    words = (w for k, args in instructions() if k == "ENV" for w in shlex.split(args))
    pairs = (word.partition("=") for word in words)
    return {name: value for name, _, value in pairs if name != "PATH"}


def image_extras() -> list[str]:
    runs = (args for keyword, args in instructions() if keyword == "RUN")
    found = (re.search(r"pip install .*\.\[([\w,-]+)\]", args) for args in runs)
    return [extra for match in found if match for extra in match[1].split(",")]


def dockerignore() -> list[str]:
    lines = (line.strip() for line in (REPO / ".dockerignore").read_text().splitlines())
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled here"
    return patterns


def ignored(relative: PurePosixPath, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matches the path or one of its parent directories; `*` stays
    within a name and `**` spans any number of directories."""
    return any(
        _matches(path.parts, tuple(pattern.split("/")))
        for path in (relative, *relative.parents[:-1])
        for pattern in patterns
    )


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    head = bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0])
    return head and _matches(parts[1:], pattern[1:])


def build_context(destination: Path) -> None:
    """Copy what the Dockerfile's COPY instructions would find in the build context."""
    patterns = dockerignore()
    destination.mkdir(parents=True, exist_ok=True)

    def skip(directory: str, names: list[str]) -> set[str]:
        base = PurePosixPath(Path(directory).relative_to(REPO))
        return {name for name in names if ignored(base / name, patterns)}

    for source in copied_sources():
        assert not ignored(PurePosixPath(source), patterns), f"{source} is in .dockerignore"
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, destination / source, ignore=skip)
        else:
            shutil.copy2(REPO / source, destination / source)


@dataclass(frozen=True)
class Image:
    root: Path
    venv: Path
    site_packages: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The image's environment: its ENV, its venv first on PATH."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        path = f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}"
        return {**env, **image_env(), "PATH": path, **extra}

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env = self.env(**extra)
        return subprocess.run(
            args, check=False, cwd=self.root, env=env, capture_output=True, text=True, timeout=100
        )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A venv with the package installed from the Dockerfile's copies and extras.

    pip builds it as in `docker build`: in isolation, with the backend pyproject's
    [build-system] names (from the package index, as the image's build gets it). The
    dependencies come from this venv through a .pth file, so none is downloaded."""
    root = tmp_path_factory.mktemp("image")
    build_context(root / "context")
    venv.create(root / "venv", with_pip=False)
    paths = {"base": str(root / "venv"), "platbase": str(root / "venv")}
    site_packages = Path(sysconfig.get_path("purelib", vars=paths))
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site_packages / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    built = Image(root, root / "venv", site_packages)
    extras = ",".join(image_extras())
    spec = f"{root / 'context'}[{extras}]" if extras else str(root / "context")
    pip = [sys.executable, "-m", "pip", "--python", str(root / "venv/bin/python"), "install"]
    result = built.run(*pip, "--no-deps", "-q", spec)
    assert result.returncode == 0, result.stderr
    return built


def packages() -> list[str]:
    """The top-level packages pyproject's package discovery installs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return [name.rstrip("*") for name in found]


@dataclass(frozen=True)
class Probe:
    """A stand-in for one component's HTTP port: /metrics or /healthz, answering `status`."""

    path: str
    status: int

    def serve(self) -> http.server.ThreadingHTTPServer:
        probe = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(probe.status if self.path == probe.path else 404)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll: shutdown() waits for the loop's next look at its flag
        loop = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        loop.start()
        return server


def healthcheck(image: Image, port_env: str | None, probe: Probe | None) -> int:
    """The exit status of the Dockerfile's HEALTHCHECK with `probe` served on `port_env`'s port
    (the other component port closed)."""
    instruction = next(args for keyword, args in instructions() if keyword == "HEALTHCHECK")
    ports = {"FLOTILLA_METRICS_PORT": str(free_port()), "GATEWAY_PORT": str(free_port())}
    server = probe.serve() if probe else None
    if server and port_env:
        ports[port_env] = str(server.server_address[1])
    try:
        return image.run("sh", "-c", instruction.partition(" CMD ")[2], **ports).returncode
    finally:
        if server:
            server.shutdown()
            server.server_close()


# -- compose: structure and the servers' own checks ------------------------------------------------
def test_bind_mounts_are_repository_paths() -> None:
    mounts = bind_mounts()
    assert {m.service for m in mounts} >= {"nats-1", "prometheus", "grafana", "sentinel-1"}
    for mount in mounts:
        assert mount.source.exists(), mount
        assert mount.source.resolve().is_relative_to(REPO), mount


def test_mounted_yaml_and_json_configs_parse() -> None:
    mounted = [m.source for m in bind_mounts()]
    files = {f for path in mounted for f in ([path] if path.is_file() else path.rglob("*"))}
    configs = [f for f in files if f.suffix in (".yml", ".yaml", ".json")]
    assert len(configs) >= 5
    for path in configs:
        assert isinstance(load(path), dict), path


def test_nats_nodes_accept_their_configuration() -> None:
    nodes = services_of("nats:")
    assert len(nodes) == 3
    for name in nodes:
        command = services()[name]["command"]
        config = host_path(name, command[command.index("--config") + 1])
        env = {**os.environ, **environment(name)}
        check = [nats_server_binary(), "--config", str(config), "-t"]
        result = subprocess.run(
            check, check=False, env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr


def test_redis_nodes_and_sentinels_accept_their_configuration(tmp_path: Path) -> None:
    """redis-server reads a node's file and command line, then exits: told to listen on no port
    (`--port 0`), it stops right after the configuration has been applied."""
    nodes = services_of("redis:")
    assert len(nodes) == 5
    for name in nodes:
        config, args = redis_command(name)
        copy = tmp_path / f"{name}.conf"  # its `dir` (the volume) made a local one
        copy.write_text(re.sub(r"(?m)^dir .*$", f"dir {tmp_path}", config.read_text()))
        check = [redis_server_binary(), str(copy), *args, "--port", "0"]
        result = subprocess.run(check, check=False, capture_output=True, text=True, timeout=30)
        assert "Configured to not listen anywhere" in result.stdout, result.stdout + result.stderr


def test_every_host_the_configs_name_is_a_compose_service() -> None:
    env = environment("worker")
    named = {hostname(url) for url in env["FLOTILLA_NATS_URL"].split(",")}
    named |= {hostname(address) for address in env["FLOTILLA_REDIS_SENTINELS"].split(",")}
    named |= set(re.findall(r"nats-route://([\w-]+)", (REPO / "ops/nats/cluster.conf").read_text()))
    sentinel_conf = (REPO / "ops/redis/sentinel.conf").read_text()
    named |= set(re.findall(r"sentinel monitor \S+ (\S+)", sentinel_conf))
    for job in prometheus_config()["scrape_configs"]:
        named |= {hostname(t) for c in job.get("static_configs", []) for t in c["targets"]}
        named |= {name for c in job.get("dns_sd_configs", []) for name in c["names"]}
        relabelled = job.get("relabel_configs", [])
        named |= {hostname(r["replacement"]) for r in relabelled if "replacement" in r}
    assert not named - set(services()) - {"localhost"}


def test_the_sentinels_watch_the_master_the_fleet_names() -> None:
    sentinel_conf = (REPO / "ops/redis/sentinel.conf").read_text()
    monitored = re.findall(r"sentinel monitor (\S+)", sentinel_conf)
    assert monitored == [environment("worker")["FLOTILLA_REDIS_SENTINEL_MASTER"]]


# -- compose: the fleet's settings -------------------------------------------------------------
def test_fleet_variables_are_settings() -> None:
    known = {*Settings().to_env(), *GatewaySettings().to_env(), *_GATEWAY_ALIASES.values()}
    used = {name for s in fleet_services() for name in environment(s)} | set(image_env())
    fleet = {name for name in used if name.startswith(("FLOTILLA_", "GATEWAY_"))}
    assert len(fleet) > 10
    assert not fleet - known


def test_routers_workers_and_gateways_share_the_fleet_settings() -> None:
    """A setting every component reads (the gateway's tenant secrets included: workers sign
    callbacks and webhooks with them) has one value across the fleet."""
    shared = {*Settings().to_env(), *_GATEWAY_ALIASES.values()}
    views = {s: {k: v for k, v in environment(s).items() if k in shared} for s in fleet_services()}
    assert set(views) == {"router", "worker", "gateway"}
    for service, view in views.items():
        assert view == views["worker"], service


def test_fleet_environment_builds_clustered_settings() -> None:
    settings = Settings.from_env({**image_env(), **environment("worker")})
    assert len(settings.nats_servers) == settings.replicas == len(services_of("nats:"))
    assert len(settings.redis_sentinels) == 3 and settings.wait_replicas == 1
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9464)
    gateway = GatewaySettings.from_env({**image_env(), **environment("gateway")})
    assert (gateway.host, gateway.api_keys) == ("0.0.0.0", OPERATOR_ENV["GATEWAY_API_KEYS"])


# -- monitoring ------------------------------------------------------------------------------------
def test_prometheus_scrapes_each_component_on_its_port() -> None:
    scraped = set()
    for job in prometheus_config()["scrape_configs"]:
        for config in job.get("dns_sd_configs", []):
            for name in config["names"]:
                env = {**image_env(), **environment(name)}
                gateway = services()[name]["command"] == ["gateway"]
                port = env["GATEWAY_PORT"] if gateway else env["FLOTILLA_METRICS_PORT"]
                assert config["port"] == int(port), (job["job_name"], name)
                scraped.add(name)
    assert scraped == set(fleet_services())


def test_promql_metric_names_leave_out_functions_labels_and_keywords() -> None:
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_bucket{b="c"}[5m]))) > 1 or absent(d)'
    assert metric_names(expr) == {"a_bucket", "d"}


def test_alerts_and_dashboards_query_metrics_that_exist() -> None:
    """Each name is exported by the fleet's code or by an exporter that compose.yaml runs."""
    exported = exposed_metric_names()
    expressions = list(queries())
    assert len(rule_files()) >= 2 and dashboards()
    assert all(metric_names(expr) for expr in expressions)
    names = [(name, expr) for expr in expressions for name in metric_names(expr)]
    assert len({name for name, _ in names if name in exported}) > 20
    for name, expr in names:
        if name in exported or name in PROMETHEUS_OWN:
            continue
        images = [image for prefix, image in EXPORTER_IMAGES.items() if name.startswith(prefix)]
        assert images and services_of(images[0] + ":"), f"{name!r} in {expr}"


def test_grafana_shows_the_provisioned_dashboards_and_datasource() -> None:
    home = environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home) in dashboards()
    provisioned = {source["uid"] for source in grafana_provisioning("datasources")}
    for path in dashboards():
        used = {source["uid"] for source in _values(load(path), "datasource")}
        assert used and used <= provisioned, path


# -- the image ------------------------------------------------------------------------------------
def test_image_installs_and_imports_every_component(image: Image) -> None:
    copied = [package for package in packages() if package in copied_sources()]
    assert set(packages()) - NOT_IN_IMAGE <= set(copied)
    script = (
        "import importlib, json, sys; "
        "print(json.dumps([importlib.import_module(m).__file__ for m in sys.argv[1:]]))"
    )
    result = image.run("python", "-I", "-c", script, *copied, *COMPONENT_MODULES)
    assert result.returncode == 0, result.stderr
    for file in json.loads(result.stdout):
        assert Path(file).is_relative_to(image.site_packages), file
    usage = image.run("flotilla", "--help")
    assert usage.returncode == 0, usage.stderr
    assert {"router", "worker", "gateway"} <= set(re.findall(r"\w+", usage.stdout))


def test_image_installs_litellm_for_real_models(image: Image) -> None:
    script = "import importlib.metadata as m; print('\\n'.join(m.requires('flotilla')))"
    result = image.run("python", "-I", "-c", script)
    assert result.returncode == 0, result.stderr
    requirements = [Requirement(line) for line in result.stdout.splitlines()]
    through_extras = {
        r.name
        for r in requirements
        for extra in image_extras()
        if r.marker and r.marker.evaluate({"extra": extra})
    }
    assert "litellm" in through_extras
    assert image_env()["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


@pytest.mark.parametrize(
    ("port_env", "probe", "healthy"),
    [
        ("FLOTILLA_METRICS_PORT", Probe("/metrics", 200), True),  # a router or worker
        ("GATEWAY_PORT", Probe("/healthz", 200), True),  # a gateway
        ("GATEWAY_PORT", Probe("/healthz", 503), False),  # a gateway without NATS or Redis
        (None, None, False),  # nothing answers
    ],
)
def test_healthcheck_probes_the_component_port(
    image: Image, port_env: str | None, probe: Probe | None, healthy: bool
) -> None:
    assert (healthcheck(image, port_env, probe) == 0) is healthy
