"""The HCM Atom collections atomsync knows, letter for letter as Oracle spells them.

Reference: ../shared/reference/hcm-atom-feeds.md §2 and §8. The workspace of a known
collection is implied by its name; `feeds[].workspace` / `feeds[].path` cover odd tenants.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Collection:
    name: str
    workspace: str
    feed_title: str
    # Default message title, a str.format template over Context fields plus the derived
    # fields `display_name` ("Roe, Jane" -> "Jane Roe") and `action` (from DMLOperation).
    title_template: str


_PERSON = "{display_name} ({PersonNumber})"

COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("newhire", "employee", "New Hire", "New hire: " + _PERSON),
        Collection(
            "empassignment",
            "employee",
            "Person Assignment Changed",
            "Assignment changed: " + _PERSON,
        ),
        Collection(
            "empupdate",
            "employee",
            "Person Basic Information Changed",
            "Person updated: " + _PERSON,
        ),
        Collection(
            "payupdate", "employee", "Person Payroll Details Updated", "Payroll updated: " + _PERSON
        ),
        Collection("termination", "employee", "Person Terminated", "Terminated: " + _PERSON),
        Collection(
            "cancelworkrelship",
            "employee",
            "Person Work Relationship Cancelled",
            "Work relationship cancelled: " + _PERSON,
        ),
        Collection(
            "workrelshipupdate",
            "employee",
            "Employee Work Relationship Updated",
            "Work relationship updated: " + _PERSON,
        ),
        Collection("grades", "workstructures", "Workstructures Grades", "Grade {action}: {Name}"),
        Collection("jobs", "workstructures", "Workstructures Jobs", "Job {action}: {Name}"),
        Collection(
            "locations",
            "workstructures",
            "Workstructures Locations",
            "Location {action}: {Location Name}",
        ),
        Collection(
            "organizations",
            "workstructures",
            "Workstructures Organizations",
            "Organization {action}: {Name}",
        ),
        Collection(
            "positions", "workstructures", "Workstructures Positions", "Position {action}: {Name}"
        ),
        Collection(
            "availabilityPatternChange",
            "availabilityPatterns",
            "Availability Pattern Changed",
            "Availability changed: " + _PERSON,
        ),
    )
}

# Spellings seen in Oracle's own pages for the same collection (hcm-atom-feeds.md §2).
ALIASES: dict[str, str] = {"position": "positions"}

# Names that look like collections in write-ups but are not (a 404 waiting to happen).
NOT_COLLECTIONS: dict[str, str] = {
    "cancelworkrelationship": "cancelworkrelship",
    "workrelationshipupdate": "workrelshipupdate",
}


def lookup(name: str) -> Collection | None:
    return COLLECTIONS.get(ALIASES.get(name, name))
