"""Artifacts storage of the embedded backend: a local S3 + STS for ``openeo.extra.artifacts``.

:class:`ArtifactServer` starts :mod:`eoextract.backend._artifacts_server` (moto behind a
thin STS/credentials layer) as a child process on a loopback address and stops it; its
:meth:`~ArtifactServer.capability` is the ``artifacts`` entry of ``GET /``, in the shape the
openeo client reads (``openeo/extra/artifacts/_backend.py`` and ``_s3sts/config.py``)::

    {"providers": [{"id": ..., "type": "S3STSConfig",
                    "config": {"s3_endpoint": ..., "sts_endpoint": ..., "role": ..., "bucket": ...}}]}

The client exchanges its OIDC access token for temporary credentials with STS
``AssumeRoleWithWebIdentity``, uploads with boto3 under ``<sha1 of the user>/<date>/`` and
hands out presigned URLs, which the backend's ``load_url`` reads (they are on 127.0.0.1).
Needs ``moto[server]`` (the ``artifacts`` extra).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from eoextract.errors import ConfigurationError

logger = logging.getLogger(__name__)

ARTIFACTS_REGION = "eu-central-1"
"""Region the endpoint advertises (in its path prefix, see the server module)."""
ARTIFACTS_BUCKET = "eoextract-artifacts"
"""Bucket uploads go to."""
ARTIFACTS_ROLE = "arn:aws:iam::123456789012:role/eoextract-artifacts"
"""Role the client assumes with its web identity token."""
PROVIDER_ID = "eoextract-local-s3"


class ArtifactServer:
    """The local S3 + STS child process.

    Args:
        issuer: OIDC issuer whose access tokens STS accepts (the backend's).
        host: Loopback address to listen on.
        log_path: File for the child's standard error (discarded when None).
    """

    def __init__(self, issuer: str, host: str = "127.0.0.1", log_path: Path | None = None):
        self.issuer = issuer
        self.host = host
        self.log_path = log_path
        self.prefix = f"/artifacts.s3.{ARTIFACTS_REGION}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.endpoint: str | None = None
        """``http://127.0.0.1:<port>/artifacts.s3.<region>`` once started."""

    def start(self, timeout_s: float = 60.0) -> ArtifactServer:
        """Start the child and wait for its port.

        Raises:
            ConfigurationError: When moto is not installed.
            RuntimeError: When the child does not come up within ``timeout_s``.
        """
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "artifacts need moto[server]: pip install 'eoextract[artifacts]'"
            ) from None
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "eoextract.backend._artifacts_server", "--host", self.host,
               "--issuer", self.issuer, "--bucket", ARTIFACTS_BUCKET, "--region", ARTIFACTS_REGION,
               "--prefix", self.prefix]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
        )
        port: list[str] = []
        reader = threading.Thread(target=lambda: port.append(self._proc.stdout.readline().decode()),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not port or not port[0].strip().isdigit():
            self.stop()
            raise RuntimeError("the local S3/STS server for artifacts did not start")
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.endpoint = f"http://{shown}:{int(port[0])}{self.prefix}"
        logger.info("artifacts S3/STS at %s", self.endpoint)
        return self

    def capability(self) -> dict[str, Any]:
        """The ``artifacts`` entry of the capabilities document."""
        if self.endpoint is None:
            raise RuntimeError("the artifacts server is not running")
        return {
            "providers": [
                {
                    "id": PROVIDER_ID,
                    "type": "S3STSConfig",
                    "config": {
                        "s3_endpoint": self.endpoint,
                        "sts_endpoint": self.endpoint,
                        "role": ARTIFACTS_ROLE,
                        "bucket": ARTIFACTS_BUCKET,
                    },
                }
            ]
        }

    def stop(self) -> None:
        """Stop the child (closing its stdin makes it exit; terminated if it lingers)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.endpoint = None
