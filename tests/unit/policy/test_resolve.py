"""`users:` entries resolved to user ids when a service loads a policy: an entry is the
user it named at load time (not a later holder of the name, nor a name equal to it but for
case); an unknown user makes the version bad and the last good policy stays in force."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from elevate_core.directory.errors import DirectoryError
from elevate_core.directory.models import Account, User
from elevate_core.policy import (
    Evaluator,
    Policy,
    PolicyValidationError,
    PolicyWatcher,
    evaluate_request,
    explain,
    is_standing,
    parse_policy,
)
from elevate_core.policy.resolve import resolve_users
from prometheus_client import CollectorRegistry

from tests.unit.policy.org import ACCOUNTS

POLICY = """\
schema_version: 1
approval_rules:
  - {{name: auto, auto_approve: true}}
eligibility:
  - {{name: named, principals: {{users: [{users}]}}, accounts: ["*"], permission_sets: [X],
     max_duration: 1h, approval: auto}}
"""
# The directory as it is when the policy loads: user name or user id → user id.
DIRECTORY = {"sam": "id-sam", "id-oscar": "id-oscar"}
SAM = User("id-sam", "sam")
SANDBOX = ACCOUNTS["sandbox-alice"]


def policy(users: str = "sam, id-oscar") -> str:
    return POLICY.format(users=users)


def loaded(users: str = "sam, id-oscar") -> Policy:
    return resolve_users(parse_policy(policy(users).encode(), source="p.yaml"), DIRECTORY.get)


@pytest.mark.parametrize(
    ("user", "eligible"),
    [
        pytest.param(SAM, True, id="the-user-named"),
        pytest.param(User("id-oscar", "oscar"), True, id="named-by-id"),
        pytest.param(replace(SAM, user_name="sam.renamed"), True, id="renamed-since-load"),
        pytest.param(User("id-new", "sam"), False, id="new-holder-of-the-name"),
        pytest.param(User("id-SAM", "SAM"), False, id="name-differing-by-case"),
        pytest.param(User("id-long-s", "\u017fam"), False, id="name-case-folding-to-it"),
    ],
)
def test_resolved_entries_are_user_ids(user: User, eligible: bool) -> None:
    resolved = loaded()
    assert resolved.user_ids == {"sam": "id-sam", "id-oscar": "id-oscar"}
    single = evaluate_request(resolved, user, SANDBOX, "X")
    bulk = Evaluator(resolved, [SANDBOX]).terms(user, SANDBOX.id, "X")
    why = explain(resolved, user, SANDBOX, "X")
    assert (single is not None, bulk is not None, why.eligible) == (eligible,) * 3


def test_an_unknown_user_is_an_error_naming_the_entry() -> None:
    with pytest.raises(PolicyValidationError) as caught:
        loaded("sam, nobody, id-oscar")
    [issue] = caught.value.issues
    assert issue.field == "eligibility[0].principals.users[1]"
    assert issue.line == 5
    assert "no Identity Store user has the user name or user id 'nobody'" in issue.message


class Directory:
    def __init__(self) -> None:
        self.users = dict(DIRECTORY)
        self.down = False

    def lookup(self, entry: str) -> str | None:
        if self.down:
            raise DirectoryError("Identity Store unavailable")
        return self.users.get(entry)


def test_watcher_keeps_the_last_good_policy_when_a_user_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy("sam"))
    directory = Directory()
    registry = CollectorRegistry()
    watcher = PolicyWatcher(
        path, registry=registry, resolve=lambda p: resolve_users(p, directory.lookup)
    )
    good = watcher.load()
    assert good.user_ids == {"sam": "id-sam"}

    path.write_text(policy("sam, nobody"))
    assert watcher.poll() == "failed"
    assert watcher.policy is good
    assert isinstance(watcher.last_error, PolicyValidationError)
    assert "'nobody'" in str(watcher.last_error)
    assert registry.get_sample_value("elevate_policy_reload_failing") == 1
    directory.users["nobody"] = "id-nobody"
    assert watcher.poll() == "failed"  # this version is bad until the file changes

    path.write_text(policy("sam, oscar"))
    directory.down = True
    assert watcher.poll() == "failed"  # the directory, not the file: retried
    assert watcher.policy is good
    directory.down, directory.users["oscar"] = False, "id-oscar"
    assert watcher.poll() == "reloaded"
    assert watcher.policy.user_ids == {"sam": "id-sam", "oscar": "id-oscar"}
    assert registry.get_sample_value("elevate_policy_reload_failing") == 0


def test_a_service_does_not_start_with_an_unknown_user(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy("nobody"))
    directory = Directory()
    watcher = PolicyWatcher(
        path,
        registry=CollectorRegistry(),
        resolve=lambda p: resolve_users(p, directory.lookup),
    )
    with pytest.raises(PolicyValidationError, match="'nobody'"):
        watcher.load()


def test_a_directory_outage_at_start_leaves_names_exact_until_a_poll_resolves(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy("sam"))
    directory = Directory()
    directory.down = True
    watcher = PolicyWatcher(
        path,
        registry=CollectorRegistry(),
        resolve=lambda p: resolve_users(p, directory.lookup),
    )
    started = watcher.load()  # an AWS outage never keeps a service from starting
    assert (watcher.unresolved, started.user_ids) == (True, None)
    assert evaluate_request(started, SAM, SANDBOX, "X") is not None  # the exact name
    assert evaluate_request(started, User("id-SAM", "SAM"), SANDBOX, "X") is None
    assert watcher.poll() == "unchanged"  # still down
    directory.down = False
    assert watcher.poll() == "reloaded"
    assert (watcher.unresolved, watcher.policy.user_ids) == (False, {"sam": "id-sam"})
    assert watcher.policy.version == started.version
    assert evaluate_request(watcher.policy, User("id-new", "sam"), SANDBOX, "X") is None


NAMED_ACCOUNTS = """\
schema_version: 1
approval_rules:
  - {name: auto, auto_approve: true}
