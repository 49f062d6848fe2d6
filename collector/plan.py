"""Reading plans: what the collector reads from which meters, when, and how hard it retries.

A plan is a TOML file (read with :mod:`tomllib`); :data:`DEFAULT_PLAN_TOML` is the built-in one
that ``hes collect`` uses without ``--config``. Every key is checked, unknown keys included
(a typo must not silently fall back to a default), and a bad file raises :class:`PlanError`
naming the file and the dotted key. Example::

    [collector]
    concurrency = 500          # sessions in flight over all links
    timezone = "UTC"           # collection days run midnight to midnight here
    profile_dir = "profiles"   # meter profiles (docs/meter-profiles.md), beside the shipped

    [retry]
    max_attempts = 6           # sessions per meter and run, first one included
    backoff_base_s = 2.0       # delay before retry n: random(0, min(max, base * 2**(n-1)))
    backoff_max_s = 300.0

    [timeouts]
    request_s = 10.0           # one request/response
    session_s = 120.0          # one whole session (connect to release)
    hdlc_frame_s = 3.0         # HDLC retransmission timer
    hdlc_retries = 3

    [[group]]
    name = "residential"
    match = { area = "north*", transport = "tcp" }   # globs on meter fields; all must match
    back_days = 3              # also re-read gaps of the 3 days before the collected day
    registers = ["1.0.1.8.0.255", "1.0.2.8.0.255"]
    window = { start = "00:05", deadline = "06:00" }  # after the collected day's midnight
    [group.profile]
    obis = "1.0.99.1.0.255"
    period_s = 900
    status_column = 1          # AMR status column (optional)
    [group.profile.channels]   # buffer column index -> stored channel name
    2 = "1.0.1.8.0.255"
    [group.schedule]           # optional: run by `hes serve` (collector/schedule.py)
    profile = { cron = "5 0 * * *", until = "06:00" }   # in collector.timezone
    registers = { cron = "5 0 * * *", until = "06:00" }
    events = { every = "1h" }
    clock = { cron = "30 3 * * *" }

    [[group]]
    name = "optical"
    match = { transport = "serial", station = "bench*" }
    startup = "iec62056-21"    # serial meters that need the IEC 62056-21 mode E sign-on
    device_address = "meter_id"  # sent in the sign-on request ("none": no address)
    [group.profile]
    obis = "1.0.99.1.0.255"
    period_s = 900

    [line_loss]                # hes report --line-loss (docs/line-loss.md)
    band = [0.0, 0.10]         # loss rates judged ok, bounds included
    channel = "1.0.1.8.0.255"  # the stored A+ channel it is computed on

A meter takes the first group whose ``match`` accepts it; meters no group accepts are not read.
A meter whose inventory names a meter profile with a channel map reads that map's load
profile, columns and registers instead of the group's (:meth:`Plan.meter_group`).
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from collector.meter_profiles import MeterProfile, ProfileLibrary
from collector.schedule import TASKS, Schedule, ScheduleError, parse_every, parse_until
from collector.toml_table import TomlTable
from contracts.meters import STARTUPS
from protocols.cosem import Obis
from protocols.errors import DecodeError
from storage.records import MeterRecord

MATCH_FIELDS = ("meter_id", "area", "station", "transport", "link_id")
#: What a mode E group sends as the sign-on's device address: the meter id, or nothing.
DEVICE_ADDRESSES = ("meter_id", "none")
#: Load-profile entries older than this are gone from a typical meter's buffer (62 days in
#: the simulator, 40-90 days in the field), so gap re-reads further back are pointless.
MAX_BACK_DAYS = 60

DEFAULT_PLAN_TOML = """
[collector]
concurrency = 500
timezone = "UTC"

[retry]
max_attempts = 6
backoff_base_s = 2.0
backoff_max_s = 300.0

[timeouts]
request_s = 10.0
session_s = 120.0
hdlc_frame_s = 3.0
hdlc_retries = 3

[[group]]
name = "default"
back_days = 3
registers = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]
window = { start = "00:05", deadline = "06:00" }

[group.profile]
obis = "1.0.99.1.0.255"
period_s = 900
status_column = 1

