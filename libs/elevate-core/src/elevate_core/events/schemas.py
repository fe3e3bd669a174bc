"""Generate docs/events/*.json from the event models.

`python -m elevate_core.events.schemas [DIR] [--allow-breaking]` (or `make schemas`).
The committed schemas are the compatibility contract: a change that would break a reader
or writer of the committed version is refused (exit 1) unless `--allow-breaking` — which
is for a new `v2` event, never for an edit of a `v1` one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import elevate_core.events.models  # noqa: F401 - registers every event class
from elevate_core.events.base import registered_events
from elevate_core.events.compat import compatibility_problems


def render_schemas() -> dict[str, str]:
    out: dict[str, str] = {}
    for ce_type, cls in registered_events().items():
        schema = cls.model_json_schema()
        schema["$id"] = f"https://elevate.example/events/{ce_type}.json"
        schema["x-ce-type"] = ce_type
        schema["x-topic"] = str(cls.topic)
        out[f"{ce_type}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def breaking_changes(directory: Path) -> list[str]:
    """Problems of the models' schemas against the ones committed in `directory`."""
    problems: list[str] = []
    rendered = render_schemas()
    for committed in sorted(directory.glob("io.elevate.*.json")):
        if committed.name not in rendered:
            problems.append(f"{committed.name}: event removed")
            continue
        old = json.loads(committed.read_text())
        new = json.loads(rendered[committed.name])
        problems.extend(f"{committed.name}: {p}" for p in compatibility_problems(old, new))
    return problems


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in directory.glob("io.elevate.*.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    allow = "--allow-breaking" in argv
    args = [a for a in argv if a != "--allow-breaking"]
    target = Path(args[0]) if args else Path("docs/events")
    problems = breaking_changes(target)
    if problems and not allow:
        for problem in problems:
            print(f"breaking: {problem}", file=sys.stderr)
        print("refused: add a new event version instead (or --allow-breaking)", file=sys.stderr)
        return 1
    for p in write_schemas(target):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
