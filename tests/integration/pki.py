"""Throw-away certificate authorities and leaf certificates for TLS tests, made with the `openssl` command
line into a test's own folder (none is committed). EC P-256 keys, unencrypted PKCS#8 PEM, valid one day.

Imported as ``from pki import ...`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """``(certificate, key)`` of a self-signed CA."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    """``(certificate, key)`` signed by ``ca``; ``extensions`` are openssl extension lines (SAN, EKU)."""
    cert, key, csr, ext = (folder / f"{name}.{s}" for s in ("pem", "key", "csr", "ext"))
    ext.write_text(f"basicConstraints=CA:FALSE\n{extensions}\n")
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", str(secrets.randbits(63)),
        "-days", "1", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return cert, key


LOCALHOST_SERVER = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"