[group.profile.channels]
2 = "1.0.1.8.0.255"
3 = "1.0.2.8.0.255"
4 = "1.0.3.8.0.255"
5 = "1.0.4.8.0.255"
"""


class PlanError(ValueError):
    """A reading plan was rejected; the message names the file and the key."""


@dataclass(slots=True, frozen=True)
class ProfilePlan:
    """Which load profile to read and how its buffer columns map to stored channels."""

    obis: str
    period_s: int
    channels: dict[int, str]
    status_column: int | None = None


@dataclass(slots=True, frozen=True)
class Window:
    """Collection window of a day, as offsets after the following midnight."""

    start: timedelta
    deadline: timedelta

    def bounds(self, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
        """(start, deadline) for collecting ``day``: the morning after it."""
        midnight = datetime.combine(day + timedelta(days=1), time(0), tz)
        return midnight + self.start, midnight + self.deadline


@dataclass(slots=True, frozen=True)
class Group:
    """A set of meters (by glob on inventory fields) and what to read from them."""

    name: str
    match: dict[str, str]
    profile: ProfilePlan
    registers: tuple[str, ...]
    window: Window
    back_days: int
    #: Task kind (``profile``, ``registers``, ``events``, ``clock``) -> when ``hes serve``
    #: runs it; empty without a ``[group.schedule]`` table (then the service runs the
    #: ``window`` daily, as ``hes collect`` does: :mod:`collector.schedule_jobs`).
    schedules: dict[str, Schedule] = field(default_factory=dict)
    #: How the group's serial links start: "hdlc", or "iec62056-21" (mode E sign-on first).
    startup: str = "hdlc"
    #: With mode E: "meter_id" (the meter id is the sign-on's device address) or "none".
    device_address: str = "meter_id"

    def accepts(self, meter: MeterRecord) -> bool:
        for key, pattern in self.match.items():
            value = getattr(meter, key)
            if value is None or not fnmatch.fnmatchcase(str(value), pattern):
                return False
        return True

    @property
    def channels(self) -> list[str]:
        return list(self.profile.channels.values())


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0


@dataclass(slots=True, frozen=True)
class Timeouts:
    request_s: float = 10.0
    session_s: float = 120.0
    hdlc_frame_s: float = 3.0
    hdlc_retries: int = 3


@dataclass(slots=True, frozen=True)
class LineLoss:
    """How ``hes report --line-loss`` judges an area: the ok band of the loss rate and the
    stored A+ channel it reads."""

    band: tuple[float, float] = (0.0, 0.10)
    channel: str = "1.0.1.8.0.255"


def check_band(low: float, high: float) -> tuple[float, float]:
    """A loss-rate band as ``(low, high)``; ValueError says what is wrong with it."""
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(
            f"band {low:g}:{high:g} must satisfy 0 <= low < high <= 1 (loss rates, 0.1 = 10 %)"
        )
    return low, high


@dataclass(slots=True, frozen=True)
class Plan:
    """A whole reading plan."""

    source: str
    groups: tuple[Group, ...]
    concurrency: int = 500
    timezone: str = "UTC"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    line_loss: LineLoss = field(default_factory=LineLoss)
    #: Where the inventory's meter profiles are found: ``[collector] profile_dir``, then
    #: the shipped profiles.
    profiles: ProfileLibrary = field(default_factory=ProfileLibrary, compare=False)

    @property
    def tz(self) -> tzinfo:
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)

    def group_for(self, meter: MeterRecord) -> Group | None:
        """The first group accepting ``meter`` (None: the plan does not read it)."""
        for group in self.groups:
            if group.accepts(meter):
                return group
        return None

    def meter_profile(self, meter: MeterRecord) -> MeterProfile | None:
        """The profile the inventory names for ``meter`` (MeterProfileError: it is gone
        or broken since the import)."""
        return None if meter.profile is None else self.profiles.get(meter.profile)

    def meter_group(self, meter: MeterRecord) -> Group | None:
        """:meth:`group_for`, with the channel map of the meter's profile in place of the
        group's load profile object, columns, status column and (when it lists some)
        registers; the period, window and schedule stay the group's."""
        group = self.group_for(meter)
        model = self.meter_profile(meter)
        if group is None or model is None or model.channels is None:
            return group
        chans = model.channels
        return replace(
            group,
            profile=ProfilePlan(
                chans.profile_obis, group.profile.period_s, chans.columns, chans.status_column
            ),
            registers=chans.registers or group.registers,
        )


