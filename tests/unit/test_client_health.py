"""The client's own grpc.health.v1 messages (llmrec_client.health_check, built without
grpcio-health-checking) are wire-identical to grpcio-health-checking's, which the server uses."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from llmrec_client import health_check


@pytest.mark.parametrize("service", ["", "llmrec.v1.Recommender", "ünïcode"])
def test_request_is_the_official_message(service: str) -> None:
    wire = health_check.request(service).SerializeToString()
    assert health_pb2.HealthCheckRequest.FromString(wire).service == service


@pytest.mark.parametrize("name", ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"])
def test_status_of_the_official_response(name: str) -> None:
    status = health_pb2.HealthCheckResponse.ServingStatus.Value(name)
    wire = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    decoded = health_check.response_from_wire(wire)
    assert health_check.status_name(decoded) == name


def test_a_status_newer_than_the_client_reads_as_its_number() -> None:
    assert health_check.status_name(health_check.response_from_wire(b"\x08\x07")) == "7"
