#!/usr/bin/env python3
"""Checks that everything docker-compose.yml names exists: each depends_on target is a service,
each named volume is declared, each bind-mounted path and build context is in the repository —
that the services with admin endpoints get an admin token, with no well-known default — and
that the demo is closed to the network: every port published on 127.0.0.1 only, NATS's monitor
and the OTLP receivers not at all, Grafana's admin password generated, each container mounting
only its own directory of the secrets volume (which the one-shot `secrets` fills), and every
container read-only, without capabilities or privilege escalation.
Exits non-zero with one line per problem."""
import os
import sys

import yaml  # installed with yamllint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Services whose admin endpoints refuse every request without ADMIN_TOKEN / ADMIN_TOKEN_FILE.
WITH_ADMIN = ("order-service", "inventory-service", "notification-service")


def main() -> int:
    with open(os.path.join(ROOT, "docker-compose.yml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    volumes = compose.get("volumes", {}) or {}
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target in depends if isinstance(depends, (list, dict)) else []:
            if target not in services:
                problems.append(f"{name}: depends_on unknown service {target!r}")
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.join(ROOT, source)):
                    problems.append(f"{name}: bind mount {source!r} does not exist")
            elif source not in volumes:
                problems.append(f"{name}: volume {source!r} is not declared")
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isfile(os.path.join(ROOT, context, dockerfile)):
                problems.append(f"{name}: no {dockerfile} in build context {context!r}")
        for env_file in service.get("env_file", []) if isinstance(service.get("env_file"), list) else []:
            if not os.path.isfile(os.path.join(ROOT, env_file)):
                problems.append(f"{name}: env_file {env_file!r} does not exist")
    for name in WITH_ADMIN:
        env = (services.get(name) or {}).get("environment") or {}
        if not {"ADMIN_TOKEN", "ADMIN_TOKEN_FILE"} & set(env):
            problems.append(f"{name}: no ADMIN_TOKEN or ADMIN_TOKEN_FILE (its admin API is closed)")
    for name, service in services.items():
        env = service.get("environment") or {}
        token = str(env.get("ADMIN_TOKEN", "")) if isinstance(env, dict) else ""
        if ":-" in token and not token.endswith(":-}"):
            problems.append(f"{name}: ADMIN_TOKEN has a built-in default, which anyone can read here")
    problems += closed_to_the_network(services)
    problems += one_shots_adopted(services)
    problems += built_never_pulled(services)
    for problem in problems:
        print(f"docker-compose.yml: {problem}", file=sys.stderr)
    if not problems:
        print(f"docker-compose.yml: {len(services)} services, every reference resolves")
    return 1 if problems else 0


# Ports that stay inside the compose network: NATS's monitor, OTLP gRPC and HTTP.
NEVER_PUBLISHED = {8222, 4317, 4318}
# The one-shot that writes the secrets: it alone mounts the whole volume, as root.
SECRETS_WRITER = "secrets"
SECRETS_WRITER_CAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER"}


def published(port):
    """(host address, container port) of a `ports` entry."""
    if isinstance(port, dict):
        return port.get("host_ip", ""), int(str(port.get("target")).split("/")[0])
    parts = str(port).split(":")
    host = parts[0] if len(parts) == 3 else ""
    return host, int(parts[-1].split("/")[0])


def closed_to_the_network(services):
    problems = []
    writer = services.get(SECRETS_WRITER) or {}
    writes = "\n".join(writer.get("command") or [])
    for name, service in services.items():
        for port in service.get("ports", []):
            host, container = published(port)
            if container in NEVER_PUBLISHED:
                problems.append(f"{name}: publishes {container}, which stays inside the network")
            if host != "127.0.0.1":
                problems.append(f"{name}: publishes {container} on every interface, not 127.0.0.1")
        if service.get("read_only") is not True:
            problems.append(f"{name}: root filesystem is writable (read_only: true)")
        if "ALL" not in (service.get("cap_drop") or []):
            problems.append(f"{name}: keeps its capabilities (cap_drop: [ALL])")
        if "no-new-privileges:true" not in (service.get("security_opt") or []):
            problems.append(f"{name}: may gain privileges (security_opt: no-new-privileges:true)")
        extra_caps = set(service.get("cap_add") or [])
        allowed = SECRETS_WRITER_CAPS if name == SECRETS_WRITER else set()
        if extra_caps - allowed:
            problems.append(f"{name}: adds capabilities {sorted(extra_caps - allowed)}")
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source != "secrets" or name == SECRETS_WRITER:
                continue
            subpath = (mount.get("volume") or {}).get("subpath") if isinstance(mount, dict) else None
            if subpath != name:
                problems.append(f"{name}: mounts {subpath or 'the whole secrets volume'}, not its own secrets ({name})")
            elif f"give {name} " not in writes:
                problems.append(f"{name}: the secrets one-shot writes nothing for it")
            if not (isinstance(mount, dict) and mount.get("read_only") is True):
                problems.append(f"{name}: may write to its secrets")
    grafana = (services.get("grafana") or {}).get("environment") or {}
    if "GF_SECURITY_ADMIN_PASSWORD__FILE" not in grafana or "GF_SECURITY_ADMIN_PASSWORD" in grafana:
        problems.append("grafana: its admin password is not the generated one (GF_SECURITY_ADMIN_PASSWORD__FILE)")
    return problems


def built_never_pulled(services):
    """An image built here is never pulled under its name (someone else could publish it), and
    deploy/compose-released.yml switches exactly those to the released images."""
    built = {n for n, s in services.items() if s.get("build") is not None}
    problems = [
        f"{name}: built here but may be pulled (pull_policy: build)"
        for name in sorted(built) if services[name].get("pull_policy") != "build"
    ]
    with open(os.path.join(ROOT, "deploy/compose-released.yml"), encoding="utf-8") as f:
        released = yaml.safe_load(f).get("services", {})
    if set(released) != built:
        problems.append(f"deploy/compose-released.yml overrides {sorted(released)}, not the built {sorted(built)}")
    problems += [
        f"deploy/compose-released.yml: {name} does not pull the released image (pull_policy: missing)"
        for name, service in released.items() if (service or {}).get("pull_policy") != "missing"
    ]
    return problems


def one_shots_adopted(services):
    """`docker compose up --wait` (scripts/e2e-compose, CI) fails when a one-shot exits, even
    with 0, unless a service that keeps running waits for it (`service_completed_successfully`)."""
    one_shots = {n for n, s in services.items() if str(s.get("restart", "")) == "no"}
    adopted = set()
    for name, service in services.items():
        depends = service.get("depends_on")
        if name in one_shots or not isinstance(depends, dict):
            continue
        adopted |= {t for t, c in depends.items() if (c or {}).get("condition") == "service_completed_successfully"}
    return [
        f"{name}: a one-shot no running service waits for (`up --wait` would fail when it exits)"
        for name in sorted(one_shots - adopted)
    ]


if __name__ == "__main__":
    sys.exit(main())
