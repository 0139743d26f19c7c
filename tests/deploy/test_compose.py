"""The laptop stack (infra/docker-compose.yml, the Dockerfile, Prometheus and Grafana
provisioning). Docker is not needed: the files are checked against the repository
and the code, so a renamed folder, command or setting breaks this test and not a
colleague's `docker compose up`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from aimtp.settings import RelaySettings, ServerSettings, TriggerSettings, WatcherSettings
from tests.deploy.support import ROOT, SECRET_SETTINGS, aimtp_command_error, settings_errors

COMPOSE_FILE = ROOT / "infra" / "docker-compose.yml"
COMPOSE_DIR = COMPOSE_FILE.parent
AIMTP_IMAGE = "aimtp:dev"

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found: dict[str, Service] = compose["services"]
    return found


def aimtp_services(services: dict[str, Service]) -> Iterator[tuple[str, Service]]:
    for name, service in services.items():
        if service.get("image") == AIMTP_IMAGE:
            yield name, service


def bind_mounts(service: Service) -> Iterator[tuple[Path, PurePosixPath]]:
    """(repository path, container path) of each bind mount; named volumes skipped."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            yield (COMPOSE_DIR / source).resolve(), PurePosixPath(target)


def repo_path(service: Service, container_path: str) -> Path | None:
    """Where ``container_path`` of ``service`` comes from in the repository."""
    path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    return None


def test_every_referenced_file_exists(services: dict[str, Service]) -> None:
    referenced: list[Path] = []
    for service in services.values():
        build = service.get("build")
        if build is not None:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build["context"])
            referenced.append(context)
            dockerfile = "Dockerfile" if isinstance(build, str) else build["dockerfile"]
            referenced.append(context / dockerfile)
        referenced += [source for source, _ in bind_mounts(service)]
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            referenced.append(COMPOSE_DIR / env_file)
    assert len(referenced) >= 3, "build context, Dockerfile and mounts expected"
    missing = [str(p.resolve()) for p in referenced if not p.exists()]
    assert not missing, missing


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_aimtp_services_run_real_commands(services: dict[str, Service]) -> None:
    commands = {}
    for name, service in aimtp_services(services):
        assert "entrypoint" not in service, f"{name}: the image's entrypoint is `aimtp`"
        command = service["command"]
        assert aimtp_command_error(command) is None, f"{name}: {aimtp_command_error(command)}"
        commands[name] = command[: 2 if command[0] in {"db", "kafka"} else 1]
    assert sorted(commands.values()) == sorted(
        [
            ["server"],
            ["relay"],
            ["trigger"],
            ["watcher"],
            ["db", "init"],
            ["kafka", "init"],
            ["controller-sim"],
        ]
    )


