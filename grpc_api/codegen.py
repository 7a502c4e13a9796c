"""Generate the gRPC Python code from ``proto/`` into the client package (``make proto``); check it is fresh.

The bindings live in the light client distribution (``clients/python``, import package ``llmrec_client``)
so a backend installs them without the server's dependencies; the server imports the same modules.
protoc runs with ``-I proto``, so each descriptor keeps its file name (``llmrec/v1/recommender.proto``:
what reflection serves and ``buf breaking`` compares) and protoc writes ``llmrec/v1/x_pb2.py`` importing
its siblings as ``llmrec.v1``. That name belongs to the kernel package here, so the output is moved to
``llmrec_client/v1/`` and those imports are rewritten to ``llmrec_client.v1`` (the one edit; grpc/grpc#29459).

    python -m grpc_api.codegen           # regenerate in place
    python -m grpc_api.codegen --check   # exit 1 if the committed files differ from a fresh generation

The check uses the protoc bundled with the pinned grpcio-tools, so a different grpcio-tools version can
itself make the files "stale": regenerate and commit them together with the pin.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
# Where protoc writes (from the proto tree) and where the bindings are kept (in the client package).
PROTO_PACKAGE = Path("llmrec") / "v1"
PACKAGE = Path("clients") / "python" / "src" / "llmrec_client" / "v1"
_SIBLING_IMPORT = re.compile(r"^from llmrec\.v1 import ", re.MULTILINE)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class CodegenError(RuntimeError):
    pass


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    files = sorted((proto_root / PROTO_PACKAGE).glob("*.proto"))
    if not files:
        raise CodegenError(f"no .proto files under {proto_root / PROTO_PACKAGE}")
    return files


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on every ``proto/llmrec/v1/*.proto`` into ``out_root/llmrec/v1/`` with the sibling imports
    rewritten to ``llmrec_client.v1``; return the generated files."""
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
    generated = sorted(p for p in (out_root / PROTO_PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))
    for path in generated:
        path.write_text(_SIBLING_IMPORT.sub("from llmrec_client.v1 import ", path.read_text()))
    return generated


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
    """Regenerate into ``llmrec_client/v1/`` and keep its ``__init__.py``."""
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
