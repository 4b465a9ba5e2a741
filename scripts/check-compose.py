#!/usr/bin/env python3
"""Checks that everything docker-compose.yml names exists: each depends_on target is a service,
each named volume is declared, each bind-mounted path and build context is in the repository —
and that the services with admin endpoints get an admin token, with no well-known default.
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
    for problem in problems:
        print(f"docker-compose.yml: {problem}", file=sys.stderr)
    if not problems:
        print(f"docker-compose.yml: {len(services)} services, every reference resolves")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
