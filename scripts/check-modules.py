#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Each crate's top-level modules (`src/<name>.rs` or `src/<name>/`) must form a DAG: shared
contracts live in a leaf module that the others import. A module's edges are its `crate::<m>`
paths (including `use crate::{a, b::C}`), outside comments and `#[cfg(test)]` tails.

    scripts/check-modules.py            # every crate, the tests and the services
"""

from __future__ import annotations  # `str | None` on any Python 3.8+

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE_DIRS = [
    *sorted(ROOT.glob("crates/*/src")),
    *sorted(ROOT.glob("services/*/src")),
    *sorted(ROOT.glob("crates/*/tests/*")),
    *sorted(p for p in ROOT.glob("tests/*") if p.is_dir()),
]


def top_module(src: pathlib.Path, file: pathlib.Path) -> str | None:
    """The top-level module `file` belongs to (None for the crate root)."""
    parts = file.relative_to(src).with_suffix("").parts
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts[0] if parts else None


def uses(text: str) -> set[str]:
    """Top-level module names the code refers to through `crate::`."""
    text = text.split("#[cfg(test)]")[0]
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    found = set(re.findall(r"crate::(\w+)", text))
    for group in re.finditer(r"crate::\{", text):
        depth, start = 1, group.end()
        i = start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner, level, token = text[start : i - 1], 0, ""
        for ch in inner + ",":
            if ch == "{":
                level += 1
            elif ch == "}":
                level -= 1
            if level == 0 and ch == ",":
                name = re.match(r"\s*(\w+)", token)
                if name:
                    found.add(name.group(1))
                token = ""
            else:
                token += ch
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle in `graph`, if it has one."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def main() -> int:
    failed = False
    for src in SOURCE_DIRS:
        files = list(src.rglob("*.rs"))
        modules = {m for f in files if (m := top_module(src, f))}
        graph: dict[str, set[str]] = {}
        for file in files:
            module = top_module(src, file)
            if module is None:
                continue
            edges = {m for m in uses(file.read_text()) if m in modules and m != module}
            graph.setdefault(module, set()).update(edges)
        found = cycle(graph)
        if found:
            print(f"{src.relative_to(ROOT)}: modules import each other: {' -> '.join(found)}")
            failed = True
    if not failed:
        print(f"no module circles in {len(SOURCE_DIRS)} source trees")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