def _obis(reader: TomlTable, name: str, text: str) -> str:
    try:
        return str(Obis.parse(text))
    except (DecodeError, ValueError) as exc:
        raise reader.fail(name, f"{text!r} is not an OBIS code ({exc})") from None


def _clock_offset(reader: TomlTable, name: str, text: str) -> timedelta:
    hours, sep, minutes = text.partition(":")
    try:
        h, m = int(hours), int(minutes)
    except ValueError:
        h = m = -1
    if not sep or not 0 <= h <= 47 or not 0 <= m <= 59:
        raise reader.fail(name, f"{text!r} is not HH:MM after midnight (00:00..47:59)")
    return timedelta(hours=h, minutes=m)


def _profile(reader: TomlTable) -> ProfilePlan:
    obis = _obis(reader, "obis", reader.get("obis", str, "1.0.99.1.0.255"))
    period = reader.integer("period_s", 900, 60, 86400)
    assert period is not None
    if 86400 % period:
        raise reader.fail("period_s", f"{period} does not divide a day")
    status = reader.optional_integer("status_column", 0, 255)
    chans = reader.sub("channels", required=True)
    channels: dict[int, str] = {}
    for key, value in chans.table.items():
        chans.used.add(key)
        try:
            column = int(key)
        except ValueError:
            raise chans.fail(key, "channel keys are buffer column indices (0, 1, 2...)") from None
        if not 0 <= column <= 255:
            raise chans.fail(key, f"column {column} outside 0..255")
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise chans.fail(key, "expected a channel name of 1-64 characters")
        if value in channels.values():
            raise chans.fail(key, f"channel name {value!r} used twice")
        if column == status:
            raise chans.fail(key, "this column is the status_column")
        channels[column] = value
    if not channels:
        raise reader.fail("channels", "no channel: map at least one column to a name")
    reader.done()
    return ProfilePlan(obis, period, dict(sorted(channels.items())), status)


def _schedules(reader: TomlTable, tz_name: str) -> dict[str, Schedule]:
    """``[group.schedule]``: one table per task, ``cron`` or ``every``, optional ``until``."""
    schedules: dict[str, Schedule] = {}
    for task in TASKS:
        if task not in reader.table:
            reader.used.add(task)
            continue
        entry = reader.sub(task)
        cron = entry.get("cron", str, None)
        every_text = entry.get("every", str, None)
        until_text = entry.get("until", str, None)
        entry.done()
        if cron is None and every_text is None:
            raise reader.fail(task, "give cron (e.g. '5 0 * * *') or every (e.g. '15m')")
        if cron is not None and every_text is not None:
            raise reader.fail(task, "give cron or every, not both")
        try:
            every = None if every_text is None else parse_every(every_text)
        except ScheduleError as exc:
            raise entry.fail("every", str(exc)) from None
        try:
            until = None if until_text is None else parse_until(until_text)
        except ScheduleError as exc:
            raise entry.fail("until", str(exc)) from None
        try:
            schedules[task] = Schedule(cron=cron, every=every, until=until, timezone=tz_name)
        except ScheduleError as exc:
            raise entry.fail("cron" if cron is not None else "every", str(exc)) from None
    reader.done()
    return schedules


def _group(reader: TomlTable, index: int, tz_name: str = "UTC") -> Group:
    name = reader.get("name", str, f"group{index + 1}")
    match_reader = reader.sub("match")
    match: dict[str, str] = {}
    for key in MATCH_FIELDS:
        pattern = match_reader.get(key, str, None)
        if pattern is not None:
            match[key] = pattern
    match_reader.done()
    registers_raw = reader.get("registers", list, [])
    registers: list[str] = []
    for i, item in enumerate(registers_raw):
        if not isinstance(item, str):
            raise reader.fail(f"registers[{i}]", "expected an OBIS string")
        registers.append(_obis(reader, f"registers[{i}]", item))
    win = reader.sub("window")
    start = _clock_offset(win, "start", win.get("start", str, "00:05"))
    deadline = _clock_offset(win, "deadline", win.get("deadline", str, "06:00"))
    if deadline <= start:
        raise win.fail("deadline", "must be later than window.start")
    win.done()
    back_days = reader.integer("back_days", 3, 0, MAX_BACK_DAYS)
    assert back_days is not None
    startup = reader.get("startup", str, "hdlc")
    if startup not in STARTUPS:
        raise reader.fail("startup", f"{startup!r}: use one of {', '.join(STARTUPS)}")
    device_address = reader.get("device_address", str, "meter_id")
    if device_address not in DEVICE_ADDRESSES:
        raise reader.fail(
            "device_address", f"{device_address!r}: use one of {', '.join(DEVICE_ADDRESSES)}"
        )
    profile = _profile(reader.sub("profile", required=True))
    try:
        schedules = _schedules(reader.sub("schedule"), tz_name)
    except PlanError as exc:
        raise PlanError(f"{exc} (group {name!r})") from None
    reader.done()
    return Group(
        name,
        match,
        profile,
        tuple(registers),
        Window(start, deadline),
        back_days,
        schedules,
        startup,
        device_address,
    )


