"""The API's frame over real HTTP: the OpenAPI schema, JSON errors, tokens."""

from __future__ import annotations

from conftest import ApiService


def test_openapi_schema_is_served(api_service: ApiService) -> None:
    with api_service.client() as http:
        r = http.get("/api/openapi.json")
    assert r.status_code == 200
    assert r.json()["info"]["title"] == "hes head-end API"


def test_unknown_path_is_a_json_404(api_service: ApiService) -> None:
    with api_service.client() as http:
        r = http.get("/api/no-such-thing")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
