#!/usr/bin/env python3
"""Checks the Markdown of the repository: every relative link names a file that exists and
every `#anchor` a heading of that file (as the code host makes anchors), and the README is at
most README_LINES lines. With `--extract-mermaid DIR`, writes each ```mermaid block to its own
file in DIR instead (first line: where it came from), for scripts/docs/mermaid.mjs.
Exits non-zero with one line per problem."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_LINES = 250
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files():
    skip = {"target", "node_modules", ".git"}
    for path in sorted(ROOT.rglob("*.md")):
        if not skip & set(path.relative_to(ROOT).parts):
            yield path


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a file's headings: lower case, punctuation dropped, spaces to '-'."""
    seen: dict[str, int] = {}
    result = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def check_links() -> list[str]:
    problems = []
    for path in markdown_files():
        name = path.relative_to(ROOT)
        for target in LINK.findall(prose(path.read_text())):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{name}: links to {target}, which does not exist")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{name}: links to {target}: no such heading in {linked.name}")
    readme = len((ROOT / "README.md").read_text().splitlines())
    if readme > README_LINES:
        problems.append(f"README.md: {readme} lines, more than {README_LINES}: move detail to docs/")
    return problems


def extract_mermaid(out: Path) -> int:
    count = 0
    for path in markdown_files():
        lines = path.read_text().splitlines()
        start = None
        for number, line in enumerate(lines, 1):
            if start is None and line.strip() == "```mermaid":
                start = number
            elif start is not None and line.strip() == "```":
                count += 1
                source = f"{path.relative_to(ROOT)}:{start}"
                body = "\n".join(lines[start:number - 1])
                (out / f"{count:03}.mmd").write_text(f"{source}\n{body}\n")
                start = None
    if count == 0:
        print("no Mermaid diagram found", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--extract-mermaid":
        return extract_mermaid(Path(sys.argv[2]))
    problems = check_links()
    for problem in problems:
        print(f"docs: {problem}", file=sys.stderr)
    if not problems:
        print("docs: every link and anchor resolves; the README is a front door")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
