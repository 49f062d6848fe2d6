"""Reading plans: the built-in plan, group matching, and errors that name file and key."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from collector.plan import DEFAULT_PLAN_TOML, PlanError, load_plan, parse_plan
from storage.records import MeterRecord

MINIMAL = """
[[group]]
[group.profile.channels]
2 = "1.0.1.8.0.255"
"""


def meter(**kw: object) -> MeterRecord:
    base: dict[str, object] = {
        "meter_id": "M1",
        "transport": "tcp",
        "host": "h",
        "port": 4059,
        "device": None,
        "physical_address": None,
        "logical_address": 1,
        "client_sap": 16,
        "authentication": "none",
        "link_id": "M1",
        "area": None,
        "station": None,
    }
    base.update(kw)
    return MeterRecord(**base)  # type: ignore[arg-type]


def test_built_in_plan_reads_the_load_profile_and_billing_registers() -> None:
    plan = load_plan(None)
    assert plan.source == "<built-in plan>"
    (group,) = plan.groups
    assert group.profile.obis == "1.0.99.1.0.255"
    assert group.profile.period_s == 900
    assert group.profile.status_column == 1
    assert group.channels == ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]
    assert list(group.profile.channels) == [2, 3, 4, 5]
    assert group.back_days == 3
    assert plan.concurrency == 500
    start, deadline = group.window.bounds(date(2026, 3, 10), plan.tz)
    assert start == datetime(2026, 3, 11, 0, 5, tzinfo=UTC)
    assert deadline == datetime(2026, 3, 11, 6, 0, tzinfo=UTC)
    assert group.accepts(meter())


def test_minimal_plan_takes_defaults_and_normalises_obis() -> None:
    plan = parse_plan(MINIMAL.replace('"1.0.1.8.0.255"', '"1-0:1.8.0.255"'))
    assert plan.groups[0].channels == ["1-0:1.8.0.255"]
    assert plan.groups[0].registers == ()
    assert plan.retry.max_attempts == 6
    assert plan.timeouts.request_s == 10.0
    with_regs = parse_plan(MINIMAL.replace("[[group]]", '[[group]]\nregisters = ["1-0:2.8.0.255"]'))
    assert with_regs.groups[0].registers == ("1.0.2.8.0.255",)


def test_first_matching_group_wins_and_globs_apply_to_inventory_fields() -> None:
    text = """
[[group]]
name = "bus meters in the north"
match = { transport = "hdlc-*", area = "north*" }
back_days = 7
[group.profile.channels]
2 = "a"

[[group]]
name = "rest"
[group.profile.channels]
2 = "a"
"""
    plan = parse_plan(text)
    north_bus = meter(transport="hdlc-tcp", area="north-2")
    assert plan.group_for(north_bus) is plan.groups[0]
    assert plan.group_for(meter(transport="tcp", area="north-2")) is plan.groups[1]
    assert plan.group_for(meter(transport="hdlc-tcp", area=None)) is plan.groups[1]
    only = parse_plan(text.split('[[group]]\nname = "rest"')[0])
    assert only.group_for(meter()) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[collector]\nconcurency = 5\n" + MINIMAL, "collector.concurency: unknown key"),
        ("[collector]\nconcurrency = 0\n" + MINIMAL, "collector.concurrency: 0 outside 1..100000"),
        (
            "[collector]\nconcurrency = true\n" + MINIMAL,
            "collector.concurrency: expected an integer, got a boolean",
        ),
        (
            '[collector]\ntimezone = "Mars/Base"\n' + MINIMAL,
            "collector.timezone: unknown time zone 'Mars/Base'",
        ),
        (
            '[retry]\nbackoff_base_s = "2"\n' + MINIMAL,
            "retry.backoff_base_s: expected an integer or a number, got a string",
        ),
        ("", "group: no [[group]]"),
        ('[[group]]\nname = "x"\n', "group[0].profile: missing table"),
        (
            MINIMAL.replace("[[group]]", '[[group]]\nregisters = ["1.0.1.8.0.255", "1.8.0"]'),
            "group[0].registers[1]: '1.8.0' is not an OBIS code",
        ),
        (
            MINIMAL.replace(
                "[[group]]", '[[group]]\nwindow = { start = "06:00", deadline = "05:00" }'
            ),
            "group[0].window.deadline: must be later",
        ),
        (
            MINIMAL.replace("[[group]]", '[[group]]\nwindow = { start = "6h" }'),
            "group[0].window.start: '6h' is not HH:MM",
        ),
        (
            MINIMAL.replace("[[group]]", "[[group]]\nback_days = 90"),
            "group[0].back_days: 90 outside 0..60",
        ),
        (
            MINIMAL.replace("[[group]]", '[[group]]\nmatch = { region = "x" }'),
            "group[0].match.region: unknown key",
        ),
        (
            MINIMAL.replace("2 =", "two ="),
            "group[0].profile.channels.two: channel keys are buffer column indices",
        ),
        (
            MINIMAL + '3 = "1.0.1.8.0.255"\n',
            "group[0].profile.channels.3: channel name '1.0.1.8.0.255' used twice",
        ),
        (
            '[[group]]\n[group.profile]\nperiod_s = 700\n[group.profile.channels]\n2 = "a"\n',
            "group[0].profile.period_s: 700 does not divide a day",
        ),
        (
            '[[group]]\n[group.profile]\nstatus_column = 2\n[group.profile.channels]\n2 = "a"\n',
            "group[0].profile.channels.2: this column is the status_column",
        ),
        ("[[group]]\n[group.profile.channels]\n", "group[0].profile.channels: no channel"),
        (
            MINIMAL + '[[group]]\nname = "group1"\n[group.profile.channels]\n1 = "x"\n',
            "group[1].name: group name 'group1' used twice",
        ),
        ("[[group]\n", "not valid TOML"),
    ],
)
def test_bad_plans_name_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "site.toml")
    assert str(info.value).startswith("site.toml: ")
    assert message in str(info.value)


def test_plan_files(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(DEFAULT_PLAN_TOML.replace("back_days = 3", "back_days = 1"), encoding="utf-8")
    assert load_plan(path).groups[0].back_days == 1
    assert load_plan(path).source == str(path)
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.toml")
    path.write_bytes(b"\xff\xfe[[group]]")
    with pytest.raises(PlanError, match=r"plan\.toml: not UTF-8"):
        load_plan(path)


def test_window_may_reach_past_the_next_midnight() -> None:
    plan = parse_plan(
        MINIMAL.replace("[[group]]", '[[group]]\nwindow = { start = "23:00", deadline = "30:00" }')
    )
    start, deadline = plan.groups[0].window.bounds(date(2026, 3, 10), UTC)
    assert deadline - start == timedelta(hours=7)
