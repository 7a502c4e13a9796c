"""The generated gRPC code in the client package (clients/python/src/llmrec_client/v1/) matches proto/
(regenerate with `make proto`)."""

from __future__ import annotations

from pathlib import Path

from grpc_api import codegen


def test_generated_code_is_fresh() -> None:
    stale = codegen.stale_files()
    assert not stale, f"stale generated files {stale}: run `make proto` and commit the result"


def test_check_detects_a_changed_proto(tmp_path: Path) -> None:
    (tmp_path / "proto").symlink_to(codegen.PROTO_ROOT)
    package = tmp_path / codegen.PACKAGE
    package.mkdir(parents=True)
    assert sorted(codegen.stale_files(tmp_path)) == [
        "recommender_pb2.py",
        "recommender_pb2.pyi",
        "recommender_pb2_grpc.py",
    ]
    codegen.write(tmp_path)
    assert codegen.stale_files(tmp_path) == []
    (package / "recommender_pb2.pyi").write_text("# edited by hand\n")
    (package / "leftover_pb2.py").write_text("")
    assert codegen.stale_files(tmp_path) == ["leftover_pb2.py", "recommender_pb2.pyi"]


def test_generated_modules_import_from_the_client_package() -> None:
    from llmrec_client.v1 import recommender_pb2, recommender_pb2_grpc

    # The descriptor keeps the proto's own file name and package: what reflection serves, buf compares.
    assert recommender_pb2.DESCRIPTOR.name == "llmrec/v1/recommender.proto"
    assert recommender_pb2.DESCRIPTOR.package == "llmrec.v1"
    assert hasattr(recommender_pb2_grpc, "RecommenderServicer")
