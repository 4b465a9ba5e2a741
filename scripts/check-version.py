#!/usr/bin/env python3
"""One version everywhere: the workspace's (Cargo.toml, `[workspace.package] version`).

Checks that every crate of the workspace has it (so each binary's `--version` and the
`service.version` of its traces say it), that the Kubernetes base deploys the images tagged
with it, and that CHANGELOG.md's newest release is it (Keep a Changelog form, with its link).

  scripts/check-version.py              check all of the above
  scripts/check-version.py --print      print the version
  scripts/check-version.py --tag v1.2.3 also check a release tag names it (the release workflow)
  scripts/check-version.py --notes      print CHANGELOG.md's section of the version (release notes)
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ["order-service", "inventory-service", "notification-service", "orderflow-admin"]


def workspace_version() -> str:
    """`version` of `[workspace.package]` (read without tomllib: any Python 3 runs this)."""
    manifest = (ROOT / "Cargo.toml").read_text()
    table = re.search(r"^\[workspace\.package\]\n(.*?)(?=^\[|\Z)", manifest, re.M | re.S)
    version = table and re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
    if not version:
        sys.exit("version: Cargo.toml has no [workspace.package] version")
    return version.group(1)


def crate_versions():
    metadata = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return {p["name"]: p["version"] for p in json.loads(metadata.stdout)["packages"]}


def image_tags():
    """`images:` of the base kustomization: name → newTag (plain YAML of one known shape)."""
    text = (ROOT / "deploy/k8s/base/kustomization.yaml").read_text()
    entries = re.findall(r"- name: ghcr\.io/orderflow/([a-z-]+)\n\s+newTag: (\S+)", text)
    return dict(entries)


def changelog_release():
    """The newest release heading of CHANGELOG.md and whether its link is defined."""
    text = (ROOT / "CHANGELOG.md").read_text()
    match = re.search(r"^## \[(\d+\.\d+\.\d+[^\]]*)\] - \d{4}-\d{2}-\d{2}$", text, re.MULTILINE)
    if not match:
        return None, False
    version = match.group(1)
    linked = re.search(rf"^\[{re.escape(version)}\]: https://\S+$", text, re.MULTILINE)
    return version, linked is not None


def release_notes(version):
    """CHANGELOG.md's section of `version`, without its heading."""
    text = (ROOT / "CHANGELOG.md").read_text()
    match = re.search(
        rf"^## \[{re.escape(version)}\] - .*?\n(.*?)(?=^## \[|^\[[^\]]+\]: |\Z)",
        text, re.MULTILINE | re.DOTALL,
    )
    return match.group(1).strip() + "\n" if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the version and stop")
    parser.add_argument("--tag", help="a release tag that must be v<version>")
    parser.add_argument("--notes", action="store_true", help="print the version's release notes")
    args = parser.parse_args()

    version = workspace_version()
    if args.print:
        print(version)
        return 0
    if args.notes:
        notes = release_notes(version)
        if notes is None:
            print(f"version: CHANGELOG.md has no section for {version}", file=sys.stderr)
            return 1
        print(notes, end="")
        return 0

    problems = []
    for crate, crate_version in sorted(crate_versions().items()):
        if crate_version != version:
            problems.append(f"crate {crate} is {crate_version}: use `version.workspace = true`")
    tags = image_tags()
    for image in IMAGES:
        tag = tags.get(image)
        if tag != version:
            problems.append(
                f"deploy/k8s/base/kustomization.yaml deploys {image}:{tag}, not :{version}"
            )
    released, linked = changelog_release()
    if released != version:
        problems.append(f"CHANGELOG.md's newest release is {released}, not {version}")
    elif not linked:
        problems.append(f"CHANGELOG.md has no link for [{version}]")
    if args.tag is not None and args.tag != f"v{version}":
        problems.append(f"the tag {args.tag} does not name this version: tag v{version}")

    for problem in problems:
        print(f"version: {problem}", file=sys.stderr)
    if not problems:
        print(f"version {version}: crates, image tags and CHANGELOG agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
