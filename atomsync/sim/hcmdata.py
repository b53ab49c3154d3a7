"""Realistic HCM Atom entries for the simulator (hcm-atom-feeds.md §6-§8).

Every feed gets the Context keys of Oracle's templates letter for letter, including the
spaced keys (`Job Id`, `Assignment Id`, ...) and the `AssignmenId` typo, so that clients
are tested against what Oracle documents rather than against tidy guesses.
"""

from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass
from typing import Any, Union

from atomsync import catalog
from atomsync.timeutil import ms_to_datetime

FIRST_NAMES = (
    "Jane", "John", "Zoë", "José", "François", "Björn", "Siobhán", "Łukasz", "Ana", "Mei",
    "Priya", "Ahmed", "Olivia", "Liam", "Noah", "Emma", "Sofía", "Mateo", "Chloé", "Jürgen",
    "Ingrid", "Kenji", "Aisha", "Carlos", "Fatima", "Hannah", "Ivan", "Joaquín", "Keira",
    "Lars", "Marta", "Niamh", "Oscar", "Paulo", "Quinn", "Rosa", "Søren", "Tomás", "Ursula",
    "Wei",
)  # fmt: skip
LAST_NAMES = (
    "Roe", "Doe", "Müller", "Ødegård", "O'Brien", "García", "Nguyễn", "Smith", "Johnson",
    "Kowalski", "Dubois", "Rossi", "Tanaka", "Patel", "Khan", "Andersson", "Søndergaard",
    "D'Angelo", "Fernández", "Schröder", "Brown", "Wilson", "Taylor", "Lefèvre", "Novák",
    "Horváth", "Kovačević", "Kim", "Chen", "Singh", "Murphy", "MacDonald", "Ivanova", "Costa",
    "Haddad", "Becker", "Núñez", "Åberg", "Walsh", "Okafor",
)  # fmt: skip
AUTHORS = ("HR.SPECIALIST", "HCM_IMPL", "BETTY.ANDERSON", "LINE.MANAGER", "HCM_INTEGRATION")
JOB_NAMES = (
    "Software Engineer", "Payroll Analyst", "R&D Manager", "Sales Representative",
    "Chef de Partie", "Ingénieur Qualité", "HR Business Partner", "Warehouse Associate",
)  # fmt: skip
GRADE_NAMES = ("Grade 5", "Grade 7", "M2 Manager", "Exec <Band A>", "IC3")
LOCATION_NAMES = (
    "London - Canary Wharf", "Zürich HQ", "São Paulo Office", "Austin \"Domain\" Campus",
    "Oslo Sentrum", "Bengaluru Tech Park",
)  # fmt: skip
ORGANIZATION_NAMES = (
    "Sales & Marketing", "Research & Development", "Finance", "Ventes Europe",
    "Customer Success", "Vision Operations",
)  # fmt: skip
POSITION_NAMES = ("Senior Accountant", "Team Lead <Support>", "Buyer", "Recruiter", "Nurse")

# Letters NFKD cannot take apart into ASCII.
_ASCII_FOLD = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "æ": "ae", "ß": "ss"})

_DML_VERB = {"INSERT": "Create", "UPDATE": "Update", "DELETE": "Delete"}
_PERSON_REL = "/hcmRestApi/resources/11.13.18.05/workers/00020000000EACED00057708{:016X}"

JsonValue = Union[str, "list[JsonValue]", "dict[str, JsonValue]"]


@dataclass
class Person:
    person_id: str
    person_number: str
    first: str
    last: str
    email: str

    @property
    def display_name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def person_name(self) -> str:
        """Oracle's `PersonName`: "Last, First"."""
        return f"{self.last}, {self.first}"


@dataclass
class SimEntry:
    collection: str
    key: str
    updated_ms: int
    published_ms: int
    title: str
    summary: str
    author: str
    # Exact text of <content type="text">: normally JSON, possibly deliberately invalid.
    content: str
    related: str | None = None
    seq: int = 0

    @property
    def id(self) -> str:
        return f"atomservlet:{self.collection}:{self.key}"


@dataclass
class _Facts:
    """What every entry about one person in one event shares."""

    day: str
    started: str
    worker_type: str
    period_type: str
    phone: str
    dml: str
    verb: str
    update: bool


@dataclass
class _Parts:
    title: str
    summary: str
    context: dict[str, JsonValue]
    changed: list[JsonValue] | None = None
    flex: list[JsonValue] | None = None