eligibility:
  - {name: r, principals: {groups: [g]}, accounts: [{name: sandbox-alice}, {ou: Sandbox}],
     exclude: [{name: sandbox-bob}], permission_sets: [X], max_duration: 1h, approval: auto}
standing_assignments:
  - {user: sam, account: {name: payments-prod}, permission_set: X}
"""


@pytest.mark.parametrize("warn", [True, False], ids=["prod", "dev"])
def test_account_name_selectors_warn_outside_dev(warn: bool) -> None:
    parsed = parse_policy(NAMED_ACCOUNTS.encode(), source="p.yaml")
    resolved = resolve_users(parsed, DIRECTORY.get, warn_account_names=warn)
    named = [str(w) for w in resolved.warnings if "selected by name" in w.message]
    expected = [
        "p.yaml:5: warning: eligibility[0].accounts[0]: account selected by name "
        "'sandbox-alice': account names can be changed, so the selection can move to another "
        "account; select it by id",
        "p.yaml:6: warning: eligibility[0].exclude[0]: account selected by name 'sandbox-bob'",
        "p.yaml:8: warning: standing_assignments[0].account: account selected by name "
        "'payments-prod'",
    ]
    assert len(named) == (3 if warn else 0)
    for line, want in zip(named, expected, strict=False):
        assert line.startswith(want)


BY_NAME = """\
schema_version: 1
approval_rules:
  - {name: auto, auto_approve: true}
eligibility:
  - {name: r, principals: {groups: [g]}, accounts: [{name: sandbox-alice}],
     permission_sets: [X], max_duration: 1h, approval: auto}
standing_assignments:
  - {user: sam, account: {name: sandbox-alice}, permission_set: X}
"""
MEMBER = User("id-m", "m", groups=frozenset({"g"}))


@pytest.mark.parametrize(
    ("account", "covered"),
    [
        pytest.param(SANDBOX, True, id="the-account-named-at-load"),
        pytest.param(replace(SANDBOX, name="renamed"), True, id="renamed-since-load"),
        pytest.param(replace(SANDBOX, id="999999999999"), False, id="new-account-of-that-name"),
    ],
)
def test_account_names_are_the_accounts_they_named_at_load(account: Account, covered: bool) -> None:
    parsed = parse_policy(BY_NAME.encode(), source="p.yaml")
    org = {"sandbox-alice": frozenset({SANDBOX.id})}
    resolved = resolve_users(parsed, DIRECTORY.get, lambda: org)
    assert resolved.account_ids == org
    single = evaluate_request(resolved, MEMBER, account, "X")
    bulk = Evaluator(resolved, [account]).terms(MEMBER, account.id, "X")
    why = explain(resolved, MEMBER, account, "X")
    assert (single is not None, bulk is not None, why.eligible) == (covered,) * 3
    assert is_standing(resolved, account, "X", User("id-sam", "sam")) is covered


def test_an_unknown_user_found_after_an_outage_at_start_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy("nobody"))
    directory, registry = Directory(), CollectorRegistry()
    directory.down = True
    watcher = PolicyWatcher(
        path, registry=registry, resolve=lambda p: resolve_users(p, directory.lookup)
    )
    started = watcher.load()
    directory.down = False
    assert evaluate_request(started, User("id-nobody", "nobody"), SANDBOX, "X") is not None
    assert watcher.poll() == "failed"  # nothing older to keep: it stays, reported
    assert watcher.policy.version == started.version
    # ... with its users: matching nobody, not whoever gets the name later
    assert evaluate_request(watcher.policy, User("id-nobody", "nobody"), SANDBOX, "X") is None
    assert registry.get_sample_value("elevate_policy_reload_failing") == 1
    assert watcher.poll() == "unchanged"  # reported once, not retried every poll
    assert registry.get_sample_value("elevate_policy_reload_failing") == 1
