#!/usr/bin/env python3
"""What actionlint does not check in .github/workflows: every action pinned by a full commit
SHA (a tag can be moved to other code; the version stays in a comment), and least privilege —
the workflow grants nothing (`permissions: {}`) and each job names what it needs.
Exits non-zero with one line per problem."""
import re
import sys
from pathlib import Path

import yaml  # installed with yamllint

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def main() -> int:
    problems = []
    workflows = sorted((ROOT / ".github/workflows").glob("*.y*ml"))
    if not workflows:
        problems.append("no workflows in .github/workflows")
    for path in workflows:
        name = path.relative_to(ROOT)
        text = path.read_text()
        workflow = yaml.safe_load(text)
        if workflow.get("permissions") != {}:
            problems.append(f"{name}: grants permissions to every job (use `permissions: {{}}`)")
        for job_name, job in (workflow.get("jobs") or {}).items():
            if "permissions" not in job:
                problems.append(f"{name}: job {job_name} does not say which permissions it needs")
        for line_number, line in enumerate(text.splitlines(), 1):
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not match or match.group(1).startswith("./"):
                continue
            if not PINNED.match(match.group(1)):
                problems.append(f"{name}:{line_number}: {match.group(1)} is not pinned by commit SHA")
            elif "#" not in match.group(2):
                problems.append(f"{name}:{line_number}: say the pinned version in a comment")
    for problem in problems:
        print(f"workflows: {problem}", file=sys.stderr)
    if not problems:
        print(f"workflows: {len(workflows)} files, every action pinned, every job's permissions named")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
