"""The ring alone, in one process: checked against a bytes model, and fed a corrupt header.

Writer and reader share one Ring object here, which is consistent because each side publishes its counter.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from array import array
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freeflow.shm import Ring, RingCorrupted, ShmError, UnsupportedPlatform
from freeflow.shm import ring as ring_module
from freeflow.shm.ring import HEAD_SLOT, HEADER_SIZE, MAGIC_SLOT, TAIL_SLOT, VERSION_SLOT

CAPACITIES = st.sampled_from([64, 128, 256, 1024])


@pytest.fixture
def ring_and_fd() -> Iterator[tuple[Ring, int]]:
    ring, fd = Ring.create(256)
    yield ring, fd
    ring.close()
    os.close(fd)


def header(fd: int) -> tuple[mmap.mmap, memoryview]:
    """A second mapping of the header, playing a peer that writes whatever it likes."""
    mapping = mmap.mmap(fd, HEADER_SIZE)
    return mapping, memoryview(mapping).cast("Q")


def advance(ring: Ring, offset: int) -> None:
    """Move head and tail to `offset`, so the next bytes land there (mod capacity)."""
    while offset:
        n = ring.write(bytes(min(offset, ring.capacity)))
        ring.read(n)
        offset -= n


def pattern(start: int, n: int) -> bytes:
    return bytes((start + i) % 251 for i in range(n))


operations = st.lists(st.one_of(
    st.tuples(st.just("write"), st.binary(max_size=1100)),
    st.tuples(st.just("read"), st.integers(0, 1100)),
    st.tuples(st.just("readinto"), st.integers(0, 1100)),
    st.tuples(st.just("reserve"), st.integers(0, 1100), st.integers(0, 1100)),
    st.tuples(st.just("peek"), st.integers(0, 1100)),
    st.tuples(st.just("put"), st.binary(max_size=1100)),
    st.tuples(st.just("take"), st.integers(0, 1100)),
), max_size=60)


@given(capacity=CAPACITIES, ops=operations)
def test_random_operations_match_a_bytes_model(capacity: int, ops: list[tuple]) -> None:
    ring, fd = Ring.create(capacity)
    model = bytearray()
    written = 0
    try:
        for op, *args in ops:
            if op == "write":
                n = ring.write(args[0])
                assert n == min(len(args[0]), capacity - len(model))
                model += args[0][:n]
            elif op == "read":
                got = ring.read(args[0])
                assert got == model[:args[0]]
                del model[:len(got)]
            elif op == "readinto":
                buf = bytearray(args[0])
                n = ring.readinto(buf)
                assert buf[:n] == model[:n] and n == min(args[0], len(model))
                del model[:n]
            elif op == "put":  # all or nothing, and only where it fits before the wrap-around
                fits = len(args[0]) <= capacity - len(model) and (ring.head & (capacity - 1)) + len(args[0]) <= capacity
                assert ring.put(args[0]) == fits
                if fits:
                    model += args[0]
            elif op == "take":
                buf = bytearray(args[0])
                fits = args[0] <= len(model) and (ring.tail & (capacity - 1)) + args[0] <= capacity
                assert ring.take(memoryview(buf)) == fits
                if fits:
                    assert buf == model[:args[0]]
                    del model[:args[0]]
            elif op == "reserve":
                view = ring.reserve(args[0])
                assert len(view) <= min(args[0], capacity - len(model))
                k = min(args[1], len(view))
                view[:k] = pattern(written, k)
                view.release()
                ring.commit(k)
                model += pattern(written, k)
                written += k
            else:
                view = ring.peek()
                assert view or not model
                assert view == model[:len(view)]
                k = min(args[0], len(view))
                view.release()
                ring.release(k)
                del model[:k]
            assert ring.readable() == len(model)
            assert ring.writable() == capacity - len(model)
    finally:
        ring.close()
        os.close(fd)


@given(capacity=CAPACITIES, offset=st.integers(0, 2047), fill=st.integers(0, 1024), n=st.integers(0, 1100),
       parts=st.lists(st.integers(0, 1100), max_size=4))
def test_reserve_then_commit_in_any_split(capacity: int, offset: int, fill: int, n: int,
                                          parts: list[int]) -> None:
    ring, fd = Ring.create(capacity)
    try:
        advance(ring, offset)
        fill = min(fill, capacity)
        ring.write(bytes(fill))
        view = ring.reserve(n)
        reserved = len(view)
        assert reserved == min(n, capacity - fill, capacity - (offset + fill) % capacity)
        view[:] = pattern(0, reserved)
        view.release()
        committed = 0
        for part in parts:
            part = min(part, reserved - committed)
            ring.commit(part)
            committed += part
        with pytest.raises(ValueError):
            ring.commit(reserved - committed + 1)
        assert ring.readable() == fill + committed
        assert ring.read(fill) == bytes(fill)
        assert ring.read(capacity) == pattern(0, committed)
    finally:
        ring.close()
        os.close(fd)


@given(capacity=CAPACITIES, offset=st.integers(0, 2047), fill=st.integers(1, 1024),
       parts=st.lists(st.integers(0, 1100), max_size=4))
def test_peek_then_release_in_any_split(capacity: int, offset: int, fill: int, parts: list[int]) -> None:
    ring, fd = Ring.create(capacity)
    try:
        advance(ring, offset)
        data = pattern(7, min(fill, capacity))
        ring.write(data)
        view = ring.peek()
        assert len(view) == min(len(data), capacity - offset % capacity)
        assert view == data[:len(view)]
        peeked = len(view)
        view.release()
        released = 0
        for part in parts:
            part = min(part, peeked - released)
            ring.release(part)
            released += part
        with pytest.raises(ValueError):
            ring.release(peeked - released + 1)
        assert ring.read(capacity) == data[released:]
    finally:
        ring.close()
        os.close(fd)


def test_write_and_readinto_cross_the_wrap_in_one_call(ring_and_fd: tuple[Ring, int]) -> None:
    ring, _ = ring_and_fd
    advance(ring, 200)
    data = pattern(3, 256)
    assert ring.write(data) == 256
    assert ring.write(b"x") == 0
    buf = bytearray(300)
    assert ring.readinto(buf) == 256
    assert buf[:256] == data


def test_buffers_of_bytes_are_accepted(ring_and_fd: tuple[Ring, int]) -> None:
    ring, _ = ring_and_fd
    assert ring.write(memoryview(b"abc")) == 3
    assert ring.write(memoryview(array("B", b"de"))) == 2
    target = array("B", bytes(5))
    assert ring.readinto(target) == 5
    assert target.tobytes() == b"abcde"


def test_negative_sizes_are_refused(ring_and_fd: tuple[Ring, int]) -> None:
    ring, _ = ring_and_fd
    with pytest.raises(ValueError):
        ring.reserve(-1)
    with pytest.raises(ValueError):
        ring.read(-1)


def test_a_second_mapping_sees_the_same_bytes(ring_and_fd: tuple[Ring, int]) -> None:
    writer, fd = ring_and_fd
    reader = Ring.attach(fd)
    try:
        writer.write(b"hello")
        assert reader.read(10) == b"hello"
        assert writer.writable() == 256
        writer.shutdown_write()
        reader.shutdown_read()
        assert reader.writer_closed and writer.reader_closed
    finally:
        reader.close()


@pytest.mark.parametrize("capacity", [0, 63, 100, 1 << 41])
def test_bad_capacities_are_refused(capacity: int) -> None:
    with pytest.raises(ValueError):
        Ring.create(capacity)


def test_close_with_a_live_view_is_an_error_and_close_again_unmaps() -> None:
    ring, fd = Ring.create(64)
    view = ring.reserve(8)
    with pytest.raises(ShmError, match="close again"):
        ring.close()
    view.release()
    ring.close()
    assert ring._mapping.closed
    os.close(fd)


def test_other_architectures_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring_module.platform, "machine", lambda: "aarch64")
    with pytest.raises(UnsupportedPlatform, match="aarch64"):
        Ring.create(64)


# A peer writing garbage.

def test_tail_beyond_head_is_corruption(ring_and_fd: tuple[Ring, int]) -> None:
    ring, fd = ring_and_fd
    ring.write(b"abc")
    mapping, slots = header(fd)
    slots[TAIL_SLOT] = 4
    # write() re-reads the tail once the space it saw free is used up (a write of the whole capacity).
    for call in (ring.writable, lambda: ring.write(bytes(ring.capacity)), lambda: ring.reserve(1)):
        with pytest.raises(RingCorrupted):
            call()
    slots.release()
    mapping.close()


@pytest.mark.parametrize("method", ["write", "put"])
def test_a_garbage_tail_is_refused_on_every_write_after(ring_and_fd: tuple[Ring, int], method: str) -> None:
    ring, fd = ring_and_fd
    mapping, slots = header(fd)
    slots[TAIL_SLOT] = 2**50
    for size in (ring.capacity, 1, ring.capacity // 2):  # the first reads the tail; the next may not, but must
        with pytest.raises(RingCorrupted):
            getattr(ring, method)(bytes(size))
    slots.release()
    mapping.close()


def test_a_tail_changed_between_attach_and_the_first_write_is_checked() -> None:
    ring, fd = Ring.create(64)
    mapping = mmap.mmap(fd, HEADER_SIZE + 64)
    memoryview(mapping)[:HEADER_SIZE].cast("Q")[TAIL_SLOT] = 2**40
    late = Ring(mapping, 64)  # what attach() builds once its own checks have passed
    with pytest.raises(RingCorrupted):
        late.write(b"x")
    late.close()
    ring.close()
    os.close(fd)


def test_head_too_far_ahead_is_corruption(ring_and_fd: tuple[Ring, int]) -> None:
    ring, fd = ring_and_fd
    mapping, slots = header(fd)
    for head in (257, 2**64 - 1):
        slots[HEAD_SLOT] = head
        for call in (ring.readable, ring.peek, lambda: ring.read(1), lambda: ring.readinto(bytearray(1))):
            with pytest.raises(RingCorrupted):
                call()
    slots.release()
    mapping.close()


def test_head_behind_tail_is_corruption(ring_and_fd: tuple[Ring, int]) -> None:
    ring, fd = ring_and_fd
    ring.write(b"abcdef")
    assert ring.read(6) == b"abcdef"
    mapping, slots = header(fd)
    slots[HEAD_SLOT] = 2
    with pytest.raises(RingCorrupted):
        ring.read(1)
    slots.release()
    mapping.close()


@pytest.mark.parametrize(("slot", "value", "message"), [
    (MAGIC_SLOT, 0x1234, "magic"),
    (VERSION_SLOT, 99, "version"),
    (ring_module.CAPACITY_SLOT, 255, "capacity"),
    (ring_module.CAPACITY_SLOT, 128, "capacity"),
    (HEAD_SLOT, 300, "apart"),
])
def test_attach_validates_the_header(slot: int, value: int, message: str) -> None:
    ring, fd = Ring.create(256)
    ring.close()
    mapping, slots = header(fd)
    slots[slot] = value
    try:
        with pytest.raises(RingCorrupted, match=message):
            Ring.attach(fd)
    finally:
        slots.release()
        mapping.close()
        os.close(fd)


def test_attach_refuses_an_unsealed_memfd() -> None:
    fd = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, HEADER_SIZE + 256)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
        with pytest.raises(RingCorrupted, match="sealed"):
            Ring.attach(fd)
    finally:
        os.close(fd)


def test_attach_refuses_what_is_not_a_memfd() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(RingCorrupted, match="memfd"):
            Ring.attach(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_attach_refuses_a_memfd_of_impossible_size() -> None:
    fd = os.memfd_create("tiny", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 100)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, ring_module.SEALS)
        with pytest.raises(RingCorrupted, match="size"):
            Ring.attach(fd)
    finally:
        os.close(fd)
