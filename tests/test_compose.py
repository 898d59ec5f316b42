"""docker-compose.yml, the Dockerfile, .env.example and .dockerignore, checked without Docker.

Each check is a function returning the problems it finds; the tests run it on the real files,
and the `*_catches_*` tests show it on broken copies, so a check that can never fail is caught.

The stack: `api` (`shoplens serve --no-pages`: the stores, the models, the HTTP API, the job
worker and the catalog schedule) on `qdrant` and `postgres`, and `storefront` (`shoplens pages`),
a client of the API that needs no store; the `cluster` profile repeats the pair on three Qdrant
nodes with its own PostgreSQL.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import fnmatch
import http.server
import importlib.metadata
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from pydantic import AliasChoices, ValidationError

from cli.main import build_parser
from server import schemas
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
INSTALL_SH = ROOT / "scripts" / "install.sh"
PYPROJECT = ROOT / "pyproject.toml"

DEFAULT_SERVICES = {"qdrant", "postgres", "api", "storefront"}
CLUSTER_NODES = ["qdrant-node1", "qdrant-node2", "qdrant-node3"]
CLUSTER_APPS = {"api-cluster", "storefront-cluster"}
GONE = {"scheduler", "scheduler-cluster"}  # the server runs the schedule now
STACKS = {"api": "storefront", "api-cluster": "storefront-cluster"}  # server -> its pages
API_PORT, PAGES_PORT = 8000, 8501
SERVER_ARGV = ["shoplens", "serve", "--no-pages", "--api-port", str(API_PORT), "--address", "0.0.0.0"]
PAGES_ARGV = ["shoplens", "pages", "--port", str(PAGES_PORT), "--address", "0.0.0.0"]
P2P_PORT = 6335


# -- reading the files ----------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def env_example_lines() -> list[tuple[str, str, bool]]:
    """(name, value, commented_out) for every NAME=value line of .env.example."""
    found = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            found.append((m.group(2), m.group(3).strip(), bool(m.group(1))))
    return found


def sample_env() -> dict[str, str]:
    """What `cp .env.example .env` gives compose for interpolation."""
    return {name: value for name, value, commented in env_example_lines() if not commented}


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def variables(text: str) -> list[tuple[str, str | None, str]]:
    """(name, operator, word) of every ${...}/$NAME in a string (operator None: plain)."""
    out = []
    for m in _VAR.finditer(text):
        if m.group(0) == "$$":
            continue
        out.append((m.group(1) or m.group(4), m.group(2), m.group(3) or ""))
    return out


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of one value (strings inside lists and maps too)."""
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, word = m.group(1) or m.group(4), m.group(2), m.group(3) or ""
        is_set, current = name in env, env.get(name, "")
        if op in (":-", "-"):
            return current if (current if op == ":-" else is_set) else word
        if op in (":?", "?"):
            if not (current if op == ":?" else is_set):
                raise KeyError(f"${{{name}}} is required ({word})")
            return current
        if op in (":+", "+"):
            return word if (current if op == ":+" else is_set) else ""
        return current

    return _VAR.sub(sub, value)


def required_only(env: dict[str, str]) -> dict[str, str]:
    """Only the values compose cannot do without: every ${VAR:-default} takes its default."""
    needed = {n for n, op, _ in variables(COMPOSE.read_text(encoding="utf-8")) if op in (None, ":?", "?")}
    return {k: v for k, v in env.items() if k in needed}


def services_of(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any], env: dict[str, str]) -> list[str]:
    cmd = interpolate(service.get("command") or [], env)
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def is_app(service: dict[str, Any]) -> bool:
    return "build" in service


def parsed(argv: list[str]) -> argparse.Namespace | None:
    """`shoplens ARGS` as cli.main.build_parser() reads it, or None when it does not parse."""
    if argv[:1] != ["shoplens"]:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return build_parser().parse_args(argv[1:])
    except SystemExit:
        return None


def role(service: dict[str, Any], env: dict[str, str]) -> str | None:
    """'serve' (the server), 'pages' (its client) or None, from an app service's command."""
    if not is_app(service):
        return None
    args = parsed(command(service, env))
    return args.command if args is not None and args.command in ("serve", "pages") else None


def healthcheck_test(service: dict[str, Any]) -> str | None:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    if check.get("disable") or not test or test in ("NONE", ["NONE"]):
        return None
    return test if isinstance(test, str) else " ".join(map(str, test))


def is_server(service: dict[str, Any]) -> bool:
    image = str(service.get("image", ""))
    return bool(
        service.get("ports")
        or service.get("expose")
        or re.match(r"^(docker\.io/)?(qdrant/qdrant|(library/)?postgres)(:|@|$)", image)
        or command(service, sample_env())[1:2] in (["serve"], ["pages"])
    )


