"""Encrypted blob storage on real files: round trips, ranges, dedup, aborts, tampering, keys."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import struct
import tracemalloc
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portal.errors import DomainError, NotFound
from portal.evidence.blobs import (
    CHUNK_OVERHEAD,
    HEADER_SIZE,
    SLOT_OFFSETS,
    Blob,
    BlobCorrupted,
    BlobNotFound,
    BlobStore,
    MasterKeyMissing,
    RotationIncomplete,
    generate_master_key,
    parse_master_keys,
)

C = 4096  # a small chunk size keeps boundary cases fast
K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def make_store(root: Path, keys: dict[str, bytes] | None = None, current: str = "k1") -> BlobStore:
    return BlobStore(root, keys or {"k1": K1}, current, chunk_size=C)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return make_store(tmp_path / "storage")


def leftovers(store: BlobStore) -> tuple[list[str], list[str]]:
    return sorted(os.listdir(store.tmp_dir)), sorted(store.iter_blobs())


async def write_async(store: BlobStore, data: bytes, piece: int = 1000, **kwargs: int) -> Blob:
    async with store.writer(**kwargs) as writer:
        for i in range(0, len(data), piece):
            await writer.write(data[i : i + piece])
        return await writer.commit()


def chunk_offset(index: int) -> int:
    return HEADER_SIZE + index * (C + CHUNK_OVERHEAD)


def patch(path: Path, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    path.write_bytes(bytes(data))


def flip(path: Path, offset: int) -> None:
    data = path.read_bytes()
    patch(path, offset, bytes([data[offset] ^ 0x01]))


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, C - 1, C, C + 1, 3 * C, 3 * C + 7, 5 * 1024 * 1024 + 3])
async def test_round_trip(store: BlobStore, size: int) -> None:
    data = payload(size, seed=size)
    blob = await write_async(store, data, piece=777)
    assert blob == Blob(hashlib.sha256(data).hexdigest(), size, created=True)
    assert store.exists(blob.sha256)
    assert store.size(blob.sha256) == size
    assert store.read_all(blob.sha256) == data
    assert store.verify(blob.sha256)
    path = store.path(blob.sha256)
    assert path.parent.parent.parent == store.blob_dir
    assert path.parent.name == blob.sha256[2:4] and path.parent.parent.name == blob.sha256[:2]
    chunks = max(1, -(-size // C))
    assert path.stat().st_size == HEADER_SIZE + chunks * CHUNK_OVERHEAD + size
    assert path.stat().st_mode & 0o777 == 0o600
    assert size < 16 or data[:16] not in path.read_bytes()  # encrypted at rest
    assert leftovers(store) == ([], [blob.sha256])


@pytest.mark.parametrize("pieces", [[C], [C, 1], [1, C - 1, C, 2 * C + 5], [10 * C + 3]])
def test_sync_writer_any_write_sizes(store: BlobStore, pieces: list[int]) -> None:
    data = payload(sum(pieces), seed=len(pieces))
    with store.open_writer() as writer:
        position = 0
        for n in pieces:
            writer.write(memoryview(data)[position : position + n])
            position += n
        blob = writer.commit()
    assert store.read_all(blob.sha256) == data
    assert store.verify(blob.sha256)


def test_put_stream_and_put_bytes(store: BlobStore) -> None:
    data = payload(3 * C + 11)
    blob = store.put_stream(io.BytesIO(data))
    assert store.read_all(blob.sha256) == data
    assert store.put_bytes(data) == Blob(blob.sha256, len(data), created=False)


def test_blob_written_with_another_chunk_size_stays_readable(tmp_path: Path) -> None:
    data = payload(200_000)
    small = BlobStore(tmp_path, {"k1": K1}, "k1", chunk_size=1024)
    blob = small.put_bytes(data)
    large = BlobStore(tmp_path, {"k1": K1}, "k1")  # 64 KiB chunks
    assert large.read_all(blob.sha256) == data
    assert b"".join(large.open_range(blob.sha256, 1000, 150_000)) == data[1000:150_000]


# -- empty, dedup, aborts, limits ------------------------------------------------------------


async def test_empty_file_is_refused_and_leaves_nothing(store: BlobStore) -> None:
    async with store.writer() as writer:
        await writer.write(b"")
        with pytest.raises(DomainError) as excinfo:
            await writer.commit()
    assert excinfo.value.message.msgid == "The file is empty."
    assert excinfo.value.field == "file"
    assert leftovers(store) == ([], [])


async def test_same_content_is_stored_once(store: BlobStore) -> None:
    data = payload(2 * C + 1)
    first = await write_async(store, data)
    second = await write_async(store, data, piece=C)
    assert first.created and not second.created
    assert second.sha256 == first.sha256
    assert leftovers(store) == ([], [first.sha256])


def test_concurrent_writers_of_the_same_content(store: BlobStore) -> None:
    data = payload(C + 5)
    with store.open_writer() as a, store.open_writer() as b:
        a.write(data)
        b.write(data)
        assert len(os.listdir(store.tmp_dir)) == 2
        assert a.commit().created
        assert not b.commit().created
    assert leftovers(store) == ([], [hashlib.sha256(data).hexdigest()])


async def test_error_inside_the_block_leaves_nothing(store: BlobStore) -> None:
    async def upload() -> None:
        async with store.writer() as writer:
            await writer.write(payload(3 * 1024 * 1024))  # several batches already on disk
            assert os.listdir(store.tmp_dir)
            raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await upload()
    assert leftovers(store) == ([], [])


def test_sync_writer_without_commit_leaves_nothing(store: BlobStore) -> None:
    with store.open_writer() as writer:
        writer.write(payload(5 * C))
    assert leftovers(store) == ([], [])
    with pytest.raises(RuntimeError):
        writer.write(b"more")


async def test_cancelled_upload_leaves_nothing(store: BlobStore) -> None:
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield payload(256 * 1024)
            started.set()
            await asyncio.sleep(0.01)

    async def upload() -> None:
        async with store.writer() as writer:
            async for part in body():
                await writer.write(part)
            await writer.commit()

    task = asyncio.create_task(upload())
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(store) == ([], [])


@pytest.mark.parametrize("piece", [1000, 64 * 1024])
async def test_size_limit_exceeded_mid_stream_leaves_nothing(store: BlobStore, piece: int) -> None:
    limit = 10 * C + 10
    with pytest.raises(DomainError) as excinfo:
        await write_async(store, payload(limit + 1), piece=piece, max_size=limit)
    assert excinfo.value.message.msgid == "The file is larger than {size} MB."
    assert leftovers(store) == ([], [])
    blob = await write_async(store, payload(limit), piece=piece, max_size=limit)  # exactly: fine
    assert blob.size == limit


def test_size_limit_in_the_sync_writer(store: BlobStore) -> None:
    with store.open_writer(max_size=C) as writer:
        writer.write(payload(C))
        with pytest.raises(DomainError):
            writer.write(b"x")
    assert leftovers(store) == ([], [])


def test_cleanup_tmp_removes_only_stale_files(store: BlobStore) -> None:
    with store.open_writer() as fresh:
        stale = store.tmp_dir / "0123.part"
        stale.write_bytes(b"left by a crash")
        os.utime(stale, (1, 1))
        assert store.cleanup_tmp(older_than=3600) == 1
        assert os.listdir(store.tmp_dir) == [fresh.tmp_path.name]


# -- reading ranges ------------------------------------------------------------------------


async def test_range_reads_at_chunk_boundaries(store: BlobStore) -> None:
    data = payload(5 * C + 123)
    blob = await write_async(store, data)
    size = len(data)
    cases = [
        (0, 0),
        (0, 1),
        (0, C),
        (C - 1, C + 1),
        (C, 2 * C),
        (2 * C - 1, 2 * C),
        (C + 1, 4 * C - 1),
        (5 * C, size),
        (size - 1, size),
        (0, size),
        (size, size),
    ]
    rng = random.Random(1)
    for _ in range(50):
        a = rng.randrange(size)
        cases.append((a, rng.randrange(a, size + 1)))
    for start, end in cases:
        assert b"".join(store.open_range(blob.sha256, start, end)) == data[start:end], (start, end)
    assert b"".join(store.open_range(blob.sha256, 7)) == data[7:]


def test_range_outside_the_blob_is_an_error(store: BlobStore) -> None:
    blob = store.put_bytes(payload(100))
    for start, end in [(-1, 10), (10, 5), (0, 101)]:
        with pytest.raises(ValueError, match="outside"):
            store.open_range(blob.sha256, start, end)


def test_large_ranges_come_in_large_pieces(store: BlobStore) -> None:
    blob = store.put_bytes(payload(64 * C))
    pieces = list(store.open_range(blob.sha256))
    assert len(pieces) == 4  # 16 chunks per read, not one piece per chunk


def test_seekable_file_view(store: BlobStore) -> None:
    data = payload(7 * C + 5)
    blob = store.put_bytes(data)
    rng = random.Random(2)
    with store.open(blob.sha256) as fh:
        assert fh.seekable() and fh.readable()
        for _ in range(100):
            position = rng.randrange(len(data) + 10)
            n = rng.randrange(3 * C)
            fh.seek(position)
            assert fh.read(n) == data[position : position + n]
        fh.seek(-5, io.SEEK_END)
        assert fh.read() == data[-5:]
        assert fh.tell() == len(data)


def test_zipfile_reads_through_the_encrypted_view(store: BlobStore, tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("合同.txt", "甲方乙方" * 5000)
        zf.writestr("photo.bin", payload(3 * C))
    blob = store.put_bytes(archive.read_bytes())
    with store.open(blob.sha256) as fh, zipfile.ZipFile(fh) as zf:
        assert zf.read("合同.txt") == ("甲方乙方" * 5000).encode()
        assert zf.read("photo.bin") == payload(3 * C)


def test_missing_blob(store: BlobStore) -> None:
    sha = "0" * 64
    assert not store.exists(sha)
    with pytest.raises(BlobNotFound):
        store.read_all(sha)
    assert issubclass(BlobNotFound, NotFound)
    assert not store.verify(sha)
    assert not store.delete(sha)
    with pytest.raises(ValueError, match="not a lower-case hex SHA-256"):
        store.path("../" + "0" * 61)


def test_iterate_and_delete(store: BlobStore) -> None:
    blobs = {store.put_bytes(payload(10, seed=i)).sha256 for i in range(5)}
    (store.blob_dir / "stray.txt").write_text("not a blob")
    assert set(store) == blobs
    victim = sorted(blobs)[0]
    assert store.delete(victim)
    assert set(store.iter_blobs()) == blobs - {victim}
    with pytest.raises(BlobNotFound):
        store.size(victim)


# -- tampering -----------------------------------------------------------------------------


@pytest.fixture
def tampered(store: BlobStore) -> tuple[BlobStore, str, bytes, Path]:
    data = payload(4 * C + 100)
    blob = store.put_bytes(data)
    return store, blob.sha256, data, store.path(blob.sha256)


def test_flipped_byte_in_a_chunk(tampered: tuple[BlobStore, str, bytes, Path]) -> None:
    store, sha, data, path = tampered
    flip(path, chunk_offset(1) + 40)
    assert not store.verify(sha)
    with pytest.raises(BlobCorrupted, match="chunk 1 failed authentication"):
        store.read_all(sha)
    # a range that does not touch chunk 1 is still served: only its chunks are decrypted
    assert b"".join(store.open_range(sha, 0, C)) == data[:C]
    assert b"".join(store.open_range(sha, 2 * C, 3 * C)) == data[2 * C : 3 * C]


def test_flipped_nonce_or_tag(tampered: tuple[BlobStore, str, bytes, Path]) -> None:
    store, sha, _, path = tampered
    flip(path, chunk_offset(2))  # nonce
    assert not store.verify(sha)
    flip(path, chunk_offset(2))  # restored
    assert store.verify(sha)
    flip(path, chunk_offset(3) - 1)  # last byte of chunk 2's tag
    assert not store.verify(sha)


def test_swapped_chunks(tampered: tuple[BlobStore, str, bytes, Path]) -> None:
    store, sha, _, path = tampered
    raw = path.read_bytes()
    one, two = raw[chunk_offset(0) : chunk_offset(1)], raw[chunk_offset(1) : chunk_offset(2)]
    patch(path, chunk_offset(0), two + one)
    assert not store.verify(sha)
    with pytest.raises(BlobCorrupted, match="chunk 0"):
        store.read_all(sha)


def test_chunk_from_another_blob_of_the_same_key(store: BlobStore) -> None:
    a = store.put_bytes(payload(2 * C, seed=1))
    b = store.put_bytes(payload(2 * C, seed=2))
    raw_b = store.path(b.sha256).read_bytes()
    patch(store.path(a.sha256), chunk_offset(0), raw_b[chunk_offset(0) : chunk_offset(1)])
    assert not store.verify(a.sha256)


def test_truncated_blob(tampered: tuple[BlobStore, str, bytes, Path]) -> None:
    store, sha, _, path = tampered
    raw = path.read_bytes()
    path.write_bytes(raw[: chunk_offset(4)])  # the final chunk cut off
    assert not store.verify(sha)
    with pytest.raises(BlobCorrupted, match="expected"):
        store.read_all(sha)
    path.write_bytes(raw[:-1])  # one byte short
    assert not store.verify(sha)
    path.write_bytes(raw[: chunk_offset(4)])
    # ...and claiming the shorter size in the header breaks the header MAC
    patch(path, 32, struct.pack(">Q", 4 * C))
    with pytest.raises(BlobCorrupted, match="header failed authentication"):
        store.read_all(sha)


def test_final_chunk_dropped_when_the_size_is_a_whole_number_of_chunks(
    store: BlobStore,
) -> None:
    blob = store.put_bytes(payload(3 * C))
    path = store.path(blob.sha256)
    raw = path.read_bytes()
    path.write_bytes(raw[: chunk_offset(2)])
    patch(path, 32, struct.pack(">Q", 2 * C))
    assert not store.verify(blob.sha256)


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (0, "bad magic"),  # magic
        (9, "format version"),  # version
        (12, "chunk size"),  # chunk size: implausible
        (14, "header failed authentication"),  # chunk size: plausible
        (20, "header failed authentication"),  # file id
        (36, "header failed authentication"),  # plaintext size
        (50, "header failed authentication"),  # SHA-256
        (80, "header failed authentication"),  # the MAC itself
        (SLOT_OFFSETS[0] + 40, "header failed authentication"),  # the wrapped data key
    ],
)
def test_tampered_header(
    tampered: tuple[BlobStore, str, bytes, Path], offset: int, error: str
) -> None:
    store, sha, _, path = tampered
    flip(path, offset)
    assert not store.verify(sha)
    with pytest.raises(BlobCorrupted, match=error):
        store.read_all(sha)


def test_blob_under_another_name(store: BlobStore) -> None:
    a = store.put_bytes(payload(100, seed=1))
    b = store.put_bytes(payload(100, seed=2))
    store.path(b.sha256).write_bytes(store.path(a.sha256).read_bytes())
    assert not store.verify(b.sha256)
    with pytest.raises(BlobCorrupted, match="holds another file"):
        store.read_all(b.sha256)


# -- keys ----------------------------------------------------------------------------------


def test_rotate_then_read_without_the_old_key(tmp_path: Path) -> None:
    old = make_store(tmp_path, {"k1": K1})
    contents = [payload(n * 1000 + 1, seed=n) for n in range(6)]
    shas = [old.put_bytes(data).sha256 for data in contents]
    both = make_store(tmp_path, {"k1": K1, "k2": K2}, current="k2")
    newer = both.put_bytes(b"written under k2").sha256
    assert both.rotate() == len(shas)
    assert both.rotate("k2") == 0  # idempotent
    only_new = make_store(tmp_path, {"k2": K2}, current="k2")
    for sha, data in zip(shas, contents, strict=True):
        assert only_new.read_all(sha) == data
        assert only_new.verify(sha)
        raw = only_new.path(sha).read_bytes()
        slots = [raw[o : o + 32].rstrip(b"\0") for o in SLOT_OFFSETS]
        assert sorted(slots) == [b"", b"k2"]  # the old wrapping is gone
    assert only_new.read_all(newer) == b"written under k2"
    with pytest.raises(MasterKeyMissing):
        old.read_all(shas[0])


def test_old_key_readable_until_rotated(tmp_path: Path) -> None:
    old = make_store(tmp_path, {"k1": K1})
    sha = old.put_bytes(b"evidence").sha256
    both = make_store(tmp_path, {"k1": K1, "k2": K2}, current="k2")
    assert both.read_all(sha) == b"evidence"
    with pytest.raises(MasterKeyMissing, match="k1"):
        make_store(tmp_path, {"k2": K2}, current="k2").read_all(sha)


def test_rotation_interrupted_between_its_two_writes(tmp_path: Path) -> None:
    sha = make_store(tmp_path, {"k1": K1}).put_bytes(b"evidence").sha256
    path = make_store(tmp_path).path(sha)
    old_header = path.read_bytes()[:HEADER_SIZE]
    both = make_store(tmp_path, {"k1": K1, "k2": K2}, current="k2")
    assert both.rotate() == 1
    # a crash after the new slot was written but before the old one was cleared:
    slot = next(o for o in SLOT_OFFSETS if old_header[o : o + 2] == b"k1")
    patch(path, slot, old_header[slot : slot + 72])
    assert make_store(tmp_path, {"k1": K1}).read_all(sha) == b"evidence"
    assert make_store(tmp_path, {"k2": K2}, current="k2").read_all(sha) == b"evidence"
    assert both.rotate() == 1  # finishes the job
    with pytest.raises(MasterKeyMissing):
        make_store(tmp_path, {"k1": K1}).read_all(sha)
    assert make_store(tmp_path, {"k2": K2}, current="k2").verify(sha)


def test_torn_slot_write_still_opens(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"k1": K1, "k2": K2}, current="k2")
    sha = make_store(tmp_path, {"k1": K1}).put_bytes(b"evidence").sha256
    # the new slot half-written: garbage key id and key
    free = next(o for o in SLOT_OFFSETS if store.path(sha).read_bytes()[o] == 0)
    patch(store.path(sha), free, b"k2" + bytes(30) + os.urandom(40))
    assert store.read_all(sha) == b"evidence"
    assert store.rotate() == 1
    assert make_store(tmp_path, {"k2": K2}, current="k2").read_all(sha) == b"evidence"


def test_rotation_continues_past_blobs_it_cannot_open(tmp_path: Path) -> None:
    good = make_store(tmp_path, {"k1": K1}).put_bytes(b"good").sha256
    foreign = make_store(tmp_path, {"k9": K2}, current="k9").put_bytes(b"other").sha256
    with pytest.raises(RotationIncomplete) as excinfo:
        make_store(tmp_path, {"k1": K1, "k3": K2}, current="k3").rotate()
    assert excinfo.value.rewrapped == 1
    assert list(excinfo.value.failed) == [foreign]
    assert "MasterKeyMissing" in excinfo.value.failed[foreign]
    assert make_store(tmp_path, {"k3": K2}, current="k3").read_all(good) == b"good"


def test_unknown_rotation_key(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="not configured"):
        store.rotate("nope")


def test_store_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not configured"):
        BlobStore(tmp_path, {"k1": K1}, "k2")
    with pytest.raises(ValueError, match="32 bytes"):
        BlobStore(tmp_path, {"k1": K1[:16]}, "k1")
    with pytest.raises(ValueError, match="master key id"):
        BlobStore(tmp_path, {"k 1": K1}, "k 1")
    with pytest.raises(ValueError, match="chunk size"):
        BlobStore(tmp_path, {"k1": K1}, "k1", chunk_size=10)


def test_parse_master_keys() -> None:
    a, b = generate_master_key(), generate_master_key()
    keys = parse_master_keys(f" 2026-01:{a} , 2025:{b},")
    assert list(keys) == ["2026-01", "2025"]
    assert all(len(key) == 32 for key in keys.values())
    assert parse_master_keys("") == {}
    for bad in ["nokey", f"a:{a},a:{b}", "a:c2hvcnQ", "a:!!!", f"{'x' * 33}:{a}"]:
        with pytest.raises(ValueError, match="master key"):
            parse_master_keys(bad)


# -- memory --------------------------------------------------------------------------------


async def test_streaming_64_mib_uses_constant_memory(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, {"k1": K1}, "k1")  # default 64 KiB chunks
    piece = payload(64 * 1024)
    total = 64 * 1024 * 1024
    tracemalloc.start()
    try:
        async with store.writer(max_size=total) as writer:
            for _ in range(total // len(piece)):
                await writer.write(piece)
            blob = await writer.commit()
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        for part in store.open_range(blob.sha256):
            digest.update(part)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blob.size == total
    assert digest.hexdigest() == blob.sha256
    assert write_peak < 6 * 1024 * 1024, write_peak
    assert read_peak < 6 * 1024 * 1024, read_peak
