"""Checksums as STAC file:checksum multihashes."""

from __future__ import annotations

import hashlib

import blake3
import pytest

from eoextract._util.checksum import (
    DEFAULT_ALGORITHM,
    algorithm_of,
    file_checksum,
    multihash,
    new_hasher,
    normalized_checksum,
    parse_checksum,
)

DATA = b"openEO result bytes" * 1000


@pytest.mark.parametrize(("algorithm", "prefix", "digest"), [
    ("blake3", "1e20", blake3.blake3(DATA).hexdigest()),
    ("sha2-256", "1220", hashlib.sha256(DATA).hexdigest()),
    ("sha2-512", "1340", hashlib.sha512(DATA).hexdigest()),
    ("sha1", "1114", hashlib.sha1(DATA).hexdigest()),
    ("md5", "d50110", hashlib.md5(DATA).hexdigest()),
])
def test_multihash_round_trip(tmp_path, algorithm, prefix, digest):
    hasher = new_hasher(algorithm)
    hasher.update(DATA)
    value = multihash(algorithm, hasher.hexdigest())
    assert value == prefix + digest
    assert parse_checksum(value.upper()) == (algorithm, digest)
    assert normalized_checksum(f" {value.upper()} ") == value
    assert algorithm_of(value) == algorithm
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    assert file_checksum(path, algorithm, chunk_size=4096) == (value, len(DATA))


def test_default_is_sha256_and_bad_values_are_refused():
    assert DEFAULT_ALGORITHM == "sha2-256" and algorithm_of(None) == "sha2-256"
    for bad in ("", "1220", "1220" + "ab" * 31, "1220" + "zz" * 32, "1b20" + "ab" * 32, None, 1220):
        assert parse_checksum(bad) is None and normalized_checksum(bad) is None
    with pytest.raises(ValueError, match="not a known multihash"):
        algorithm_of("1b20" + "ab" * 32)
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        new_hasher("crc32")