def parse_plan(text: str, source: str = "<plan>") -> Plan:
    """Parse and check a plan; PlanError names ``source`` and the offending key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML: {exc}") from None
    return plan_from_data(data, source)


def plan_from_data(data: dict[str, Any], source: str = "<plan>") -> Plan:
    """Check a plan already read from TOML (``hes serve``'s config holds one inline)."""
    root = TomlTable(source, data, "", PlanError)
    col = root.sub("collector")
    concurrency = col.integer("concurrency", 500, 1, 100_000)
    tz_name = col.get("timezone", str, "UTC")
    profile_dir = col.get("profile_dir", str, None)
    profiles = ProfileLibrary()
    if profile_dir is not None:
        where = Path(profile_dir)
        if not where.is_absolute() and Path(source).is_file():
            where = Path(source).parent / where
        if not where.is_dir():
            raise col.fail("profile_dir", f"{str(where)!r} is not a directory")
        profiles = ProfileLibrary([where])
    if tz_name != "UTC":
        try:
            ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise col.fail("timezone", f"unknown time zone {tz_name!r}") from None
    col.done()
    ret = root.sub("retry")
    retry = RetryPolicy(
        max_attempts=int(ret.integer("max_attempts", 6, 1, 1000) or 1),
        backoff_base_s=ret.number("backoff_base_s", 2.0, 0.0, 86400.0),
        backoff_max_s=ret.number("backoff_max_s", 300.0, 0.0, 86400.0),
    )
    ret.done()
    tim = root.sub("timeouts")
    timeouts = Timeouts(
        request_s=tim.number("request_s", 10.0, 0.01, 3600.0),
        session_s=tim.number("session_s", 120.0, 0.1, 86400.0),
        hdlc_frame_s=tim.number("hdlc_frame_s", 3.0, 0.01, 600.0),
        hdlc_retries=int(tim.integer("hdlc_retries", 3, 0, 100) or 0),
    )
    tim.done()
    raw_groups = root.get("group", list, None)
    if not raw_groups:
        raise root.fail("group", "no [[group]]: a plan needs at least one group")
    groups: list[Group] = []
    for i, table in enumerate(raw_groups):
        if not isinstance(table, dict):
            raise root.fail(f"group[{i}]", "expected a table ([[group]])")
        groups.append(_group(TomlTable(source, table, f"group[{i}]", PlanError), i, tz_name))
    names = [g.name for g in groups]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise root.fail(f"group[{i}].name", f"group name {name!r} used twice")
    line_loss = _line_loss(root.sub("line_loss"))
    root.done()
    assert concurrency is not None
    return Plan(source, tuple(groups), concurrency, tz_name, retry, timeouts, line_loss, profiles)


def _line_loss(reader: TomlTable) -> LineLoss:
    default = LineLoss()
    band_raw = reader.get("band", list, list(default.band))
    if len(band_raw) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in band_raw
    ):
        raise reader.fail("band", "expected [low, high], two loss rates such as [0.0, 0.10]")
    try:
        band = check_band(float(band_raw[0]), float(band_raw[1]))
    except ValueError as exc:
        raise reader.fail("band", str(exc)) from None
    channel = reader.get("channel", str, default.channel)
    if not 0 < len(channel) <= 64:
        raise reader.fail("channel", "expected a channel name of 1-64 characters")
    reader.done()
    return LineLoss(band, channel)


def load_plan(path: str | os.PathLike[str] | None = None) -> Plan:
    """The plan in ``path``, or the built-in default plan for ``None``."""
    if path is None:
        return parse_plan(DEFAULT_PLAN_TOML, "<built-in plan>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PlanError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_plan(text, str(p))
