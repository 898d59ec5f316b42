"""docker-compose.yml, the Dockerfile and .env.example, checked without Docker.

Each check is a function returning the problems it finds; the tests run it on the real files,
and the `*_catches_*` tests show it on broken copies, so a check that can never fail is caught.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, ValidationError

from cli.main import build_parser
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
INSTALL_SH = ROOT / "scripts" / "install.sh"

DEFAULT_SERVICES = {"qdrant", "postgres", "storefront", "scheduler"}
CLUSTER_NODES = ["qdrant-node1", "qdrant-node2", "qdrant-node3"]
CLUSTER_APPS = {"storefront-cluster", "scheduler-cluster"}
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


def healthcheck_test(service: dict[str, Any]) -> str | None:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    if check.get("disable") or not test or test in ("NONE", ["NONE"]):
        return None
    return test if isinstance(test, str) else " ".join(map(str, test))


def is_server(service: dict[str, Any]) -> bool:
    image = str(service.get("image", ""))
    return bool(
        service.get("ports") or service.get("expose")
        or re.match(r"^(docker\.io/)?(qdrant/qdrant|(library/)?postgres)(:|@|$)", image)
        or command(service, sample_env())[1:2] == ["serve"]
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


# -- the checks -----------------------------------------------------------------------------

def check_services_present(compose: dict[str, Any]) -> list[str]:
    services = services_of(compose)
    problems = [f"service {name} is missing" for name in sorted(DEFAULT_SERVICES | set(CLUSTER_NODES) | CLUSTER_APPS) if name not in services]
    for name in sorted(DEFAULT_SERVICES & services.keys()):
        if services[name].get("profiles"):
            problems.append(f"{name} must start by default (no profiles), has {services[name]['profiles']}")
    for name in sorted((set(CLUSTER_NODES) | CLUSTER_APPS) & services.keys()):
        if "cluster" not in (services[name].get("profiles") or []):
            problems.append(f"{name} must be in the cluster profile")
    return problems


def image_is_pinned(image: str) -> bool:
    m = re.match(r"^(?P<name>[^@]+?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*))?(?P<digest>@sha256:[0-9a-f]{64})?$", image)
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


def check_healthchecks(compose: dict[str, Any]) -> list[str]:
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
        values = interpolate(environment(service), env)
        with monkeypatch.context() as mp:
            for var in settings_env_names() | set(values):
                mp.delenv(var, raising=False)
            for var, value in values.items():
                mp.setenv(var, value)
            try:
                Settings(_env_file=None)
            except ValidationError as exc:
                problems.append(f"{name}: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}")
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
    import argparse

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
        if is_app(service) and not any(
            (spec or {}).get("condition") == "service_healthy" for spec in deps.values()
        ):
            problems.append(f"{name} does not wait for a healthy Qdrant/PostgreSQL")
    return problems


def check_app_wiring(compose: dict[str, Any], env: dict[str, str]) -> list[str]:
    """App services reach Qdrant and PostgreSQL by service name and share /data."""
    services = services_of(compose)
    problems = []
    for name, service in services.items():
        if not is_app(service):
            continue
        values = interpolate(environment(service), env)
        deps = set(service.get("depends_on") or {})
        qdrant = re.match(r"^http://([^:/]+):6333/?$", values.get("SHOPLENS_QDRANT_URL", ""))
        if not qdrant or qdrant.group(1) not in services:
            problems.append(f"{name}: SHOPLENS_QDRANT_URL {values.get('SHOPLENS_QDRANT_URL')!r} is not a Qdrant service of this file")
        elif qdrant.group(1) not in deps:
            problems.append(f"{name}: uses {qdrant.group(1)} but does not depend on it")
        database = re.match(r"^postgresql(\+psycopg)?://[^@/]+@([^:/]+):5432/\w+$", values.get("SHOPLENS_DATABASE_URL", ""))
        if not database or database.group(2) not in services:
            problems.append(f"{name}: SHOPLENS_DATABASE_URL {values.get('SHOPLENS_DATABASE_URL')!r} is not a PostgreSQL service of this file")
        elif database.group(2) not in deps:
            problems.append(f"{name}: uses {database.group(2)} but does not depend on it")
        if values.get("SHOPLENS_HOME") != "/data" or not any(str(v).endswith(":/data") for v in service.get("volumes") or []):
            problems.append(f"{name}: SHOPLENS_HOME must be /data on a named volume")
    pairs = [("storefront", "scheduler"), ("storefront-cluster", "scheduler-cluster")]
    for a, b in pairs:
        if a in services and b in services:
            for key in ("SHOPLENS_QDRANT_URL", "SHOPLENS_DATABASE_URL", "SHOPLENS_EMBEDDER"):
                if environment(services[a]).get(key) != environment(services[b]).get(key):
                    problems.append(f"{a} and {b} disagree on {key}")
            if set(services[a].get("volumes") or []) != set(services[b].get("volumes") or []):
                problems.append(f"{a} and {b} do not share the same /data volume")
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
        flags = dict(zip(argv[1::2], argv[2::2])) if argv[:1] == ["./qdrant"] else {}
        if not flags:
            problems.append(f"{node}: command {argv!r} does not start ./qdrant with flags")
        if flags.get("--uri") != f"http://{node}:{P2P_PORT}":
            problems.append(f"{node}: --uri should be http://{node}:{P2P_PORT}, is {flags.get('--uri')!r}")
        if node == first and "--bootstrap" in flags:
            problems.append(f"{node}: the first peer must not bootstrap")
        if node != first:
            if flags.get("--bootstrap") != f"http://{first}:{P2P_PORT}":
                problems.append(f"{node}: --bootstrap should be http://{first}:{P2P_PORT}, is {flags.get('--bootstrap')!r}")
            if (service.get("depends_on") or {}).get(first, {}).get("condition") != "service_healthy":
                problems.append(f"{node}: should wait for a healthy {first}")
        volumes.append(tuple(sorted(str(v).split(":", 1)[0] for v in service.get("volumes") or [] if str(v).endswith(":/qdrant/storage"))))
    if any(not v for v in volumes) or len(set(volumes)) != len(volumes):
        problems.append(f"each cluster node needs its own storage volume, have {volumes}")
    for name in sorted(CLUSTER_APPS & services.keys()):
        values = interpolate(environment(services[name]), env)
        if values.get("SHOPLENS_QDRANT_URL") != f"http://{first}:6333":
            problems.append(f"{name}: SHOPLENS_QDRANT_URL should point at {first}")
        shards, replicas = values.get("SHOPLENS_QDRANT_SHARDS", ""), values.get("SHOPLENS_QDRANT_REPLICAS", "")
        if not shards.isdigit() or not replicas.isdigit():
            problems.append(f"{name}: SHOPLENS_QDRANT_SHARDS/REPLICAS not set ({shards!r}, {replicas!r})")
        elif not (int(replicas) >= 2 and int(replicas) <= len(CLUSTER_NODES) and int(shards) >= len(CLUSTER_NODES)):
            problems.append(f"{name}: {shards} shards x {replicas} replicas does not use {len(CLUSTER_NODES)} nodes")
        deps = services[name].get("depends_on") or {}
        if any(deps.get(node, {}).get("condition") != "service_healthy" for node in CLUSTER_NODES):
            problems.append(f"{name}: should wait for every cluster node to be healthy")
    return problems


def check_required_variables_documented(text: str, example: dict[str, str]) -> list[str]:
    """${VAR} and ${VAR:?...} have no default: .env.example must give them a value."""
    return sorted({
        f"${{{name}}} has no default and is not set in .env.example"
        for name, op, _ in variables(text)
        if op not in (":-", "-", ":+", "+") and not example.get(name)
    })


def install_pins() -> dict[str, str]:
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', INSTALL_SH.read_text(encoding="utf-8")))


def check_dockerfile(text: str, pins: dict[str, str]) -> list[str]:
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
    cmd = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    if not cmd:
        problems.append("no exec-form CMD")
    else:
        problems += _check_argv("Dockerfile CMD", json.loads(cmd[-1]), set(_subparsers().choices))
    return problems


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


def test_servers_have_healthchecks(compose) -> None:
    assert check_healthchecks(compose) == []
    assert not is_server(compose["services"]["scheduler"])  # the scheduler serves nothing


def test_shoplens_variables_are_settings(compose) -> None:
    assert check_settings_variables(compose, env_example_lines()) == []


def test_settings_accept_the_values(compose, env, monkeypatch) -> None:
    assert check_settings_values(compose, env, monkeypatch) == []


def test_app_commands_parse(compose, env) -> None:
    assert check_commands(compose, env) == []
    # Also with only the required values set: every ${VAR:-default} takes its default.
    required = {k: v for k, v in env.items() if k in {n for n, op, _ in variables(COMPOSE.read_text()) if op in (None, ":?", "?")}}
    assert check_commands(compose, required) == []
    assert command(compose["services"]["storefront"], env)[:2] == ["shoplens", "serve"]
    assert command(compose["services"]["scheduler"], env)[:2] == ["shoplens", "schedule"]


def test_volumes_are_declared(compose) -> None:
    assert check_volumes(compose) == []


def test_depends_on_healthy_services(compose) -> None:
    assert check_depends_on(compose) == []


def test_app_services_use_the_servers(compose, env) -> None:
    assert check_app_wiring(compose, env) == []


def test_cluster_profile(compose, env) -> None:
    assert check_cluster(compose, env) == []


def test_required_variables_are_in_env_example() -> None:
    assert check_required_variables_documented(COMPOSE.read_text(encoding="utf-8"), sample_env()) == []


def test_dockerfile_mirrors_install_script() -> None:
    assert check_dockerfile(DOCKERFILE.read_text(encoding="utf-8"), install_pins()) == []


def test_env_file_is_ignored_and_example_exists() -> None:
    assert ENV_EXAMPLE.is_file()
    assert ".env" not in {name for name, _, _ in env_example_lines()}
    if shutil.which("git") and (ROOT / ".git").exists():
        assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False).returncode == 0, ".env is not git-ignored"
        tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=False).stdout
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

    cases = [
        (check_services_present, _broken(compose, drop("scheduler"))),
        (check_services_present, _broken(compose, lambda s: s["qdrant-node2"].pop("profiles"))),
        (check_images, _broken(compose, lambda s: s["postgres"].update(image="postgres:latest"))),
        (check_images, _broken(compose, lambda s: s["qdrant"].update(image="qdrant/qdrant"))),
        (check_healthchecks, _broken(compose, lambda s: s["storefront"].pop("healthcheck"))),
        (check_healthchecks, _broken(compose, lambda s: s["qdrant"].update(healthcheck={"test": ["CMD", "curl", "-f", "http://localhost:6333/readyz"]}))),
        (check_volumes, _broken(compose, lambda s: s["scheduler"].update(volumes=["undeclared:/data"]))),
        (check_depends_on, _broken(compose, lambda s: s["postgres"].pop("healthcheck"))),
        (check_depends_on, _broken(compose, lambda s: s["storefront"]["depends_on"].update({"qdrant-node1": {"condition": "service_healthy"}}))),
    ]
    for check, broken in cases:
        assert check(broken), f"{check.__name__} missed a broken file"

    bad_var = _broken(compose, lambda s: s["scheduler"]["environment"].update(SHOPLENS_CATALOG_URL="x"))
    assert check_settings_variables(bad_var, []) == ["scheduler: SHOPLENS_CATALOG_URL is not a setting of services.settings.Settings"]
    assert check_settings_variables(compose, [("SHOPLENS_SCHEDULE_EVERY", "30m", True)])
    bad_value = _broken(compose, lambda s: s["storefront-cluster"]["environment"].update(SHOPLENS_QDRANT_SHARDS="zero"))
    assert check_settings_values(bad_value, env, monkeypatch)

    assert check_commands(_broken(compose, lambda s: s["storefront"].update(command=["shoplens", "serve", "--host", "0.0.0.0"])), env)
    assert check_commands(_broken(compose, lambda s: s["scheduler"].update(command=["shoplens", "cron", "x"])), env)
    assert check_commands(_broken(compose, lambda s: s["scheduler"].update(command="shoplens schedule ${CATALOG_URL}")), env)  # no --every/--cron
    assert check_commands(compose, {}), "a required ${CATALOG_URL:?} without a value must be reported"

    assert check_app_wiring(_broken(compose, lambda s: s["scheduler"]["environment"].update(SHOPLENS_QDRANT_URL="http://qdrant-node1:6333")), env)
    assert check_app_wiring(_broken(compose, lambda s: s["storefront"]["environment"].update(SHOPLENS_DATABASE_URL="sqlite:////data/x.db")), env)

    assert check_cluster(_broken(compose, lambda s: s["qdrant-node3"].update(command=["./qdrant", "--uri", "http://qdrant-node3:6335"])), env)
    assert check_cluster(_broken(compose, lambda s: s["qdrant-node2"].update(volumes=["qdrant-node1-data:/qdrant/storage"])), env)
    assert check_cluster(_broken(compose, lambda s: s["qdrant-node1"]["environment"].pop("QDRANT__CLUSTER__ENABLED")), env)
    assert check_cluster(_broken(compose, lambda s: s["scheduler-cluster"]["environment"].pop("SHOPLENS_QDRANT_REPLICAS")), env)

    assert check_required_variables_documented("x: ${UNDOCUMENTED}\ny: ${DOC:-fine}", {}) == ["${UNDOCUMENTED} has no default and is not set in .env.example"]


def test_dockerfile_check_catches_drift() -> None:
    text, pins = DOCKERFILE.read_text(encoding="utf-8"), install_pins()
    assert check_dockerfile(text.replace("torch==2.13.0", "torch==2.14.1"), pins)
    assert check_dockerfile(text, {**pins, "open_clip_torch": "9.9.9"})
    assert check_dockerfile(text.replace("--index-url https://download.pytorch.org/whl/cpu", ""), pins)
    assert check_dockerfile(re.sub(r"^USER .*$", "USER root", text, flags=re.MULTILINE), pins)
    assert check_dockerfile(text.replace("SHOPLENS_HOME=/data", "SHOPLENS_HOME=/srv"), pins)
    assert check_dockerfile(text.replace('"--address"', '"--host"'), pins)


def test_interpolation() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$SET", env) == "v d d  v $SET"
    with pytest.raises(KeyError):
        interpolate("${EMPTY:?needed}", env)
