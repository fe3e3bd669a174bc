"""Generate docs/events/*.json from the event models.

`python -m elevate_core.events.schemas [DIR]` (or `make schemas`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import elevate_core.events.models  # noqa: F401 - registers every event class
from elevate_core.events.base import registered_events


def render_schemas() -> dict[str, str]:
    out: dict[str, str] = {}
    for ce_type, cls in registered_events().items():
        schema = cls.model_json_schema()
        schema["$id"] = f"https://elevate.example/events/{ce_type}.json"
        schema["x-ce-type"] = ce_type
        schema["x-topic"] = str(cls.topic)
        out[f"{ce_type}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


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


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/events")
    for p in write_schemas(target):
        print(p)