def test_dependencies_are_defined_and_their_conditions_can_be_met(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on undefined {dependency}"
            other = services[dependency]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in other, f"{dependency} has no healthcheck for {name}"
            elif spec["condition"] == "service_completed_successfully":
                # A one-shot that restarts after success would never count as completed.
                assert other.get("restart", "no") in {"no", "on-failure"}, dependency
            else:
                assert spec["condition"] == "service_started", spec


def test_the_processes_wait_for_the_schema_and_the_topics(services: dict[str, Service]) -> None:
    waits = {name: set(service.get("depends_on", {})) for name, service in aimtp_services(services)}
    assert waits["db-init"] == {"mysql"}
    assert waits["kafka-init"] == {"kafka"}
    for name in ("server", "relay", "trigger", "watcher"):
        assert "db-init" in waits[name], name
    for name in ("relay", "trigger"):
        assert "kafka-init" in waits[name], name


def test_environment_is_made_of_real_settings(services: dict[str, Service]) -> None:
    for name, service in aimtp_services(services):
        env = {key: str(value) for key, value in service["environment"].items()}
        assert not settings_errors(env), f"{name}: {settings_errors(env)}"
        # Inside a container the loopback default would hide the process from the others.
        assert env["AIMTP_HTTP_HOST"] == env["AIMTP_OPS_HOST"] == "0.0.0.0", name  # noqa: S104
        assert set(env) >= SECRET_SETTINGS, f"{name}: the dev credentials are missing"


def process_ports(env: dict[str, str]) -> dict[str, int]:
    return {
        "server": ServerSettings.from_env(env).http_port,
        "relay": RelaySettings.from_env(env).relay_metrics_port,
        "trigger": TriggerSettings.from_env(env).trigger_metrics_port,
        "watcher": WatcherSettings.from_env(env).watcher_metrics_port,
    }


def test_healthchecks_ask_each_process_if_it_is_ready(services: dict[str, Service]) -> None:
    for name, port in process_ports(services["server"]["environment"]).items():
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check, name


def test_prometheus_scrapes_every_process(services: dict[str, Service]) -> None:
    prometheus = services["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = repo_path(prometheus, config_flag.split("=", 1)[1])
    assert config_path == ROOT / "infra" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    scraped = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            scraped |= {(host, int(dns["port"])) for host in dns["names"]}
    for host, _ in scraped:
        assert host in services or host == "127.0.0.1", f"scrape target {host} is no service"
    expected = process_ports(services["server"]["environment"])
    assert set(expected.items()) <= scraped


def test_grafana_is_provisioned_from_the_repository(services: dict[str, Service]) -> None:
    grafana = services["grafana"]
    provisioning = repo_path(grafana, grafana["environment"]["GF_PATHS_PROVISIONING"])
    assert provisioning == ROOT / "infra" / "grafana" / "provisioning"
    (datasources,) = [
        yaml.safe_load(p.read_text()) for p in (provisioning / "datasources").glob("*.yml")
    ]
    (prometheus,) = datasources["datasources"]
    url = re.fullmatch(r"http://([\w-]+):(\d+)", prometheus["url"])
    assert url is not None, prometheus["url"]
    host, port = url.groups()
    assert host == "prometheus"
    assert f"127.0.0.1:{port}:{port}" in services["prometheus"]["ports"]
    (dashboards,) = [
        yaml.safe_load(p.read_text()) for p in (provisioning / "dashboards").glob("*.yml")
    ]
    (provider,) = dashboards["providers"]
    # The dashboard JSON itself lives in infra/grafana/dashboards.
    folder = repo_path(grafana, provider["options"]["path"])
    assert folder == ROOT / "infra" / "grafana" / "dashboards"


# --- the image --------------------------------------------------------------------------

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def copied_sources() -> list[str]:
    sources = []
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, re.M):
        words = [w for w in line.split() if not w.startswith("--")]
        if "--from=" not in line:
            sources += words[:-1]
    return sources


def test_the_image_contains_every_package_and_the_schema() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    sources = copied_sources()
    missing = set(packages) - set(sources)
    assert not missing, f"the Dockerfile does not copy {missing}"
    # `aimtp db init` reads db/schema.sql from the source tree.
    assert "db" in sources
    for source in sources:
        assert (ROOT / source).exists(), source


def test_the_build_context_keeps_what_the_image_copies() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for source in copied_sources():
        assert source.split("/")[0] not in ignored, f".dockerignore drops {source}"


def test_the_image_installs_the_lock_without_dev_tools_and_runs_aimtp() -> None:
    assert re.search(r"^RUN uv sync --frozen --no-dev$", DOCKERFILE, re.M)
    assert re.search(r'^ENTRYPOINT \["aimtp"\]$', DOCKERFILE, re.M)
    # The same uv that the Makefile uses resolves the same lock file the same way.
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv is not None
    assert f"uv=={makefile_uv[1]}" in DOCKERFILE
    user = re.findall(r"^USER\s+(\S+)$", DOCKERFILE, re.M)[-1]
    assert int(user.split(":")[0]) >= 1000, "the image must not run as root or a system user"
