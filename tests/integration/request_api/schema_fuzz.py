"""Schemathesis over a live request-api, one role at a time: every operation of the
OpenAPI document (new ones included, as soon as the app declares them) is called with
generated requests, each response is checked against the document, and what each role
got is tallied so a test can ask for a 2xx where the role is allowed one.

Seeds steer generation towards requests that can succeed without loosening anything:
path parameters drawn from ids the test created, bodies from values the policy accepts
(the generated ones stay in the mix, so the fuzzing itself is not narrowed)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import AuthContext, Case, GenerationMode
from schemathesis.auths import AuthStorage
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Operation]

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@dataclass(frozen=True)
class Finding:
    """A response that broke a check: enough to replay it by hand."""

    operation: str
    role: str
    status: int
    problem: str
    curl: str

    def __str__(self) -> str:
        return f"{self.operation} as {self.role} -> {self.status}\n{self.problem}\n{self.curl}"


@dataclass
class Tally:
    """What each (operation, role) got across the run."""

    statuses: defaultdict[tuple[str, str], Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    findings: list[Finding] = field(default_factory=list)

    def successes(self, operation: str, role: str) -> int:
        return sum(n for code, n in self.statuses[(operation, role)].items() if 200 <= code < 300)

    def summary(self, operation: str, role: str) -> str:
        got = self.statuses[(operation, role)]
        return ", ".join(f"{code}: {n}" for code, n in sorted(got.items())) or "no calls"


@dataclass(frozen=True)
class Seeds:
    """Values generation draws from beside its own: path parameters by name (e.g. every
    `request_id` from the test's requests) and whole bodies by operation label."""

    path: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    bodies: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """One role against the live server. `token()` is asked for each generated case
    (just before it is sent), so a token is fresh, and may be short-lived where the
    operation streams until its token expires."""

    role: str
    base_url: str
    token: Callable[[Operation], str]

    def provider(self) -> AuthStorage[str]:
        """The bearer as schemathesis' auth: it then knows the document's HTTPBearer
        scheme is satisfied (it would otherwise send generated credentials), and still
        sends bad ones in the negative cases that test the scheme."""
        return AuthStorage(providers=[_Bearer(self.token)])


@dataclass(frozen=True)
class _Bearer:
    token: Callable[[Operation], str]

    def get(self, case: AnyCase, ctx: AuthContext) -> str:
        return self.token(case.operation)

    def set(self, case: AnyCase, data: str, ctx: AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


def operations(schema: BaseSchema) -> list[Operation]:
    """Every operation of the document; one it cannot turn into requests is an error."""
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append(result.ok())
    return found


@dataclass(frozen=True)
class Budget:
    """Generated calls per operation and role: `examples` free ones (positive and
    negative), and `per_seed` for each seeded value, so every seed is tried whatever
    the random stream picks (a seed that only some states pass would otherwise come
    down to luck)."""

    examples: int
    per_seed: int


def strategies(
    operation: Operation, seeds: Seeds, auth: AuthStorage[str], budget: Budget
) -> list[tuple[st.SearchStrategy[AnyCase], int]]:
    """(strategy, calls) pairs: one per seeded combination, then the free one."""

    def cases(**fixed: Any) -> st.SearchStrategy[AnyCase]:
        return operation.as_strategy(auth_storage=auth, **fixed)

    names = {p.name for p in operation.path_parameters}
    seeded = [n for n in seeds.path if n in names and seeds.path[n]]
    paths = [  # [{}] when the operation has no seeded parameter
        dict(zip(seeded, values, strict=True))
        for values in itertools.product(*(seeds.path[n] for n in seeded))
    ]
    bodies = [{"body": b} for b in seeds.bodies.get(operation.label, ())]
    fixed = [
        {"path_parameters": p, **b} if p else b
        for p, b in itertools.product(paths, bodies or [{}])
        if p or b
    ]
    free = st.one_of(cases(), cases(generation_mode=GenerationMode.NEGATIVE))
    return [(cases(**f), budget.per_seed) for f in fixed] + [(free, budget.examples)]


def fuzz(operation: Operation, caller: Caller, seeds: Seeds, tally: Tally, budget: Budget) -> None:
    """`operation` as `caller`, with a fixed seed (derandomised: the same cases every
    run for the same seeds). Failures are tallied, not raised, so Hypothesis does not
    shrink: the run's length is bounded by `budget`."""
    session = requests.Session()
    for cases, examples in strategies(operation, seeds, caller.provider(), budget):

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],  # (no shrinking: nothing is raised to shrink)
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def run(case: AnyCase) -> None:
            send(case, caller, session, tally)

        run()


def send(case: AnyCase, caller: Caller, session: requests.Session, tally: Tally) -> None:
    key = (case.operation.label, caller.role)
    response = case.call(base_url=caller.base_url, session=session, timeout=30)
    tally.statuses[key][response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except (FailureGroup, AssertionError) as failure:
        tally.findings.append(
            Finding(
                operation=key[0],
                role=caller.role,
                status=response.status_code,
                problem=str(failure)[:2000],
                curl=case.as_curl_command(base_url=caller.base_url),
            )
        )
