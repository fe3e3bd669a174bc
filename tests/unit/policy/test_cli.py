"""`elevate policy check|explain`: broken files name their line and field; exit codes."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from elevate_core.cli import main

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "deploy" / "local" / "policy.yaml"
BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
HEADER = re.compile(r"^# expect-(line|field|message):[ \t]*(.*)$", re.MULTILINE)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_there_is_a_broken_file_per_kind_of_mistake() -> None:
    assert len(BROKEN) >= 25


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_check_rejects_broken_file_with_line_and_field(path: Path) -> None:
    expect = dict(HEADER.findall(path.read_text()))
    assert set(expect) == {"line", "field", "message"}, f"{path.name}: incomplete header"
    code, out, err = run("policy", "check", str(path))
    assert code == 1
    assert out == ""
    field = f" {expect['field']}:" if expect["field"] else ""
    prefix = f"{path}:{expect['line']}:{field} "
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert lines, f"expected a line starting {prefix!r} in:\n{err}"
    assert any(expect["message"] in line for line in lines), err
    assert err.rstrip().endswith("INVALID (" + err.rstrip().rsplit("INVALID (", 1)[1])


def test_check_accepts_the_example_policy() -> None:
    code, out, err = run("policy", "check", str(EXAMPLE), "--strict")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"{re.escape(str(EXAMPLE))}: OK \(version [0-9a-f]{{12}}: 4 eligibility rule\(s\), "
        r"3 approval rule\(s\), 1 standing assignment\(s\), 0 warning\(s\)\)\n",
        out,
    )


def test_console_script_exit_codes() -> None:
    script = Path(sys.executable).parent / "elevate"
    good = subprocess.run(
        [str(script), "policy", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    bad_file = Path(__file__).parent / "broken" / "bad_duration.yaml"
    bad = subprocess.run(
        [str(script), "policy", "check", str(bad_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert f"{bad_file}:16: eligibility[0].max_duration: invalid duration" in bad.stderr


def test_check_several_files_fails_if_any_fails(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    code, out, err = run("policy", "check", str(EXAMPLE), str(BROKEN[0]), str(missing))
    assert code == 1
    assert "OK" in out
    assert f"{missing}: cannot read policy: No such file or directory" in err


WARNED = """\
schema_version: 1
approval_rules:
  - {name: leads, approver_groups: [sre-leads], required_approvals: 3}
  - {name: unused, auto_approve: true}
eligibility:
  - {name: r, principals: {groups: [sre]}, accounts: ["*"], permission_sets: [X],
     max_duration: 1h, approval: leads}