def settings_env_names() -> set[str]:
    """The environment names Settings reads (prefix + field, or the field's aliases)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def settings_of(service: dict[str, Any], env: dict[str, str], mp: pytest.MonkeyPatch) -> Settings:
    """The Settings the container builds: its interpolated environment and nothing else."""
    values = interpolate(environment(service), env)
    for var in settings_env_names() | set(values):
        mp.delenv(var, raising=False)
    for var, value in values.items():
        mp.setenv(var, value)
    return Settings(_env_file=None)


def published(entry: Any, env: dict[str, str]) -> tuple[str, list[int], int]:
    """(host ip, host ports, container port) of one `ports:` entry; no host ports: unpublished
    or an ephemeral one. Raises ValueError on an entry compose would not take."""
    if isinstance(entry, dict):
        ip = str(interpolate(entry.get("host_ip", ""), env))
        host, target = str(interpolate(entry.get("published", ""), env)), str(entry["target"])
    else:
        text = str(interpolate(str(entry), env)).split("/", 1)[0]
        parts = text.rsplit(":", 2)
        ip, host, target = (["", ""] + parts)[-3:] if len(parts) < 3 else parts
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", host) if host else None
    if host and not m:
        raise ValueError(f"host port {host!r}")
    if not target.isdigit():
        raise ValueError(f"container port {target!r}")
    ports = list(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)) if m else []
    if m and (not ports or not all(0 < p < 65536 for p in ports)):
        raise ValueError(f"host ports {host!r}")
    return ip, ports, int(target)


# -- the checks -----------------------------------------------------------------------------


def check_services_present(compose: dict[str, Any]) -> list[str]:
    services = services_of(compose)
    problems = [
        f"service {name} is missing"
        for name in sorted(DEFAULT_SERVICES | set(CLUSTER_NODES) | CLUSTER_APPS)
        if name not in services
    ]
    problems += [
        f"service {name} should be gone: the api server runs the schedule" for name in sorted(GONE & services.keys())
    ]
    for name in sorted(DEFAULT_SERVICES & services.keys()):
        if services[name].get("profiles"):
            problems.append(f"{name} must start by default (no profiles), has {services[name]['profiles']}")
    for name in sorted((set(CLUSTER_NODES) | CLUSTER_APPS) & services.keys()):
        if "cluster" not in (services[name].get("profiles") or []):
            problems.append(f"{name} must be in the cluster profile")
    for name, service in services.items():
        if is_app(service) and "container_name" in service:
            problems.append(f"{name}: a container_name keeps it from scaling (--scale {name}=3)")
    return problems


def image_is_pinned(image: str) -> bool:
    m = re.match(
        r"^(?P<name>[^@]+?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*))?(?P<digest>@sha256:[0-9a-f]{64})?$", image
    )
    if not m or ("/" in (m.group("tag") or "")):
        return False
    tag = m.group("tag")
    return bool(m.group("digest")) or bool(tag and tag != "latest" and re.search(r"\d", tag))


def check_images(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in services_of(compose).items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            if not dockerfile.is_file():
                problems.append(f"{name}: builds from {dockerfile}, which does not exist")
            if "image" in service and not image_is_pinned(str(service["image"])):
                problems.append(f"{name}: the built image is tagged {service['image']!r}, not a version")
        elif "image" not in service:
            problems.append(f"{name}: neither image nor build")
        elif not image_is_pinned(str(service["image"])):
            problems.append(f"{name}: image {service['image']!r} is not pinned to a version")
    return problems


def check_healthchecks(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    problems = []
    for name, service in services_of(compose).items():
        test = healthcheck_test(service)
        if is_server(service) and test is None:
            problems.append(f"{name} runs a server but has no healthcheck")
        image = str(service.get("image", ""))
        if test and image.startswith("qdrant/qdrant") and re.search(r"\b(curl|wget)\b", test):
            problems.append(f"{name}: the qdrant image has neither curl nor wget: {test}")
        if test and image.startswith("postgres") and "pg_isready" not in test:
            problems.append(f"{name}: postgres should be checked with pg_isready")
        if test is None or not is_app(service):
            continue
        # The app image is python:3.11-slim: no curl, no wget; python's urllib asks the port the
        # command listens on.
        args = parsed(command(service, env))
        wanted = {
            "serve": f"http://127.0.0.1:{getattr(args, 'api_port', None)}/api/v1/health",
            "pages": f"http://127.0.0.1:{getattr(args, 'port', None)}/_stcore/health",
        }.get(getattr(args, "command", ""))
        check = (service.get("healthcheck") or {}).get("test")
        if re.search(r"\b(curl|wget)\b", test) or not isinstance(check, list) or check[:3] != ["CMD", "python", "-c"]:
            problems.append(
                f"{name}: the app image has no curl or wget; check with [CMD, python, -c, <urllib code>], not {test}"
            )
        elif wanted and (wanted not in test or "urllib.request" not in test):
            problems.append(
                f"{name}: the healthcheck should ask {wanted} (the command's port) with urllib, it runs {test}"
            )
        if getattr(args, "command", "") == "serve":
            keys = set(re.findall(r"""\[\s*['"](\w+)['"]\s*\]|\.get\(\s*['"](\w+)['"]""", test))
            fields = {k for pair in keys for k in pair if k}
            if not fields or not fields <= set(schemas.Health.model_fields):
                problems.append(
                    f"{name}: the healthcheck reads {sorted(fields)}, not fields of the /health answer "
                    f"({sorted(schemas.Health.model_fields)})"
                )
    return problems


def check_settings_variables(compose: dict[str, Any], example: list[tuple[str, str, bool]]) -> list[str]:
    known = settings_env_names()
    problems = []
    for name, service in services_of(compose).items():
        for var in environment(service):
            if var.upper().startswith("SHOPLENS_") and var.upper() not in known:
                problems.append(f"{name}: {var} is not a setting of services.settings.Settings")
    for var, _, _ in example:
        if var.upper().startswith("SHOPLENS_") and var.upper() not in known:
            problems.append(f".env.example: {var} is not a setting of services.settings.Settings")
    # Interpolated names: a SHOPLENS_ name in ${...} reads like a setting, so it must be one.
    for var, _, _ in variables(yaml.safe_dump(compose)):
        if var.upper().startswith("SHOPLENS_") and var.upper() not in known:
            problems.append(f"docker-compose.yml: ${{{var}}} is not a setting of services.settings.Settings")
    return sorted(set(problems))


def check_settings_values(compose: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each app service's SHOPLENS_ environment, interpolated, is accepted by Settings."""
    problems = []
    for name, service in services_of(compose).items():
        if not is_app(service):
            continue
        with monkeypatch.context() as mp:
            try:
                settings_of(service, env, mp)
            except ValidationError as exc:
                problems.append(f"{name}: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}")
    return problems


def schedule_of(service: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """The schedule the server builds from its settings (`shoplens serve` without --schedule):
    a ServerSchedule, None, or ValueError as the server would refuse to start."""
    from server.schedule import ServerSchedule

    with monkeypatch.context() as mp:
        return ServerSchedule.from_settings(settings_of(service, env, mp))


def check_schedule(compose: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every server takes its schedule from SHOPLENS_SCHEDULE_*: CATALOG_URL, at the interval or
    crontab the env gives; no CATALOG_URL, no schedule. The command names no schedule."""
    problems = []
    for name, service in services_of(compose).items():
        if role(service, env) != "serve":
            continue
        args = parsed(command(service, env))
        if args.schedule or args.every or args.cron or args.prune:
            problems.append(
                f"{name}: the schedule belongs in SHOPLENS_SCHEDULE_* (from CATALOG_URL, CATALOG_REFRESH_EVERY), "
                "not in the command"
            )
        try:
            schedule = schedule_of(service, env, monkeypatch)
        except ValueError as exc:
            problems.append(f"{name}: the server would refuse its schedule: {exc}")
            continue
        catalog = env.get("CATALOG_URL", "")
        if catalog and (schedule is None or schedule.source != catalog):
            problems.append(f"{name}: schedules {getattr(schedule, 'source', None)!r}, not CATALOG_URL {catalog!r}")
        if not catalog and schedule is not None:
            problems.append(f"{name}: without CATALOG_URL it still schedules {schedule.source!r}")
    return problems


def check_commands(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    subcommands = set(_subparsers().choices)
    problems = []
    for name, service in services_of(compose).items():
        if not is_app(service):
            continue
        try:
            argv = command(service, env)
        except KeyError as exc:
            problems.append(f"{name}: {exc.args[0]}")
            continue
        problems += _check_argv(name, argv, subcommands)
    return problems


def _subparsers():
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _check_argv(where: str, argv: list[str], subcommands: set[str]) -> list[str]:
    if not argv or argv[0] != "shoplens":
        return [f"{where}: runs {argv!r}, not the shoplens command"]
    if len(argv) < 2 or argv[1] not in subcommands:
        return [f"{where}: {argv[1:2]!r} is not a shoplens subcommand ({sorted(subcommands)})"]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            build_parser().parse_args(argv[1:])
    except SystemExit:
        reason = errors.getvalue().strip().splitlines()[-1:] or [""]
        return [f"{where}: `{shlex.join(argv)}` does not parse with cli.main.build_parser(): {reason[0]}"]
    return []


def check_volumes(compose: dict[str, Any]) -> list[str]:
    declared = set((compose.get("volumes") or {}).keys())
    used: set[str] = set()
    problems = []
    for name, service in services_of(compose).items():
        for entry in service.get("volumes") or []:
            if isinstance(entry, dict):
                if entry.get("type", "volume") != "volume" or not entry.get("source"):
                    continue
                source = entry["source"]
            else:
                source = str(entry).split(":", 1)[0]
                if ":" not in str(entry) or source.startswith(("/", ".", "~", "$")):
                    continue  # anonymous volume or bind mount
            used.add(source)
            if source not in declared:
                problems.append(f"{name}: volume {source} is not declared under volumes:")
    problems += [f"volume {v} is declared but no service uses it" for v in sorted(declared - used)]
    return problems


def check_depends_on(compose: dict[str, Any]) -> list[str]:
    services = services_of(compose)
    problems = []
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        own_profiles = set(service.get("profiles") or [])
        for dep, spec in deps.items():
            if dep not in services:
                problems.append(f"{name} depends on {dep}, which is not a service")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and healthcheck_test(services[dep]) is None:
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
            dep_profiles = set(services[dep].get("profiles") or [])
            if dep_profiles and not (own_profiles and own_profiles <= dep_profiles):
                problems.append(f"{name} depends on {dep}, which only runs in profiles {sorted(dep_profiles)}")
        if is_app(service) and not any((spec or {}).get("condition") == "service_healthy" for spec in deps.values()):
            problems.append(f"{name} does not wait for a healthy service it needs")
    return problems


def _waits_for(service: dict[str, Any], dep: str) -> bool:
    return ((service.get("depends_on") or {}).get(dep) or {}).get("condition") == "service_healthy"


def _data_volumes(service: dict[str, Any]) -> list[str]:
    return [str(v).split(":", 1)[0] for v in service.get("volumes") or [] if str(v).endswith(":/data")]


def check_app_wiring(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Servers reach Qdrant and PostgreSQL by service name and keep /data on a named volume;
    pages reach a server by name and hold nothing of their own."""
    services = services_of(compose)
    problems = []
    for name, service in services.items():
        kind = role(service, env)
        if not is_app(service):
            continue
        values = interpolate(environment(service), env)
        args = parsed(command(service, env))
        if kind is None:
            problems.append(f"{name}: runs {command(service, env)!r}, neither `shoplens serve` nor `shoplens pages`")
        elif kind == "serve":
            if not args.no_pages:
                problems.append(
                    f"{name}: the server runs without its pages (--no-pages): the storefront service serves them"
                )
            if args.address != "0.0.0.0":
                problems.append(f"{name}: listens on {args.address}, not 0.0.0.0: other containers cannot reach it")
            qdrant = re.match(r"^http://([^:/]+):6333/?$", values.get("SHOPLENS_QDRANT_URL", ""))
            if not qdrant or qdrant.group(1) not in services:
                problems.append(
                    f"{name}: SHOPLENS_QDRANT_URL {values.get('SHOPLENS_QDRANT_URL')!r} is not a Qdrant service of "
                    "this file"
                )
            elif not _waits_for(service, qdrant.group(1)):
                problems.append(f"{name}: uses {qdrant.group(1)} but does not wait for it to be healthy")
            database = re.match(
                r"^postgresql(\+psycopg)?://[^@/]+@([^:/]+):5432/\w+$", values.get("SHOPLENS_DATABASE_URL", "")
            )
            if not database or database.group(2) not in services:
                problems.append(
                    f"{name}: SHOPLENS_DATABASE_URL {values.get('SHOPLENS_DATABASE_URL')!r} is not a PostgreSQL "
                    "service of this file"
                )
            elif not _waits_for(service, database.group(2)):
                problems.append(f"{name}: uses {database.group(2)} but does not wait for it to be healthy")
            if values.get("SHOPLENS_HOME") != "/data" or not _data_volumes(service):
                problems.append(f"{name}: SHOPLENS_HOME must be /data on a named volume (media, reports, model cache)")
        else:
            if args.address != "0.0.0.0":
                problems.append(
                    f"{name}: listens on {args.address}, not 0.0.0.0: the published port would not reach it"
                )
            server = re.match(r"^http://([^:/]+):(\d+)/?$", values.get("SHOPLENS_SERVER_URL", ""))
            target = services.get(server.group(1)) if server else None
            if target is None or role(target, env) != "serve":
                problems.append(
                    f"{name}: SHOPLENS_SERVER_URL {values.get('SHOPLENS_SERVER_URL')!r} is not the api service of "
                    "this file (`shoplens pages` needs it)"
                )
            else:
                if int(server.group(2)) != parsed(command(target, env)).api_port:
                    problems.append(
                        f"{name}: SHOPLENS_SERVER_URL port {server.group(2)} is not the --api-port of {server.group(1)}"
                    )
                if not _waits_for(service, server.group(1)):
                    problems.append(f"{name}: uses {server.group(1)} but does not wait for it to be healthy")
            extra = sorted(
                k for k in values if k.upper().startswith("SHOPLENS_") and k.upper() != "SHOPLENS_SERVER_URL"
            )
            if extra:
                problems.append(f"{name}: the pages are a client of the API and need no {extra}")
            if service.get("volumes"):
                problems.append(f"{name}: the pages need no volume, has {service['volumes']}")
            stores = sorted(d for d in service.get("depends_on") or {} if role(services.get(d, {}), env) is None)
            if stores:
                problems.append(f"{name}: the pages do not use {stores}; they wait for the api only")
    for api, pages in STACKS.items():
        if api in services and pages in services:
            url = interpolate(environment(services[pages]), env).get("SHOPLENS_SERVER_URL", "")
            if not url.startswith(f"http://{api}:"):
                problems.append(f"{pages} should be the client of {api}, uses {url!r}")
    return problems


def active(compose: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    """The file as `docker compose --profile P ...` sees it: services of no profile or of P."""
    kept = {n: s for n, s in services_of(compose).items() if not s.get("profiles") or set(s["profiles"]) & profiles}
    return {**compose, "services": kept}


def check_ports(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Published ports parse, reach what the command listens on, and no two services want the
    same host port (pass `active(compose, ...)` for one set of profiles; by default both stacks
    run side by side)."""
    problems = []
    owners: dict[int, str] = {}
    for name, service in services_of(compose).items():
        args = parsed(command(service, env)) if is_app(service) else None
        listens = {"serve": getattr(args, "api_port", None), "pages": getattr(args, "port", None)}.get(
            getattr(args, "command", "")
        )
        if role(service, env) and not service.get("ports"):
            problems.append(f"{name}: publishes no port")
        for entry in service.get("ports") or []:
            try:
                _ip, hosts, target = published(entry, env)
            except (ValueError, KeyError) as exc:
                problems.append(f"{name}: port {entry!r} does not parse: {exc}")
                continue
            if listens is not None and target != listens:
                problems.append(f"{name}: publishes container port {target}, the command listens on {listens}")
            for port in hosts:
                if port in owners and owners[port] != name:
                    problems.append(f"{name} and {owners[port]} both publish host port {port}")
                owners.setdefault(port, name)
    return problems


def check_cluster(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    services = services_of(compose)
    problems = []
    first = CLUSTER_NODES[0]
    volumes = []
    for node in CLUSTER_NODES:
        service = services.get(node)
        if service is None:
            problems.append(f"{node} is missing")
            continue
        if str(environment(service).get("QDRANT__CLUSTER__ENABLED", "")).lower() != "true":
            problems.append(f"{node}: QDRANT__CLUSTER__ENABLED is not true")
        argv = command(service, env)
        flags = dict(zip(argv[1::2], argv[2::2], strict=False)) if argv[:1] == ["./qdrant"] else {}
        if not flags:
            problems.append(f"{node}: command {argv!r} does not start ./qdrant with flags")
        if flags.get("--uri") != f"http://{node}:{P2P_PORT}":
            problems.append(f"{node}: --uri should be http://{node}:{P2P_PORT}, is {flags.get('--uri')!r}")
        if node == first and "--bootstrap" in flags:
            problems.append(f"{node}: the first peer must not bootstrap")
        if node != first:
            if flags.get("--bootstrap") != f"http://{first}:{P2P_PORT}":
                problems.append(
                    f"{node}: --bootstrap should be http://{first}:{P2P_PORT}, is {flags.get('--bootstrap')!r}"
                )
            if not _waits_for(service, first):
                problems.append(f"{node}: should wait for a healthy {first}")
        volumes.append(
            tuple(
                sorted(
                    str(v).split(":", 1)[0] for v in service.get("volumes") or [] if str(v).endswith(":/qdrant/storage")
                )
            )
        )
    if any(not v for v in volumes) or len(set(volumes)) != len(volumes):
        problems.append(f"each cluster node needs its own storage volume, have {volumes}")
    for name in sorted(CLUSTER_APPS & services.keys()):
        if role(services[name], env) != "serve":
            continue
        values = interpolate(environment(services[name]), env)
        if values.get("SHOPLENS_QDRANT_URL") != f"http://{first}:6333":
            problems.append(f"{name}: SHOPLENS_QDRANT_URL should point at {first}")
        shards, replicas = values.get("SHOPLENS_QDRANT_SHARDS", ""), values.get("SHOPLENS_QDRANT_REPLICAS", "")
        if not shards.isdigit() or not replicas.isdigit():
            problems.append(f"{name}: SHOPLENS_QDRANT_SHARDS/REPLICAS not set ({shards!r}, {replicas!r})")
        elif not (int(replicas) >= 2 and int(replicas) <= len(CLUSTER_NODES) and int(shards) >= len(CLUSTER_NODES)):
            problems.append(f"{name}: {shards} shards x {replicas} replicas does not use {len(CLUSTER_NODES)} nodes")
        if any(not _waits_for(services[name], node) for node in CLUSTER_NODES):
            problems.append(f"{name}: should wait for every cluster node to be healthy")
    # The two stacks share no database, vector store or data volume: SQL records what its Qdrant
    # holds, so one database must never serve two vector stores.
    servers = {n: s for n, s in services.items() if role(s, env) == "serve"}
    for key in ("SHOPLENS_DATABASE_URL", "SHOPLENS_QDRANT_URL"):
        seen: dict[str, str] = {}
        for name, service in servers.items():
            value = interpolate(environment(service), env).get(key, "")
            if value in seen:
                problems.append(f"{name} and {seen[value]} share {key} {value!r}")
            seen.setdefault(value, name)
    seen_volumes: dict[str, str] = {}
    for name, service in servers.items():
        for volume in _data_volumes(service):
            if volume in seen_volumes:
                problems.append(f"{name} and {seen_volumes[volume]} share the /data volume {volume}")
            seen_volumes.setdefault(volume, name)
    return problems


def check_required_variables_documented(text: str, example: dict[str, str]) -> list[str]:
    """${VAR} and ${VAR:?...} have no default: .env.example must give them a value."""
    return sorted(
        {
            f"${{{name}}} has no default and is not set in .env.example"
            for name, op, _ in variables(text)
            if op not in (":-", "-", ":+", "+") and not example.get(name)
        }
    )


def install_pins() -> dict[str, str]:
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', INSTALL_SH.read_text(encoding="utf-8")))


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def top_level_packages(project: dict[str, Any]) -> list[str]:
    """The top-level packages of `[tool.setuptools.packages.find] include` (services*, ui*, ...)."""
    include = project.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", [])
    names = []
    for pattern in include:
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", pattern)
        if m and m.group(0) not in names:
            names.append(m.group(0))
    return names


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.MULTILINE)
    ]


def check_dockerfile(text: str, pins: dict[str, str], project: dict[str, Any], dockerignore: str = "") -> list[str]:
    problems = []
    if not re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE):
        problems.append("the Dockerfile does not start FROM python:3.11-slim")
    for package in ("torch", "torchvision", "open_clip_torch"):
        if package not in pins:
            problems.append(f"scripts/install.sh pins no {package}")
    for package, version in pins.items():
        found = set(re.findall(rf"(?<![\w.-]){re.escape(package)}==([^\s\"']+)", text))
        if found != {version}:
            problems.append(f"Dockerfile pins {package} {sorted(found) or 'nowhere'}, scripts/install.sh {version}")
    torch_line = next((line for line in text.splitlines() if re.search(r"(?<![\w.-])torch==", line)), "")
    if "--index-url https://download.pytorch.org/whl/cpu" not in torch_line:
        problems.append("torch is not installed from PyTorch's CPU index")
    no_deps_line = next((line for line in text.splitlines() if "torchvision==" in line), "")
    if "--no-deps" not in no_deps_line:
        problems.append("torchvision/open_clip are not installed with --no-deps (as scripts/install.sh does)")
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root (no USER, or USER root last)")
    if not re.search(r"^ENV\b[^\n]*(?:\\\n[^\n]*)*\bSHOPLENS_HOME=/data\b", text, re.MULTILINE):
        problems.append("SHOPLENS_HOME=/data is not set with ENV")

    # Every package pip installs from /app is in the image, and .dockerignore keeps none out.
    copied: set[str] = set()
    for instruction, arguments in _instructions(text):
        if instruction in ("COPY", "ADD"):
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            copied.update(re.sub(r"^\./|/$", "", w) or "." for w in words[:-1])
    ignored = [
        p.strip().lstrip("/").rstrip("/")
        for p in dockerignore.splitlines()
        if p.strip() and not p.lstrip().startswith(("#", "!"))
    ]
    packages = top_level_packages(project)
    if not packages:
        problems.append("pyproject.toml lists no packages under [tool.setuptools.packages.find] include")
    for name in [*packages, "pyproject.toml"]:
        if name in packages and not any((ROOT / name).glob("*.py")):
            problems.append(f"pyproject.toml includes {name}*, but {name}/ holds no Python modules here")
        if name not in copied and "." not in copied:
            problems.append(f"the Dockerfile does not COPY {name} (pyproject.toml installs it)")
        if any(fnmatch.fnmatch(name, pattern) for pattern in ignored):
            problems.append(f".dockerignore keeps {name} out of the build context")

    exposed = {int(p.split("/")[0]) for i, a in _instructions(text) if i == "EXPOSE" for p in a.split()}
    for port in (API_PORT, PAGES_PORT):
        if port not in exposed:
            problems.append(f"the Dockerfile does not EXPOSE {port} (exposes {sorted(exposed)})")
    cmd = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    if not cmd:
        problems.append("no exec-form CMD")
    else:
        argv = json.loads(cmd[-1])
        argv_problems = _check_argv("Dockerfile CMD", argv, set(_subparsers().choices))
        args = parsed(argv)
        if not argv_problems and not (
            args.command == "serve"
            and args.no_pages
            and args.api_port == API_PORT
            and args.address == "0.0.0.0"
            and not args.schedule
        ):
            argv_problems.append(
                f"the default CMD should be the server alone, `{shlex.join(SERVER_ARGV)}`, is `{shlex.join(argv)}`"
            )
        problems += argv_problems
    return problems


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_requirements(text: str, project: dict[str, Any]) -> list[tuple[Requirement, bool]]:
    """What the Dockerfile's `pip install`s ask for: (requirement, its dependencies follow)."""
    wanted: list[tuple[Requirement, bool]] = []
    for instruction, arguments in _instructions(text):
        if instruction != "RUN":
            continue
        for part in re.split(r"&&|;", arguments):
            words = shlex.split(part)
            if words[:2] != ["pip", "install"] and words[:4] != ["python", "-m", "pip", "install"]:
                continue
            words = words[words.index("install") + 1 :]
            no_deps = "--no-deps" in words
            skip = False
            for _i, word in enumerate(words):
                if skip:
                    skip = False
                    continue
                if word in ("--index-url", "-i", "--extra-index-url", "-r", "-c", "--constraint", "--requirement"):
                    skip = True
                    continue
                if word == "-e" or word.startswith("-"):
                    continue
                m = re.fullmatch(r"\.(?:\[([^\]]*)\])?", word)
                if m:  # the project itself
                    extras = [e.strip() for e in (m.group(1) or "").split(",") if e.strip()]
                    deps = list(project["project"].get("dependencies", []))
                    for extra in extras:
                        deps += project["project"].get("optional-dependencies", {}).get(extra, [])
                    wanted += [(Requirement(d), not no_deps) for d in deps]
                else:
                    wanted.append((Requirement(word), not no_deps))
    return wanted


def image_distributions(text: str, project: dict[str, Any]) -> set[str]:
    """The distributions pip puts in the image, with their dependencies as this environment's
    installed metadata declares them (a distribution not installed here counts alone)."""
    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(r.name, frozenset(r.extras), follow) for r, follow in image_requirements(text, project)]
    while queue:
        name, extras, follow = queue.pop()
        found.add(_normal(name))
        if not follow or (_normal(name), extras) in seen:
            continue
        seen.add((_normal(name), extras))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                queue.append((req.name, frozenset(req.extras), True))
    return found


def code_imports(packages: list[str]) -> dict[str, str]:
    """Third-party top-level modules the packages import (module -> a file importing it)."""
    found: dict[str, str] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(source)):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for module in names:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in packages and top != "__future__":
                        found.setdefault(top, str(path.relative_to(ROOT)))
            if "request.form(" in source:  # starlette parses multipart forms with python_multipart
                found.setdefault("python_multipart", str(path.relative_to(ROOT)))
    return found


def check_image_dependencies(text: str, project: dict[str, Any]) -> list[str]:
    """Every module the copied packages import is installed in the image: by pyproject's
    dependencies, the extras the Dockerfile asks for, or its own pins."""
    installed = image_distributions(text, project)
    owners = importlib.metadata.packages_distributions()
    problems = []
    for module, where in sorted(code_imports(top_level_packages(project)).items()):
        candidates = {_normal(d) for d in owners.get(module, [module])}
        if not candidates & installed:
            problems.append(
                f"{where} imports {module} ({', '.join(sorted(candidates))}), which the image does not install: add "
                "it to pyproject.toml's dependencies"
            )
    return problems


# -- running the healthchecks -----------------------------------------------------------------


class FakeServer:
    """A local HTTP server answering one path with a fixed status and body."""

    def __init__(self, path: str, status: int, body: bytes):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, data = (outer.status, outer.body) if self.path == outer.path else (404, b"")
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.path, self.status, self.body = path, status, body
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_healthcheck(service: dict[str, Any], listens: int, port: int) -> int:
    """The exit status of the service's [CMD, python, -c, code] healthcheck, aimed at `port`
    instead of the port it names (`listens`)."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3]
    assert f"127.0.0.1:{listens}" in code, code
    code = code.replace(f"127.0.0.1:{listens}", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False).returncode


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return sample_env()


def test_services_exist(compose) -> None:
    assert check_services_present(compose) == []


def test_images_are_pinned_or_built(compose) -> None:
    assert check_images(compose) == []


def test_servers_have_healthchecks(compose, env) -> None:
    assert check_healthchecks(compose, env) == []


def test_api_healthcheck_asks_the_health_endpoint(compose) -> None:
    """The api's healthcheck, run against a stand-in server: healthy only on a ready answer."""
    for name in STACKS:
        service = compose["services"][name]
        answer = {"status": "starting", "ready": True, "model_loaded": False}
        with FakeServer("/api/v1/health", 200, json.dumps(answer).encode()) as server:
            assert run_healthcheck(service, API_PORT, server.port) == 0, (
                f"{name}: a ready server (model still loading) is healthy"
            )
        with FakeServer("/api/v1/health", 200, json.dumps({**answer, "ready": False}).encode()) as server:
            assert run_healthcheck(service, API_PORT, server.port) != 0, (
                f"{name}: a server that is not ready is unhealthy"
            )
        with FakeServer("/api/v1/health", 503, b'{"ready": true}') as server:
            assert run_healthcheck(service, API_PORT, server.port) != 0, f"{name}: an error status is unhealthy"
        assert run_healthcheck(service, API_PORT, free_port()) != 0, f"{name}: no server is unhealthy"


def test_storefront_healthcheck_asks_streamlit(compose) -> None:
    for name in STACKS.values():
        service = compose["services"][name]
        with FakeServer("/_stcore/health", 200, b"ok") as server:
            assert run_healthcheck(service, PAGES_PORT, server.port) == 0
        with FakeServer("/_stcore/health", 200, b"starting") as server:
            assert run_healthcheck(service, PAGES_PORT, server.port) != 0
        assert run_healthcheck(service, PAGES_PORT, free_port()) != 0


def test_shoplens_variables_are_settings(compose) -> None:
    assert check_settings_variables(compose, env_example_lines()) == []


def test_settings_accept_the_values(compose, env, monkeypatch) -> None:
    assert check_settings_values(compose, env, monkeypatch) == []
    assert check_settings_values(compose, required_only(env), monkeypatch) == []


def test_app_commands_parse(compose, env) -> None:
    assert check_commands(compose, env) == []
    assert check_commands(compose, required_only(env)) == []
    for api, pages in STACKS.items():
        assert command(compose["services"][api], env) == SERVER_ARGV
        assert command(compose["services"][pages], env) == PAGES_ARGV


def test_the_server_runs_the_schedule_from_settings(compose, env, monkeypatch) -> None:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    assert check_schedule(compose, env, monkeypatch) == []
    api = compose["services"]["api"]
    schedule = schedule_of(api, env, monkeypatch)
    assert schedule.source == env["CATALOG_URL"]
    assert isinstance(schedule.trigger, IntervalTrigger)
    assert schedule.trigger.interval.total_seconds() == 30 * 60
    assert not schedule.prune
    # Not in .env: every 30 minutes; an empty CATALOG_URL: no schedule, the server still starts.
    assert (
        schedule_of(api, {"CATALOG_URL": "https://x.example/c.csv"}, monkeypatch).trigger.interval.total_seconds()
        == 30 * 60
    )
    assert check_schedule(compose, required_only(env), monkeypatch) == []
    assert schedule_of(api, {**env, "CATALOG_URL": ""}, monkeypatch) is None
    # A crontab instead of the interval, and pruning.
    cron_env = {**env, "CATALOG_REFRESH_EVERY": "", "CATALOG_REFRESH_CRON": "0 * * * *", "CATALOG_PRUNE": "true"}
    assert check_schedule(compose, cron_env, monkeypatch) == []
    schedule = schedule_of(api, cron_env, monkeypatch)
    assert isinstance(schedule.trigger, CronTrigger) and schedule.prune
    # Both at once: the server refuses to start, and the check says so.
    assert check_schedule(compose, {**cron_env, "CATALOG_REFRESH_EVERY": "1h"}, monkeypatch)
    assert check_schedule(compose, {**env, "CATALOG_REFRESH_EVERY": "soon"}, monkeypatch)


def test_volumes_are_declared(compose) -> None:
    assert check_volumes(compose) == []


def test_depends_on_healthy_services(compose) -> None:
    assert check_depends_on(compose) == []


def test_app_services_use_the_servers(compose, env) -> None:
    assert check_app_wiring(compose, env) == []
    for pages in STACKS.values():
        assert role(compose["services"][pages], env) == "pages"


def test_ports(compose, env) -> None:
    assert check_ports(compose, env) == []
    assert check_ports(compose, required_only(env)) == []
    services = compose["services"]
    # The API on ${API_PORT:-8000}, all interfaces, like the storefront's port.
    assert published(services["api"]["ports"][0], {}) == ("", [API_PORT], API_PORT)
    assert published(services["api"]["ports"][0], {"API_PORT": "9000"}) == ("", [9000], API_PORT)
    assert published(services["storefront"]["ports"][0], {}) == ("", [PAGES_PORT], PAGES_PORT)
    # --scale storefront=3 needs three host ports: STOREFRONT_PORT takes a range.
    ranged = {**env, "STOREFRONT_PORT": "8501-8503"}
    assert len(published(services["storefront"]["ports"][0], ranged)[1]) == 3
    assert check_ports(active(compose, set()), ranged) == []
    # ... clear of the cluster stack's ports when both stacks run (as the file's comment says).
    assert check_ports(compose, ranged) == ["storefront-cluster and storefront both publish host port 8502"]
    assert check_ports(compose, {**env, "STOREFRONT_PORT": "8511-8513"}) == []
    assert len(published(services["api-cluster"]["ports"][0], {**env, "API_CLUSTER_PORT": "8001-8003"})[1]) == 3


def test_cluster_profile(compose, env) -> None:
    assert check_cluster(compose, env) == []


def test_required_variables_are_in_env_example() -> None:
    assert check_required_variables_documented(COMPOSE.read_text(encoding="utf-8"), sample_env()) == []


def test_env_example_documents_the_new_variables() -> None:
    names = {name for name, _, _ in env_example_lines()}
    used = {name for name, _, _ in variables(COMPOSE.read_text(encoding="utf-8"))}
    assert used - names == set(), "every variable docker-compose.yml reads is in .env.example"
    assert {"API_PORT", "CATALOG_URL", "CATALOG_REFRESH_EVERY"} <= names
    # No real secrets: the passwords are placeholders, keys are empty or commented out.
    for name, value, commented in env_example_lines():
        if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", name) and not commented:
            assert value == "" or "change-me" in value, f"{name} in .env.example looks like a real secret"


def test_dockerfile_mirrors_install_script() -> None:
    problems = check_dockerfile(
        DOCKERFILE.read_text(encoding="utf-8"), install_pins(), pyproject(), DOCKERIGNORE.read_text(encoding="utf-8")
    )
    assert problems == []


def test_dockerfile_copies_every_package() -> None:
    packages = top_level_packages(pyproject())
    assert {"services", "ingest", "ui", "server", "cli"} <= set(packages)


def test_api_command_is_the_image_default(compose, env) -> None:
    cmd = json.loads(re.findall(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)[-1])
    assert cmd == command(compose["services"]["api"], env) == SERVER_ARGV


def test_image_installs_what_the_code_imports() -> None:
    """`shoplens serve` in the image imports fastapi, uvicorn, ...: pyproject.toml must install them."""
    assert check_image_dependencies(DOCKERFILE.read_text(encoding="utf-8"), pyproject()) == []


def test_env_file_is_ignored_and_example_exists() -> None:
    assert ENV_EXAMPLE.is_file()
    assert ".env" not in {name for name, _, _ in env_example_lines()}
    assert ".env" in {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}, (
        ".env is not in .dockerignore"
    )
    if shutil.which("git") and (ROOT / ".git").exists():
        assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False).returncode == 0, (
            ".env is not git-ignored"
        )
        tracked = subprocess.run(
            ["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout
        assert tracked.strip() == "", ".env is committed"
    else:
        lines = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
        assert lines & {".env", "/.env", ".env*"}, ".env is not in .gitignore"


# -- the checks fail on broken files --------------------------------------------------------


def _broken(compose: dict[str, Any], edit) -> dict[str, Any]:
    copied = copy.deepcopy(compose)
    edit(copied["services"])
    return copied


def test_checks_catch_broken_compose_files(compose, env, monkeypatch) -> None:
    def drop(name):
        return lambda s: s.pop(name)

    def healthcheck(name, code):
        return lambda s: s[name].update(healthcheck={"test": ["CMD", "python", "-c", code]})

    api_url = "http://127.0.0.1:8000/api/v1/health"
    cases = [
        (check_services_present, _broken(compose, drop("api"))),
        (check_services_present, _broken(compose, lambda s: s.update(scheduler=copy.deepcopy(s["api"])))),
        (check_services_present, _broken(compose, lambda s: s["qdrant-node2"].pop("profiles"))),
        (check_services_present, _broken(compose, lambda s: s["storefront"].update(container_name="shop"))),
        (check_images, _broken(compose, lambda s: s["postgres"].update(image="postgres:latest"))),
        (check_images, _broken(compose, lambda s: s["qdrant"].update(image="qdrant/qdrant"))),
        (check_volumes, _broken(compose, lambda s: s["api"].update(volumes=["undeclared:/data"]))),
        (check_depends_on, _broken(compose, lambda s: s["postgres"].pop("healthcheck"))),
        (check_depends_on, _broken(compose, lambda s: s["api"].pop("healthcheck"))),
        (
            check_depends_on,
            _broken(
                compose,
                lambda s: s["storefront"]["depends_on"].update({"qdrant-node1": {"condition": "service_healthy"}}),
            ),
        ),
        (check_depends_on, _broken(compose, lambda s: s["storefront"].update(depends_on=["api"]))),
    ]
    for check, broken in cases:
        assert check(broken), f"{check.__name__} missed a broken file"

    for edit in [
        lambda s: s["storefront"].pop("healthcheck"),
        lambda s: s["api"].pop("healthcheck"),
        lambda s: s["qdrant"].update(healthcheck={"test": ["CMD", "curl", "-f", "http://localhost:6333/readyz"]}),
        lambda s: s["api"].update(healthcheck={"test": ["CMD", "curl", "-f", api_url]}),
        healthcheck("api", f"import urllib.request; urllib.request.urlopen('{api_url.replace('8000', '8501')}')"),
        healthcheck(
            "api",
            "import json, sys, urllib.request; sys.exit(not "
            f"json.load(urllib.request.urlopen('{api_url}'))['healthy'])",
        ),
        healthcheck("storefront", f"import urllib.request; urllib.request.urlopen('{api_url}')"),
    ]:
        assert check_healthchecks(_broken(compose, edit), env), "check_healthchecks missed a broken file"

    bad_var = _broken(compose, lambda s: s["api"]["environment"].update(SHOPLENS_CATALOG_URL="x"))
    assert check_settings_variables(bad_var, []) == [
        "api: SHOPLENS_CATALOG_URL is not a setting of services.settings.Settings"
    ]
    assert check_settings_variables(compose, [("SHOPLENS_SCHEDULE_EVERY", "30m", True)]) == []  # a real setting
    assert check_settings_variables(compose, [("SHOPLENS_SCHEDULE_INTERVAL", "30m", True)])
    bad_value = _broken(compose, lambda s: s["api-cluster"]["environment"].update(SHOPLENS_QDRANT_SHARDS="zero"))
    assert check_settings_values(bad_value, env, monkeypatch)
    assert check_settings_values(compose, {**env, "CATALOG_PRUNE": "sometimes"}, monkeypatch)

    assert check_commands(
        _broken(compose, lambda s: s["api"].update(command=["shoplens", "serve", "--host", "0.0.0.0"])), env
    )
    assert check_commands(
        _broken(compose, lambda s: s["storefront"].update(command=["shoplens", "pages", "--api-port", "8000"])), env
    )
    assert check_commands(_broken(compose, lambda s: s["storefront"].update(command=["shoplens", "storefront"])), env)
    assert check_commands(
        _broken(
            compose, lambda s: s["api"].update(command="shoplens serve --schedule ${CATALOG_URL:?needed} --every 1h")
        ),
        {},
    )

    in_command = [
        "shoplens",
        "serve",
        "--no-pages",
        "--api-port",
        "8000",
        "--address",
        "0.0.0.0",
        "--schedule",
        "x.csv",
        "--every",
        "1h",
    ]
    assert check_schedule(_broken(compose, lambda s: s["api"].update(command=in_command)), env, monkeypatch)
    assert check_schedule(
        _broken(compose, lambda s: s["api"]["environment"].pop("SHOPLENS_SCHEDULE_CATALOG")), env, monkeypatch
    )
    assert check_schedule(
        _broken(compose, lambda s: s["api"]["environment"].pop("SHOPLENS_SCHEDULE_EVERY")), env, monkeypatch
    )

    for edit in [
        lambda s: s["api"]["environment"].update(SHOPLENS_QDRANT_URL="http://qdrant-node1:6333"),
        lambda s: s["api"]["environment"].update(SHOPLENS_DATABASE_URL="sqlite:////data/x.db"),
        lambda s: s["api"].update(volumes=[]),
        lambda s: s["api"].update(
            command=["shoplens", "serve", "--api-port", "8000", "--address", "0.0.0.0"]
        ),  # pages too
        lambda s: s["api"].update(command=["shoplens", "serve", "--no-pages", "--api-port", "8000"]),  # 127.0.0.1
        lambda s: s["storefront"]["environment"].update(
            SHOPLENS_DATABASE_URL="postgresql://shoplens:x@postgres:5432/shoplens"
        ),
        lambda s: s["storefront"].update(volumes=["shoplens-data:/data"]),
        lambda s: s["storefront"]["environment"].update(SHOPLENS_SERVER_URL="http://api:8001"),
        lambda s: s["storefront"]["environment"].update(SHOPLENS_SERVER_URL="http://localhost:8000"),
        lambda s: s["storefront"]["environment"].pop("SHOPLENS_SERVER_URL"),
        lambda s: s["storefront"].update(depends_on={"postgres": {"condition": "service_healthy"}}),
        lambda s: s["storefront"]["depends_on"].update({"qdrant": {"condition": "service_healthy"}}),
        lambda s: s["storefront-cluster"]["environment"].update(SHOPLENS_SERVER_URL="http://api:8000"),
        lambda s: s["storefront"].update(command=["shoplens", "schedule", "x.csv", "--every", "1h"]),
    ]:
        assert check_app_wiring(_broken(compose, edit), env), "check_app_wiring missed a broken file"

    for edit in [
        lambda s: s["storefront-cluster"].update(ports=["${STOREFRONT_PORT:-8501}:8501"]),
        lambda s: s["api-cluster"].update(ports=["8000:8000"]),
        lambda s: s["api"].update(ports=["8000:8001"]),
        lambda s: s["storefront"].update(ports=["8501:8000"]),
        lambda s: s["storefront"].update(ports=["eighty:8501"]),
        lambda s: s["api"].pop("ports"),
    ]:
        assert check_ports(_broken(compose, edit), env), "check_ports missed a broken file"

    assert check_cluster(
        _broken(compose, lambda s: s["qdrant-node3"].update(command=["./qdrant", "--uri", "http://qdrant-node3:6335"])),
        env,
    )
    assert check_cluster(
        _broken(compose, lambda s: s["qdrant-node2"].update(volumes=["qdrant-node1-data:/qdrant/storage"])), env
    )
    assert check_cluster(
        _broken(compose, lambda s: s["qdrant-node1"]["environment"].pop("QDRANT__CLUSTER__ENABLED")), env
    )
    assert check_cluster(
        _broken(compose, lambda s: s["api-cluster"]["environment"].pop("SHOPLENS_QDRANT_REPLICAS")), env
    )
    assert check_cluster(_broken(compose, lambda s: s["api-cluster"]["depends_on"].pop("qdrant-node3")), env)
    same_db = "postgresql://shoplens:${POSTGRES_PASSWORD}@postgres:5432/shoplens"
    assert check_cluster(
        _broken(compose, lambda s: s["api-cluster"]["environment"].update(SHOPLENS_DATABASE_URL=same_db)), env
    )
    assert check_cluster(_broken(compose, lambda s: s["api-cluster"].update(volumes=["shoplens-data:/data"])), env)

    assert check_required_variables_documented("x: ${UNDOCUMENTED}\ny: ${DOC:-fine}", {}) == [
        "${UNDOCUMENTED} has no default and is not set in .env.example"
    ]


def test_dockerfile_check_catches_drift() -> None:
    text, pins, project, ignore = (
        DOCKERFILE.read_text(encoding="utf-8"),
        install_pins(),
        pyproject(),
        DOCKERIGNORE.read_text(encoding="utf-8"),
    )
    assert check_dockerfile(text.replace("torch==2.13.0", "torch==2.14.1"), pins, project, ignore)
    assert check_dockerfile(text, {**pins, "open_clip_torch": "9.9.9"}, project, ignore)
    assert check_dockerfile(text.replace("--index-url https://download.pytorch.org/whl/cpu", ""), pins, project, ignore)
    assert check_dockerfile(re.sub(r"^USER .*$", "USER root", text, flags=re.MULTILINE), pins, project, ignore)
    assert check_dockerfile(text.replace("SHOPLENS_HOME=/data", "SHOPLENS_HOME=/srv"), pins, project, ignore)
    assert check_dockerfile(text.replace('"--address"', '"--host"'), pins, project, ignore)
    # The default command is the server alone, on the API port.
    assert check_dockerfile(text.replace('"--no-pages", ', ""), pins, project, ignore)
    assert check_dockerfile(text.replace('"--api-port", "8000"', '"--api-port", "8080"'), pins, project, ignore)
    assert check_dockerfile(
        re.sub(
            r"^CMD .*$", 'CMD ["shoplens", "pages", "--port", "8501", "--address", "0.0.0.0"]', text, flags=re.MULTILINE
        ),
        pins,
        project,
        ignore,
    )
    # Every package pyproject installs is copied, and not ignored.
    for package in top_level_packages(project):
        without = re.sub(rf"^COPY {package} \./{package}\n", "", text, flags=re.MULTILINE)
        assert without != text, f"the Dockerfile copies {package} some other way"
        assert any(f"does not COPY {package}" in p for p in check_dockerfile(without, pins, project, ignore))
    assert check_dockerfile(text, pins, project, ignore + "server\n")
    assert check_dockerfile(text, pins, project, ignore + "/cli/\n")
    widened = copy.deepcopy(project)
    widened["tool"]["setuptools"]["packages"]["find"]["include"].append("plugins*")
    assert any("plugins" in p for p in check_dockerfile(text, pins, widened, ignore))
    # Both ports exposed.
    assert check_dockerfile(re.sub(r"^EXPOSE .*$", "EXPOSE 8501", text, flags=re.MULTILINE), pins, project, ignore)
    assert check_dockerfile(re.sub(r"^EXPOSE .*$", "EXPOSE 8000", text, flags=re.MULTILINE), pins, project, ignore)


def test_image_dependency_check_catches_a_missing_package() -> None:
    text, project = DOCKERFILE.read_text(encoding="utf-8"), pyproject()
    # Without the extras, streamlit (imported by ui/) is not in the image.
    assert any(" streamlit " in p for p in check_image_dependencies(re.sub(r'"\.\[[^\]]*\]"', '"."', text), project))
    trimmed = copy.deepcopy(project)
    trimmed["project"]["dependencies"] = [
        d for d in trimmed["project"]["dependencies"] if not d.startswith("apscheduler")
    ]
    assert any(" apscheduler " in p for p in check_image_dependencies(text, trimmed))
    # The schema migrations: every start imports alembic, which nothing else brings.
    trimmed["project"]["dependencies"] = [d for d in project["project"]["dependencies"] if not d.startswith("alembic")]
    assert any(" alembic " in p for p in check_image_dependencies(text, trimmed))
    # torchvision/open_clip go in with --no-deps: what they need must come from elsewhere.
    assert {"torch", "torchvision", "open-clip-torch"} <= image_distributions(text, project)


def test_interpolation() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$SET", env) == "v d d  v $SET"
    with pytest.raises(KeyError):
        interpolate("${EMPTY:?needed}", env)


def test_published_ports() -> None:
    assert published("8501:8501", {}) == ("", [8501], 8501)
    assert published("127.0.0.1:8000:8000", {}) == ("127.0.0.1", [8000], 8000)
    assert published("8501-8503:8501/tcp", {}) == ("", [8501, 8502, 8503], 8501)
    assert published("127.0.0.1::8501", {}) == ("127.0.0.1", [], 8501)
    assert published("8501", {}) == ("", [], 8501)
    assert published({"target": 8000, "published": "${P:-9000}"}, {}) == ("", [9000], 8000)
    with pytest.raises(ValueError):
        published("8503-8501:8501", {})
