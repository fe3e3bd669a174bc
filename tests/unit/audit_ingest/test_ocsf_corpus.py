"""The OCSF mapping corpus (corpus/*.json, see docs/audit.md#mapping-corpus).

Every record is mapped the way the service maps it (parse, correlate, `api_activity` or
`user_access`, `encode`), and each output is validated against pydantic-ocsf's model of
its class. The service does not validate at run time (it costs ten times the mapping), so
each output must also be a fixed point of validation — `validate_ocsf(doc) == doc`: every
label, derived id and stripped string the model would add or change is already there.
The mapping module — ocsf.py and enrichments.py, which builds its enrichments — is
measured while the corpus runs: branch coverage must be 100 %, so a mapping branch no corpus
record reaches fails here (add a record, or remove the branch if no valid record can reach
it).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import coverage
import pytest
from elevate_audit_ingest.domain import (
    Conflict,
    GrantWindow,
    Outcome,
    StandingAccess,
    correlate,
    parse_record,
    parse_time,
)
from ocsf._base import OCSFBaseModel
from ocsf.v1_7_0.events import ApiActivity, UserAccess
from ocsf.v1_7_0.objects import Cloud

CORPUS = Path(__file__).parent / "corpus"
# enrichments first: ocsf imports it, and must get the measured copy
MAPPING = ("elevate_audit_ingest.enrichments", "elevate_audit_ingest.ocsf")
MODELS: dict[int, type[OCSFBaseModel]] = {6003: ApiActivity, 3005: UserAccess}
CONTEXT = json.loads((CORPUS / "context.json").read_text())
GRACE = timedelta(minutes=CONTEXT["grace_minutes"])
REFUSALS = json.loads((CORPUS / "refusals.json").read_text())
LISTED: list[dict[str, Any]] = [
    case
    for path in sorted(CORPUS.glob("*.json"))
    if path.name not in {"context.json", "refusals.json"}
    for case in json.loads(path.read_text())["cases"]
]
CASES = {case["name"]: case for case in LISTED}


@dataclass
class Run:
    outputs: dict[str, dict[str, Any] | Exception | None]  # None: not emitted
    validated: dict[str, dict[str, Any] | Exception]  # validate_ocsf of each emitted output
    refusals: dict[str, str]  # the error validate_ocsf gave, or "" if it accepted
    percent: float
    report: str


def _grant(name: str) -> GrantWindow:
    g = dict(CONTEXT["grants"][name])
    g["start"], g["end"] = parse_time(g["start"]), parse_time(g["end"])
    g["approvers"] = tuple(g.get("approvers", ()))
    return GrantWindow(**g)


def _conflicts(case: Mapping[str, Any], event_id: str) -> list[Conflict]:
    """What the service finds stored under the eventID: the named cases' contents."""
    found = []
    for name in case.get("conflicts_with", ()):
        other = parse_record(CASES[name]["record"])
        assert other.event_id == event_id, f"{case['name']}: {name} has another eventID"
        where = f"s3://{other.delivery[0]}/{other.delivery[1]}" if other.delivery else None
        found.append(Conflict(digest=other.digest, delivery=where))
    return found


def _map_record(mapping: ModuleType, case: Mapping[str, Any]) -> dict[str, Any] | None:
    parsed = parse_record(case["record"])
    grants = [_grant(n) for n in case.get("grants", ())]
    standing = [StandingAccess(**CONTEXT["standing"][n]) for n in case.get("standing", ())]
    correlation = correlate(parsed, grants, standing, grace=GRACE)
    if correlation.outcome is Outcome.UNMANAGED:
        return None  # service.emit_activity emits nothing for these
    processed = case.get("processed_at", CONTEXT["processed_at"])
    grant = correlation.grant
    document: dict[str, Any] = mapping.api_activity(
        parsed,
        correlation,
        grace_until=grant.until(GRACE) if grant else None,
        processed_at=parse_time(processed) if processed else None,
        conflicts=_conflicts(case, parsed.event_id),
    )
    return document