"""


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(WARNED)
    code, out, err = run("policy", "check", str(path))
    assert code == 0
    assert f"{path}:1: warning: auditor_groups: no auditor groups" in err
    assert f"{path}:4: warning: approval_rules[1].name: approval rule 'unused' is not used" in err
    assert "2 warning(s)" in out
    code, _, err = run("policy", "check", str(path), "--strict")
    assert code == 1
    assert "INVALID (2 warning(s) with --strict)" in err


def test_group_members_enable_reachability_warning(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(WARNED)
    code, _, err = run(
        "policy",
        "check",
        str(path),
        "--group-members",
        "sre-leads=bob,frank",
        "--group-members",
        "sre=alice",
    )
    assert code == 0
    assert (
        f"{path}:3: warning: approval_rules[0].required_approvals: approval rule 'leads' "
        "needs 3 approval(s) but its approver groups (sre-leads) have only 2 distinct "
        "member(s): requests under it can never be approved"
    ) in err
    code, _, err = run("policy", "check", str(path), "--group-members", "oops")
    assert code == 2
    assert "use GROUP=user1,user2" in err


EXPLAIN = ("policy", "explain", str(EXAMPLE))


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        pytest.param(
            (
                "--user",
                "alice",
                "--groups",
                "engineers,sre",
                "--account",
                "payments-prod",
                "--ou-path",
                "Workloads/Prod",
                "--permission-set",
                "AdministratorAccess",
            ),
            0,
            "ELIGIBLE: alice -> AdministratorAccess on payments-prod (id unknown, in "
            "Workloads/Prod): rule 'sre-prod-admin'; approval 'one-sre-lead' (1 "
            "approval(s) from sre-leads); max 4h; ticket required",
            id="eligible",
        ),
        pytest.param(
            (
                "--user",
                "erin",
                "--groups",
                "engineers",
                "--account",
                "payments-prod",
                "--ou-path",
                "Workloads/Prod",
                "--permission-set",
                "AdministratorAccess",
            ),
            1,
            "[no   ] sre-prod-admin: erin is in none of groups [sre]",
            id="not-eligible",
        ),
        pytest.param(
            (
                "--user",
                "alice",
                "--groups",
                "sre",
                "--account",
                "123456789012",
                "--account-name",
                "payments-prod",
                "--ou-path",
                "Workloads/Prod",
                "--permission-set",
                "DatabaseAdmin",
            ),
            0,
            "approval 'two-sre-leads' (2 approval(s) from sre-leads)",
            id="by-id",
        ),
        pytest.param(
            (
                "--user",
                "alice",
                "--groups",
                "sre",
                "--account",
                "sandbox-shared",
                "--ou-path",
                "Sandbox",
                "--permission-set",
                "AdministratorAccess",
            ),
            1,
            "hint: as a break-glass request this would be allowed by 'sre-break-glass'",
            id="break-glass-hint",
        ),
        pytest.param(
            (
                "--user",
                "alice",
                "--groups",
                "sre",
                "--account",
                "sandbox-shared",
                "--ou-path",
                "Sandbox",
                "--permission-set",
                "AdministratorAccess",
                "--break-glass",
            ),
            0,
            "reviewed afterwards by sre-leads, auditors",
            id="break-glass",
        ),
        pytest.param(
            (
                "--user",
                "alice",
                "--groups",
                "sre",
                "--account",
                "log-archive",
                "--ou-path",
                "Security",
                "--permission-set",
                "AdministratorAccess",
                "--break-glass",
            ),
            1,
            "account excluded by ou Security",
            id="break-glass-excluded",
        ),
        pytest.param(
            (
                "--user",
                "alice",
                "--groups",
                "sre",
                "--account",
                "root-mgmt",
                "--management",
                "--permission-set",
                "AdministratorAccess",
                "--break-glass",
            ),
            1,
            "management account is covered only when named by id or name",
            id="management",
        ),
    ],
)
def test_explain(args: tuple[str, ...], code: int, expected: str) -> None:
    got, out, err = run(*EXPLAIN, *args)
    assert (got, err) == (code, "")
    assert expected in out


def test_explain_json_and_invalid_policy() -> None:
    code, out, _ = run(
        *EXPLAIN,
        "--user",
        "erin",
        "--groups",
        "engineers",
        "--account",
        "sandbox-alice",
        "--ou-path",
        "Sandbox",
        "--permission-set",
        "ReadOnlyAccess",
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["eligible"] is True
    assert payload["terms"]["approval_rule"] == "auto"
    assert payload["terms"]["max_duration"] == "8h"
    assert payload["matched_rules"] == ["engineers-sandbox-readonly"]
    code, _, err = run(
        "policy",
        "explain",
        str(BROKEN[0]),
        "--user",
        "x",
        "--account",
        "y",
        "--permission-set",
        "z",
    )
    assert code == 1
    assert "invalid policy" in err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        run("policy", "explain", str(EXAMPLE))
    assert exc.value.code == 2
    assert run()[0] == 2


NAMED_USERS = """\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - {name: auto, auto_approve: true}
eligibility:
  - {name: r, principals: {users: [sam]}, accounts: ["*"], permission_sets: [X],
     max_duration: 1h, approval: auto}
"""


def test_check_warns_that_users_are_not_resolved_offline(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(NAMED_USERS)
    code, out, err = run("policy", "check", str(path), "--strict")
    assert code == 0  # naming a user is fine; only it cannot be checked without AWS
    assert (
        f"{path}:6: warning: eligibility[0].principals.users[0]: user 'sam' is not checked "
        "offline: a service resolves it to an Identity Store user id"
    ) in err
    assert "0 warning(s)" in out
