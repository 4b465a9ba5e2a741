#!/usr/bin/env python3
"""The workspace's `rust-version` is what its dependencies need: fails when a dependency built
for this platform declares a higher `rust-version` than the workspace (a first build on the
declared toolchain would fail), and says what the highest one is. Reads `cargo metadata`."""

import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    host = next(
        line.split(":", 1)[1].strip()
        for line in subprocess.run(
            ["rustc", "-vV"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        if line.startswith("host:")
    )
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = set(metadata["workspace_members"])
    packages = {p["id"]: p for p in metadata["packages"]}
    built = {node["id"] for node in metadata["resolve"]["nodes"]}
    declared = {packages[m]["rust_version"] for m in members}
    if len(declared) != 1 or None in declared:
        sys.exit(f"every workspace member must inherit one rust-version, found {declared}")
    workspace = declared.pop()
    needed = sorted(
        (version(packages[i]["rust_version"]), packages[i]["name"], packages[i]["rust_version"])
        for i in built - members
        if packages[i].get("rust_version")
    )
    too_new = [(name, v) for key, name, v in needed if key > version(workspace)]
    if too_new:
        sys.exit(
            f"rust-version {workspace} is lower than dependencies need: "
            + ", ".join(f"{name} {v}" for name, v in too_new)
        )
    highest = needed[-1] if needed else None
    print(
        f"rust-version {workspace}; the highest a dependency needs: "
        + (f"{highest[2]} ({highest[1]})" if highest else "none declared")
    )


if __name__ == "__main__":
    main()