def _map_grant_event(mapping: ModuleType, event: Mapping[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in event.items() if k not in {"grant", "activity", "at"}}
    document: dict[str, Any] = mapping.user_access(
        _grant(event["grant"]), activity=event["activity"], at=parse_time(event["at"]), **options
    )
    return document


def _map(mapping: ModuleType, case: Mapping[str, Any]) -> dict[str, Any] | Exception | None:
    try:
        if "grant_event" in case:
            document: dict[str, Any] | None = _map_grant_event(mapping, case["grant_event"])
        else:
            document = _map_record(mapping, case)
    except Exception as exc:  # reported by the case's own test
        return exc
    # what goes on the topic is the encoded document
    return None if document is None else json.loads(mapping.encode(document))


def _changed(document: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(document))
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = changed
        for name in parents:
            target = target[name]
        target[last] = value
    return changed


def _validated(mapping: ModuleType, document: dict[str, Any]) -> dict[str, Any] | Exception:
    try:
        validated: dict[str, Any] = mapping.validate_ocsf(document)
    except Exception as exc:  # reported by the case's own test
        return exc
    return validated


def _refusals(mapping: ModuleType, base: dict[str, Any]) -> dict[str, str]:
    found = {}
    for case in REFUSALS["cases"]:
        try:
            mapping.validate_ocsf(_changed(base, case["set"]))
            found[case["name"]] = ""
        except mapping.OcsfValidationError as exc:
            found[case["name"]] = str(exc)
    return found


def _fresh_mapping(patch: pytest.MonkeyPatch) -> ModuleType:
    """Execute the mapping module anew, under coverage: other tests may have imported it
    before, and its module-level lines would otherwise count as never run. The copies live
    in sys.modules only while the corpus runs."""
    for name in MAPPING:
        spec = importlib.util.find_spec(name)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
    return sys.modules[MAPPING[-1]]


@pytest.fixture(scope="module")
def run() -> Run:
    files = [str(importlib.util.find_spec(name).origin) for name in MAPPING]  # type: ignore[union-attr]
    measured = coverage.Coverage(branch=True, include=files, data_file=None, config_file=False)
    with pytest.MonkeyPatch.context() as patch:
        measured.start()
        try:
            mapping = _fresh_mapping(patch)
            outputs = {name: _map(mapping, case) for name, case in CASES.items()}
            validated = {
                name: _validated(mapping, document)
                for name, document in outputs.items()
                if isinstance(document, dict)
            }
            base = outputs[REFUSALS["base"]]
            assert isinstance(base, dict), f"refusals' base case: {base!r}"
            refusals = _refusals(mapping, base)
        finally:
            measured.stop()
    report = io.StringIO()
    percent = measured.report(morfs=files, file=report, show_missing=True)
    return Run(outputs, validated, refusals, percent, report.getvalue())


def _unknown(model: Any, path: str = "") -> list[str]:
    """Attributes the OCSF model does not define (pydantic-ocsf keeps them as extras)."""
    if isinstance(model, list):
        return [u for n, item in enumerate(model) for u in _unknown(item, f"{path}[{n}]")]
    if not isinstance(model, OCSFBaseModel):
        return []
    found = [f"{path}.{k}".lstrip(".") for k in model.model_extra or {}]
    for name in type(model).model_fields:
        found += _unknown(getattr(model, name), f"{path}.{name}".lstrip("."))
    return found


def _check_api_activity(document: Mapping[str, Any], case: Mapping[str, Any]) -> None:
    expect = case["expect"]
    record = parse_record(case["record"])
    metadata = document["metadata"]
    assert f"elevate:{expect['outcome']}" in metadata["labels"]
    assert metadata["original_event_uid"] == record.event_id
    assert document["time"] == int(record.event_time.timestamp() * 1000)
    assert document["api"]["operation"] == record.event_name
    assert metadata["log_source"] == expect.get("log_source", "kafka")
    account = expect.get("cloud_account", record.raw.get("recipientAccountId"))
    assert document["cloud"]["account"]["uid"] == account
    if "reason" in expect:
        [outlived] = [e for e in document["enrichments"] if e["name"] == "elevate.outlived-grant"]
        assert outlived["data"]["reason"] == expect["reason"]


def test_corpus_case_names_are_unique() -> None:
    # a repeated name would silently replace the earlier case (and its branches)
    assert len(CASES) == len(LISTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_corpus_record_maps_to_its_valid_ocsf_class(run: Run, name: str) -> None:
    case, document = CASES[name], run.outputs[name]
    expect = case["expect"]
    if isinstance(document, Exception):
        pytest.fail(f"{name}: mapping raised {document!r}")
    if expect["class_uid"] is None:
        assert document is None, f"{name}: emitted, but Elevate does not manage this access"
        return
    assert document is not None, f"{name}: not emitted"
    # copies: the models' validators fill labels into the dicts they are given
    model = MODELS[expect["class_uid"]].model_validate(copy.deepcopy(document))
    cloud = Cloud.model_validate(copy.deepcopy(document["cloud"]))
    unknown = [u for u in _unknown(model) if u != "cloud"] + _unknown(cloud, "cloud")
    assert unknown == [], f"{name}: attributes outside OCSF 1.7: {unknown}"
    assert document["metadata"]["version"] == "1.7.0"
    # what the service emits unvalidated is what validation would return
    assert run.validated[name] == document, f"{name}: validation adds or changes attributes"
    for key in ("class_uid", "activity_id", "severity_id", "status_id"):
        assert document[key] == expect[key], f"{name}: {key}"
    assert document["type_uid"] == expect["class_uid"] * 100 + expect["activity_id"]
    assert [e["name"] for e in document.get("enrichments", [])] == expect["enrichments"]
    if expect["class_uid"] == 6003:
        _check_api_activity(document, case)


@pytest.mark.parametrize("case", REFUSALS["cases"], ids=lambda c: c["name"])
def test_validation_refuses_what_ocsf_1_7_does_not_allow(run: Run, case: dict[str, Any]) -> None:
    assert case["error"] in run.refusals[case["name"]]


def test_the_corpus_reaches_every_branch_of_the_mapping_module(
    run: Run, record_property: Any
) -> None:
    record_property("mapping_branch_coverage", f"{run.percent:.1f}")
    print(f"OCSF mapping branch coverage {run.percent:.1f} %\n{run.report}")
    assert run.percent == 100.0, f"branches no corpus record reaches (Missing):\n{run.report}"
