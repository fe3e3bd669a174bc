"""Who people are and where accounts sit: the plain data the directory hands to policy.

Policy evaluation is pure; it receives these values and never calls AWS itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: The Identity Store attribute that says two accounts are one person.
PersonKey = Literal["email", "employee_number"]


@dataclass(frozen=True, slots=True)
class OrgUnit:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    # Root → leaf. Nested OUs inherit: a rule on Workloads covers Workloads/Prod.
    ou_path: tuple[OrgUnit, ...] = ()
    is_management: bool = False

    @property
    def ou_path_names(self) -> str:
        return "/".join(ou.name for ou in self.ou_path)


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    user_name: str
    email: str | None = None
    display_name: str | None = None
    # Group display names, as policy files name them.
    groups: frozenset[str] = field(default_factory=frozenset)
    # Who the person is across their accounts (ELEVATE_PERSON_KEY: primary email or
    # employee number, tagged, e.g. "email:ann@example.com"); None: not known, and then
    # only the user id tells two accounts apart (elevate_core.policy.approvals).
    person_key: str | None = None


@dataclass(frozen=True, slots=True)
class PermissionSet:
    name: str
    arn: str
    session_duration: str | None = None  # ISO 8601 (PT1H to PT12H), as Identity Center says
