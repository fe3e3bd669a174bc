"""The Helm chart's data from the code: the Strimzi ACLs are the ACL table's grants, the
committed file is current, and the README lists every value of values.yaml."""

from __future__ import annotations

import json

import pytest
import yaml
from elevate_core.kafka import acls
from elevate_local import chart


def test_the_committed_acl_data_is_current() -> None:
    assert chart.DATA_FILE.read_text() == chart.render(), "run python -m elevate_local.chart"


@pytest.mark.parametrize("principal", [*acls.SERVICES, acls.Principal.ADMIN, acls.Principal.SIEM])
def test_each_kafka_user_gets_exactly_the_grants_of_the_acl_table(
    principal: acls.Principal,
) -> None:
    rendered = {
        (entry["resource"]["type"], entry["resource"]["name"], entry["resource"]["patternType"], op)
        for entry in chart.strimzi_acls(principal)
        for op in entry["operations"]
    }
    table = {
        (g.resource, g.name, g.pattern, g.operation)
        for g in acls.grants()
        if g.principal is principal
    }
    assert len(rendered) == len(table)
    as_kafka = {
        (t.upper().replace("TRANSACTIONALID", "TRANSACTIONAL_ID"), n, p, op)
        for t, n, p, op in rendered
    }
    strimzi_ops = {v: k for k, v in chart._OPERATION.items()}
    strimzi_patterns = {v: k for k, v in chart._PATTERN.items()}
    assert {(t, n, strimzi_patterns[p], strimzi_ops[o]) for t, n, p, o in as_kafka} == table


def test_only_the_writers_of_signed_topics_get_a_signing_key() -> None:
    data = json.loads(chart.DATA_FILE.read_text())
    assert data["signers"] == ["request-api", "approval"]
    assert data["services"] == [str(p) for p in acls.SERVICES]


def test_the_readme_lists_every_value_with_its_default() -> None:
    values = chart.VALUES_FILE.read_text()
    assert chart.undocumented(values) == []
    readme = chart.README_FILE.read_text()
    assert readme == chart.readme_with_table(readme, values), "run python -m elevate_local.chart"
    for key, default, _ in chart.documented_values(values):
        assert f"| `{key}` | `{default.replace('|', chr(92) + '|')}` |" in readme


def test_an_undocumented_value_is_found() -> None:
    values = "# -- documented\na: 1\nb:\n  # -- documented too\n  c: 2\n  d: 3\n"
    assert chart.undocumented(values) == ["b.d"]
    assert [k for k, _, _ in chart.documented_values(values)] == ["a", "b.c"]
    assert yaml.safe_load(values)["b"]["d"] == 3


def test_every_setting_the_chart_sets_is_one_values_may_not_override() -> None:
    """A user's `env` comes after the chart's in a container's list and would win: every
    `ELEVATE_*` name the templates write must be refused by the schema in `env`,
    `extraEnv` and `secretFiles`, or its value's checks (https issuer, …) are bypassed."""
    import re

    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    refused = set(schema["definitions"]["chartOwnedSetting"]["enum"])
    written = {
        name
        for template in (chart.CHART / "templates").iterdir()
        for name in re.findall(r"ELEVATE_[A-Z0-9_]+", template.read_text())
    }
    assert written, "the templates write no settings?"
    assert written <= refused, sorted(written - refused)
    refs = json.dumps(schema).count('"#/definitions/chartOwnedSetting"')
    assert refs == 7  # extraEnv, each service's env (5) and secretFiles[].env
