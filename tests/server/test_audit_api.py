"""The catalog audit through a real server: `GET /api/v1/audit`, `POST /api/v1/audit/accept`, and
`shoplens audit` as the server's client (the JSON contract scripts read)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.server.conftest import ROOT, Server


def test_audit_answers_the_json_contract(server: Server) -> None:
    with server.client() as client:
        audit = client.audit(fresh=True)
    assert audit.products > 0
    assert audit.category_suggestions == []  # every product of this catalog has a category
    data = audit.model_dump()
    assert {"duplicates", "category_suggestions", "mismatches"} <= set(data)


def test_audit_is_admin_only_and_bad_accepts_are_4xx_json(server: Server) -> None:
    response = httpx.get(f"{server.url}/api/v1/audit")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    for body in ({}, {"skus": ["A"], "min_confidence": 0.5}, {"min_confidence": 2}):
        answer = httpx.post(
            f"{server.url}/api/v1/audit/accept", json=body, headers={"Authorization": f"Bearer {server.token}"}
        )
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request"
    with server.client() as client:
        accepted = client.accept_audit(skus=["SKU-0001"])
        assert accepted.changed == {} and "SKU-0001" in accepted.skipped
    answer = httpx.get(
        f"{server.url}/api/v1/audit", params={"fresh": "maybe"}, headers={"Authorization": f"Bearer {server.token}"}
    )
    assert answer.status_code == 422 and "error" in answer.json()


def test_cli_audit_goes_through_the_server(server: Server, tmp_path) -> None:
    report = tmp_path / "audit.csv"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "--json", "--report", str(report)],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {"duplicates", "category_suggestions", "mismatches"} <= set(data)
    assert report.read_text().splitlines()[0] == "kind,sku,skus,listed,suggested,confidence,score,reason"
    refused = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", "--accept-above", "3"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr and "Traceback" not in refused.stderr
