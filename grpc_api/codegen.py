"""Generate the gRPC Python code from ``proto/`` into ``llmrec/v1/`` (``make proto``), or check it is fresh.

The ``.proto`` tree mirrors the Python package (``proto/llmrec/v1/x.proto`` -> ``llmrec/v1/x_pb2.py``) and
protoc runs with ``-I proto``, so the generated modules import each other absolutely
(``from llmrec.v1 import recommender_pb2``) and work from any working directory (grpc/grpc#29459).

    python -m grpc_api.codegen           # regenerate in place
    python -m grpc_api.codegen --check   # exit 1 if the committed files differ from a fresh generation

The check uses the protoc bundled with the pinned grpcio-tools, so a different grpcio-tools version can
itself make the files "stale": regenerate and commit them together with the pin.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE = Path("llmrec") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class CodegenError(RuntimeError):
    pass


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    files = sorted((proto_root / PACKAGE).glob("*.proto"))
    if not files:
        raise CodegenError(f"no .proto files under {proto_root / PACKAGE}")
    return files


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on every ``proto/llmrec/v1/*.proto``; return the generated files (under ``out_root``)."""
    from grpc_tools import protoc

    # The well-known types (google/protobuf/timestamp.proto) ship inside grpc_tools.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--pyi_out={out_root}",
        *(str(p.relative_to(proto_root)) for p in proto_files(proto_root)),
    ]
    # protoc resolves relative file names against the -I roots, so run it with the proto root's names.
    code = protoc.main(args)
    if code != 0:
        raise CodegenError(f"protoc failed with exit code {code}")
    return sorted(p for p in (out_root / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def stale_files(repo_root: Path = REPO_ROOT) -> list[str]:
    """Names of generated files that are missing, differ from a fresh generation, or should not exist."""
    with tempfile.TemporaryDirectory(prefix="llmrec-codegen-") as tmp:
        fresh = {p.name: p for p in generate(Path(tmp), repo_root / "proto")}
        committed_dir = repo_root / PACKAGE
        committed = {
            p.name: p for p in committed_dir.glob("*") if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
        }
        stale = [
            name
            for name, path in fresh.items()
            if name not in committed or not filecmp.cmp(path, committed[name], shallow=False)
        ]
        stale += [name for name in committed if name not in fresh]
    return sorted(stale)


def write(repo_root: Path = REPO_ROOT) -> list[Path]:
    """Regenerate into ``llmrec/v1/`` and keep its ``__init__.py``."""
    target = repo_root / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    init = target / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC code for llmrec.v1: run `make proto`, never edit by hand."""\n')
    with tempfile.TemporaryDirectory(prefix="llmrec-codegen-") as tmp:
        fresh = generate(Path(tmp), repo_root / "proto")
        # Files of a removed .proto would otherwise linger and keep importing.
        for old in target.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        written = []
        for path in fresh:
            dest = target / path.name
            shutil.copyfile(path, dest)
            written.append(dest)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpc_api.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed generated code is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale generated gRPC code: {', '.join(stale)}; run `make proto`", file=sys.stderr)
            return 1
        return 0
    for path in write():
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