def loose_json(value: Any) -> str:
    """JSON in Oracle's loose layout: `{ "Context" : [ { "PersonId" : "1" } ] }`."""
    if isinstance(value, dict):
        items = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)} : {loose_json(v)}" for k, v in value.items()
        )
        return "{ " + items + " }"
    if isinstance(value, list):
        return "[ " + ", ".join(loose_json(v) for v in value) + " ]"
    return json.dumps(value, ensure_ascii=False)


def email_for(first: str, last: str, domain: str = "example.com") -> str:
    def fold(part: str) -> str:
        text = unicodedata.normalize("NFKD", part.translate(_ASCII_FOLD))
        return "".join(c for c in text.lower() if c.isascii() and (c.isalnum() or c == "-"))

    return f"{fold(first)}.{fold(last)}@{domain}"


def _day(ms: int) -> str:
    return ms_to_datetime(ms).date().isoformat()


class EntryFactory:
    """Makes entries for any of the 13 collections; deterministic for a given seed."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._next = 300100555000100

    def new_id(self) -> str:
        """A fresh 15-digit Oracle-style ID, unique within this factory."""
        self._next += self._rng.randint(1, 37)
        return str(self._next)

    def person(self) -> Person:
        first = self._rng.choice(FIRST_NAMES)
        last = self._rng.choice(LAST_NAMES)
        return Person(
            person_id=self.new_id(),
            person_number=str(self._rng.randint(10000, 99999)),
            first=first,
            last=last,
            email=email_for(first, last),
        )

    def make(
        self,
        collection: str,
        *,
        updated_ms: int,
        published_ms: int | None = None,
        key: str | None = None,
        dml: str = "INSERT",
        content: str | None = None,
        person: Person | None = None,
    ) -> SimEntry:
        coll = catalog.lookup(collection)
        if coll is None:
            raise ValueError(f"unknown HCM collection {collection!r}")
        published = updated_ms if published_ms is None else published_ms
        if coll.workspace == "workstructures":
            object_id = key if key is not None else self.new_id()
            entry = self._workstructure(coll.name, object_id, updated_ms, dml)
        else:
            if person is None:
                person = self.person()
                if key is not None and key.startswith("EMP") and key[3:].isdigit():
                    person.person_id = key[3:]
            entry = self._person_entry(coll.name, person, updated_ms, dml)
            entry.key = key if key is not None else f"EMP{person.person_id}"
        entry.published_ms = published
        if content is not None:
            entry.content = content
        return entry

    # -- person feeds -------------------------------------------------------------------

    def _person_entry(self, name: str, p: Person, updated_ms: int, dml: str) -> SimEntry:
        rng = self._rng
        worker_type = rng.choices(("EMP", "CWK", "PWK"), weights=(8, 1, 1))[0]
        f = _Facts(
            day=_day(updated_ms),
            started=_day(updated_ms - rng.randint(30, 3000) * 86_400_000),
            worker_type=worker_type,
            # Oracle's period types: E employee, C contingent worker, P pending worker.
            period_type={"EMP": "E", "CWK": "C", "PWK": "P"}[worker_type],
            phone=rng.choice(("", "", f"+1 555 01{rng.randint(10, 99)}")),
            dml=dml,
            verb=_DML_VERB.get(dml, "Update"),
            update=dml == "UPDATE",
        )
        build = {
            "newhire": self._newhire,
            "empupdate": self._empupdate,
            "empassignment": self._empassignment,
            "payupdate": self._payupdate,
            "termination": self._relationship,
            "cancelworkrelship": self._relationship,
            "workrelshipupdate": self._relationship,
            "availabilityPatternChange": self._availability,
        }[name]
        part = build(name, p, f)
        return self._entry(
            name,
            part,
            updated_ms=updated_ms,
            related=_PERSON_REL.format(int(p.person_id)),
        )

    def _newhire(self, name: str, p: Person, f: _Facts) -> _Parts:
        kind = {"EMP": "Employee", "CWK": "Contingent Worker", "PWK": "Pending Worker"}
        ctx: dict[str, JsonValue] = {
            "PrimaryPhoneNumber": f.phone,
            "PersonId": p.person_id,
            "PersonName": p.person_name,
            "PeriodOfServiceId": self.new_id(),
            "EffectiveStartDate": f.day,
            "EffectiveDate": f.day,
            "WorkerType": f.worker_type,
            "PeriodType": f.period_type,
            "PersonNumber": p.person_number,
            "WorkEmail": p.email,
            "DMLOperation": f.dml,
        }
        summary = f"{kind[f.worker_type]} Period of Service {f.verb}d"
        return _Parts(f"{p.display_name} Hired", summary, ctx)

    def _empupdate(self, name: str, p: Person, f: _Facts) -> _Parts:
        attr, what, old, new = self._rng.choice(
            (
                ("WorkEmail", "Work E-mail Address", f"old.{p.email}", p.email),
                ("LastName", "Name", "Roe", p.last),
                ("PhoneNumber", "Phone", "+1 555 0100", "+1 555 0199"),
                ("AddressLine1", "Address", "1 Main St", "22 Rue de l'Église"),
                ("MaritalStatus", "Legislative Information", "S", "M"),
            )
        )
        ctx: dict[str, JsonValue] = {
            "PrimaryPhoneNumber": f.phone,
            "PersonId": p.person_id,
            "PersonName": p.person_name,
            "EffectiveStartDate": f.started,
            "EffectiveDate": f.day,
            "WorkerType": f.worker_type,
            "PeriodType": f.period_type,
            "PersonNumber": p.person_number,
            "WorkEmail": p.email,
            "DMLOperation": f.dml,
        }
        flex = None
        if self._rng.random() < 0.4:
            flex = [self._flex("PER_PERSONS_DFF", "badgeColour", "Blue", "Green", f.update)]
        return _Parts(
            f"{p.display_name}'s Basic Information Updated",
            f"Person {what} {f.verb}d",
            ctx,
            [_attr(attr, old, new, f.update)],
            flex,
        )

    def _empassignment(self, name: str, p: Person, f: _Facts) -> _Parts:
        attr, what, old, new = self._rng.choice(
            (
                ("ManagerId", "Assignment Manager", self.new_id(), self.new_id()),
                ("JobId", "Assignment", self.new_id(), self.new_id()),
                ("SalaryAmount", "Salary", "52000", "55500"),
                ("AssignmentStatusType", "Assignment", "ACTIVE_PROCESS", "SUSPEND_PROCESS"),
            )
        )
        ctx: dict[str, JsonValue] = {
            "PrimaryPhoneNumber": f.phone,
            "Assignment Id": self.new_id(),
            "PersonId": p.person_id,
            "PersonName": p.person_name,
            "EffectiveDate": f.day,
            "WorkerType": f.worker_type,
            "PeriodType": f.period_type,
            "PersonNumber": p.person_number,
            "WorkEmail": p.email,
            "DMLOperation": f.dml,
        }
        flex = None
        if self._rng.random() < 0.4:
            flex = [self._flex("PER_ASG_DF", "costCentre", "CC-100", "CC-210", f.update)]
        return _Parts(
            f"{p.display_name}'s Assignment {f.verb}d",
            f"Employee {what} {f.verb}d",
            ctx,
            [_attr(attr, old, new, f.update)],
            flex,
        )

    def _payupdate(self, name: str, p: Person, f: _Facts) -> _Parts:
        old_payroll, payroll = self.new_id(), self.new_id()
        # The payupdate template has no DMLOperation (§8); the summary carries the action.
        ctx: dict[str, JsonValue] = {
            "PersonId": p.person_id,
            "AssignmentId": self.new_id(),
            "PersonName": p.person_name,
            "EffectiveStartDate": f.started,
            "EffectiveDate": f.day,
            "PayrollId": payroll,
        }
        changed = [_attr("PayrollId", old_payroll, payroll, f.update)]
        if not f.update:
            changed.append({"PayrollName": self._rng.choice(("Biweekly US", "Monthly UK"))})
        return _Parts(
            f"{p.display_name}'s Payroll Details Updated",
            f"Assigned Payroll {f.verb}d",
            ctx,
            changed,
        )

    def _relationship(self, name: str, p: Person, f: _Facts) -> _Parts:
        """termination, cancelworkrelship and workrelshipupdate share one template."""
        ctx: dict[str, JsonValue] = {
            "PersonNumber": p.person_number,
            "PeriodOfServiceId": self.new_id(),
            "DMLOperation": f.dml,
            "PeriodType": f.period_type,
            "PersonName": p.person_name,
            "WorkerType": f.worker_type,
            "PrimaryFlag": "Y",
            "PersonId": p.person_id,
            "PrimaryPhoneNumber": f.phone,
            "EffectiveStartDate": f.started,
            "EffectiveDate": f.day,
        }
        if name == "termination":
            changed = [
                _attr("ActualTerminationDate", "", f.day, f.update),
                _attr("ActionCode", "", "RESIGNATION", f.update),
            ]
            return _Parts(
                f"{p.display_name} Terminated",
                "Employee Period of Service Terminated",
                ctx,
                changed,
            )
        if name == "cancelworkrelship":
            # Oracle sends the values the relationship had before it was cancelled.
            changed = [{"DateStart": f.started}, {"PrimaryFlag": "Y"}]
            return _Parts(
                f"{p.display_name}'s Work Relationship Cancelled",
                "Employee Work Relationship Cancelled",
                ctx,
                changed,
            )
        return _Parts(
            f"{p.display_name}'s Work Relationship Updated",
            "Employee Work Relationship Updated",
            ctx,
            [_attr("DateStart", f.started, f.day, f.update)],
        )

    def _availability(self, name: str, p: Person, f: _Facts) -> _Parts:
        ctx: dict[str, JsonValue] = {
            "PersonId": p.person_id,
            "PersonName": p.person_name,
            "PersonNumber": p.person_number,
            "AssignmentNumber": f"E{p.person_number}",
            "AssignmenId": self.new_id(),  # sic: Oracle's mapping page spells it so
            "AvailabilityType": self._rng.choice(("WORK_SCHEDULE", "EXCEPTION", "SHIFT_BREAK")),
            "AvailabilityTypeId": self.new_id(),
            "AvailabilityId": self.new_id(),
            "Operation": f.dml,
        }
        return _Parts(
            f"{p.display_name}'s Availability Changed", f"Availability Pattern {f.verb}d", ctx
        )

    # -- workstructures -----------------------------------------------------------------

    def _workstructure(self, name: str, object_id: str, updated_ms: int, dml: str) -> SimEntry:
        rng = self._rng
        day = _day(updated_ms)
        start = day if dml == "INSERT" else rng.choice(("1951-01-01", "2015-01-01"))
        update = dml == "UPDATE"
        noun = {
            "jobs": "Job",
            "grades": "Grade",
            "locations": "Location",
            "organizations": "Organization",
            "positions": "Position",
        }[name]
        verb = _DML_VERB.get(dml, "Update")
        label = rng.choice(
            {
                "jobs": JOB_NAMES,
                "grades": GRADE_NAMES,
                "locations": LOCATION_NAMES,
                "organizations": ORGANIZATION_NAMES,
                "positions": POSITION_NAMES,
            }[name]
        )
        ctx: dict[str, JsonValue]
        if name == "jobs":
            ctx = {
                "Name": label,
                "DMLOperation": dml,
                "Job Id": object_id,
                "Effective Start Date": start,
                "EffectiveDate": day,
            }
        elif name == "grades":
            ctx = {
                "Name": label,
                "DMLOperation": dml,
                "Grade Id": object_id,
                "Effective Start Date": start,
                "EffectiveDate": day,
            }
        elif name == "locations":
            ctx = {
                "Location Id": object_id,
                "Location Name": label,
                "DMLOperation": dml,
                "EffectiveStartDate": start,
                "EffectiveDate": day,
            }
        elif name == "organizations":
            ctx = {
                "Name": label,
                "DMLOperation": dml,
                "EffectiveStartDate": start,
                "EffectiveDate": day,
                "Organization Id": object_id,
            }
        else:
            ctx = {
                "Name": label,
                "DMLOperation": dml,
                "Effective Start Date": start,
                "EffectiveDate": day,
                "PositionId": object_id,
            }
        flex = None
        if name == "jobs" and rng.random() < 0.4:
            flex = [self._flex("PER_JOBS_DFF", "unionCode", "U1", "U2", update)]
        changed = [_attr("Name", f"{label} (old)", label, update)]
        part = _Parts(f"{noun}{verb}", f"{noun} {verb}d", ctx, changed, flex)
        entry = self._entry(name, part, updated_ms=updated_ms, related=None)
        entry.key = object_id
        return entry

    # -- helpers ------------------------------------------------------------------------

    def _flex(self, code: str, attr: str, old: str, new: str, update: bool) -> JsonValue:
        return {
            "FlexFieldCode": code,
            "ContextCode": "Global Data Elements",
            "Changed Attributes": [_attr(attr, old, new, update)],
        }

    def _entry(self, name: str, part: _Parts, *, updated_ms: int, related: str | None) -> SimEntry:
        doc: dict[str, JsonValue] = {"Context": [part.context]}
        if part.changed:
            doc["Changed Attributes"] = part.changed
        if part.flex:
            doc["FlexFields"] = part.flex
        return SimEntry(
            collection=name,
            key="",
            updated_ms=updated_ms,
            published_ms=updated_ms,
            title=part.title,
            summary=part.summary,
            author=self._rng.choice(AUTHORS),
            content=loose_json(doc),
            related=related,
        )


def _attr(name: str, old: str, new: str, update: bool) -> JsonValue:
    """One "Changed Attributes" item: old/new for updates, the value alone otherwise."""
    return {name: {"old": old, "new": new}} if update else {name: new}
