"""``/api/meters`` over real HTTP: list and filters, one meter, CSV import, enable/disable."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ApiService

from storage import access
from storage.records import Channel

HEADER = "meter_id,transport,host,port,physical_address,link_id,area,station,installed_on"


def inventory(n_tcp: int = 5, n_bus: int = 3) -> str:
    rows = [HEADER]
    for i in range(n_tcp):
        area = "north" if i % 2 == 0 else "south"
        rows.append(f"T{i:04d},tcp,10.0.0.{i + 1},4059,,,{area},S{i % 2},2024-03-0{1 + i % 9}")
    for i in range(n_bus):
        rows.append(f"B{i:04d},hdlc-tcp,10.0.1.1,5000,{17 + i},bus-1,east,S9,")
    return "\n".join(rows) + "\n"


def post_csv(api: ApiService, text: str, token: str | None = None) -> Any:
    with api.client(token or api.operator_token) as http:
        return http.post(
            "/api/meters/import", content=text.encode(), headers={"Content-Type": "text/csv"}
        )


@pytest.fixture
def fleet(api_service: ApiService) -> ApiService:
    r = post_csv(api_service, inventory())
    assert r.status_code == 200, r.text
    return api_service


def test_import_answers_what_it_did_and_audits_it(api_service: ApiService) -> None:
    r = post_csv(api_service, inventory())
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("rows", "inserted", "updated")} == {
        "rows": 8,
        "inserted": 8,
        "updated": 0,
    }
    again = post_csv(api_service, inventory())
    assert (again.json()["inserted"], again.json()["updated"]) == (0, 8)
    assert len(api_service.db.meters()) == 8
    entries = access.audit_entries(api_service.db)
    assert [(e.actor, e.action, e.status) for e in entries] == [
        ("prepayment", "meters.import", 200),
        ("prepayment", "meters.import", 200),
    ]
    assert entries[0].detail == {"rows": 8, "inserted": 0, "updated": 8}


def test_a_bad_inventory_imports_nothing_and_lists_its_problems_by_line(
    api_service: ApiService,
) -> None:
    text = inventory(2, 0) + "T9999,tcp,,,,,,,\nX1,carrier-pigeon,10.0.0.9,,,,,,\n"
    r = post_csv(api_service, text)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "bad_inventory"
    assert body["field"] == "body"
    assert body["problems_total"] == 2
    assert [p["line"] for p in body["problems"]] == [4, 5]
    assert "host is required" in body["problems"][0]["message"]
    assert "transport 'carrier-pigeon'" in body["problems"][1]["message"]
    assert api_service.db.meters() == []
    (entry,) = access.audit_entries(api_service.db)
    assert (entry.action, entry.status, entry.detail) == ("meters.import", 400, {"problems": 2})
    assert entry.error is not None and "nothing imported" in entry.error


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"meter_id,colour\nM1,red\n", "unknown column(s) 'colour'"),
        (b"meter_id,transport\n\xff\xfe,tcp\n", "not UTF-8 text"),
    ],
)
def test_unreadable_uploads_are_400_naming_the_problem(
    api_service: ApiService, content: bytes, problem: str
) -> None:
    with api_service.operator() as http:
        r = http.post("/api/meters/import", content=content, headers={"Content-Type": "text/csv"})
    assert r.status_code == 400
    assert problem in r.json()["problems"][0]["message"]


def test_import_needs_a_csv_body(api_service: ApiService) -> None:
    with api_service.operator() as http:
        r = http.post("/api/meters/import", json={"meters": []})
    assert r.status_code == 415
    assert r.json()["field"] == "header.Content-Type"


def test_a_reader_may_not_import_and_the_refusal_is_audited(api_service: ApiService) -> None:
    r = post_csv(api_service, inventory(), token=api_service.reader_token)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert api_service.db.meters() == []
    (entry,) = access.audit_entries(api_service.db)
    assert (entry.actor, entry.action, entry.status) == ("billing-reader", "meters.import", 403)


def test_list_pages_through_the_meters_by_id(fleet: ApiService) -> None:
    with fleet.reader() as http:
        first = http.get("/api/meters", params={"limit": 3}).json()
        rest = http.get("/api/meters", params={"limit": 3, "offset": 3}).json()
        tail = http.get("/api/meters", params={"limit": 3, "offset": 6}).json()
    assert (first["total"], first["limit"], first["offset"]) == (8, 3, 0)
    ids = [m["meter_id"] for page in (first, rest, tail) for m in page["items"]]
    assert ids == sorted(m.meter_id for m in fleet.db.meters())
    item = next(m for m in (*first["items"], *rest["items"]) if m["meter_id"] == "T0000")
    assert item["enabled"] is True
    assert item["installed_on"] == "2024-03-01"
    assert (item["transport"], item["host"], item["port"], item["area"]) == (
        "tcp",
        "10.0.0.1",
        4059,
        "north",
    )


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({"area": "north"}, ["T0000", "T0002", "T0004"]),
        ({"station": "S9"}, ["B0000", "B0001", "B0002"]),
        ({"link_id": "bus-1"}, ["B0000", "B0001", "B0002"]),
        ({"transport": "tcp", "area": "south"}, ["T0001", "T0003"]),
        ({"q": "B000"}, ["B0000", "B0001", "B0002"]),
        ({"q": "T%"}, []),
        ({"enabled": "false"}, ["T0003"]),
        ({"enabled": "true", "area": "south"}, ["T0001"]),
    ],
)
def test_list_filters(fleet: ApiService, params: dict[str, str], ids: list[str]) -> None:
    fleet.db.set_enabled(["T0003"], False)
    with fleet.reader() as http:
        body = http.get("/api/meters", params=params).json()
    assert [m["meter_id"] for m in body["items"]] == ids
    assert body["total"] == len(ids)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1001"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"offset": "-1"}, "query.offset"),
        ({"enabled": "maybe"}, "query.enabled"),
        ({"transport": "carrier-pigeon"}, "query.transport"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(
    fleet: ApiService, params: dict[str, str], field: str
) -> None:
    with fleet.reader() as http:
        r = http.get("/api/meters", params=params)
    assert r.status_code == 400
    assert r.json()["field"] == field


def test_one_meter_with_its_channels(fleet: ApiService) -> None:
    fleet.db.upsert_channels(
        [
            Channel("T0001", "1.0.1.8.0.255", unit=30, scaler=-3, period_s=900),
            Channel("T0001", "1.0.3.8.0.255", unit=32, scaler=0, period_s=900),
        ]
    )
    with fleet.reader() as http:
        r = http.get("/api/meters/T0001")
    assert r.status_code == 200
    body = r.json()
    assert (body["meter_id"], body["area"], body["enabled"]) == ("T0001", "south", True)
    assert body["channels"] == [
        {"channel": "1.0.1.8.0.255", "unit": "Wh", "unit_code": 30, "scaler": -3, "period_s": 900},
        {"channel": "1.0.3.8.0.255", "unit": "varh", "unit_code": 32, "scaler": 0, "period_s": 900},
    ]


def test_an_unknown_meter_is_a_404_naming_it(fleet: ApiService) -> None:
    with fleet.reader() as http:
        r = http.get("/api/meters/NOPE")
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_meter"
    assert "'NOPE'" in r.json()["message"]


def test_disable_and_enable(fleet: ApiService) -> None:
    with fleet.operator() as http:
        off = http.post("/api/meters/T0002/disable")
        assert off.status_code == 200
        assert off.json()["enabled"] is False
        assert fleet.db.disabled_meter_ids() == {"T0002"}
        assert [m.meter_id for m in fleet.db.meters(enabled_only=True)].count("T0002") == 0
        on = http.post("/api/meters/T0002/enable")
        assert on.json()["enabled"] is True
        missing = http.post("/api/meters/NOPE/enable")
    assert fleet.db.disabled_meter_ids() == set()
    assert missing.status_code == 404
    trail = [(e.action, e.target, e.status) for e in access.audit_entries(fleet.db)][:3]
    assert trail == [
        ("meters.enable", "NOPE", 404),
        ("meters.enable", "T0002", 200),
        ("meters.disable", "T0002", 200),
    ]


def test_a_reader_may_not_disable(fleet: ApiService) -> None:
    with fleet.reader() as http:
        r = http.post("/api/meters/T0002/disable")
    assert r.status_code == 403
    assert fleet.db.disabled_meter_ids() == set()
    entry = access.audit_entries(fleet.db)[0]
    assert (entry.actor, entry.action, entry.target, entry.status) == (
        "billing-reader",
        "meters.disable",
        "T0002",
        403,
    )


@pytest.mark.parametrize("path", ["/api/meters", "/api/meters/T0001"])
def test_without_a_live_token_it_is_401(fleet: ApiService, path: str) -> None:
    with fleet.client() as http:
        assert http.get(path).status_code == 401
    with fleet.client("hes_not-a-token") as http:
        r = http.get(path)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"


def test_a_changing_request_without_a_token_is_401_and_not_audited(fleet: ApiService) -> None:
    before = len(access.audit_entries(fleet.db))
    with fleet.client("hes_unknown") as http:
        r = http.post("/api/meters/T0001/disable")
    assert r.status_code == 401
    assert len(access.audit_entries(fleet.db)) == before
    assert fleet.db.disabled_meter_ids() == set()


def test_a_meter_shows_the_profile_it_is_read_with(api_service: ApiService) -> None:
    text = f"{HEADER},profile\nP0001,tcp,10.0.0.9,4059,,,west,S1,,sim-short-names\n"
    text += "P0002,tcp,10.0.0.10,4059,,,west,S1,,\n"
    assert post_csv(api_service, text).status_code == 200
    with api_service.reader() as http:
        listed = {m["meter_id"]: m["profile"] for m in http.get("/api/meters").json()["items"]}
        one = http.get("/api/meters/P0001").json()
    assert listed == {"P0001": "sim-short-names", "P0002": None}
    assert one["profile"] == "sim-short-names"
