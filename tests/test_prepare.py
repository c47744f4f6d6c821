"""Prepare: IDX parsing with clear errors, [0, 1] scaling, a stratified validation split never trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEBIAN_MIRROR, REPO_ROOT, idx_bytes, requires_debian_data, run_stage

from fmnist.dataset import TENSOR_ALIGNMENT, Split, aligned, load_split, normalise, pixels_of, save_split
from fmnist.errors import StageError
from fmnist.idx import IdxError, decode_split, parse_idx
from fmnist.splits import PrepareParams, prepare_splits, stratified_split

NAMES = ("images-idx3-ubyte", "labels-idx1-ubyte")


def tiny_split(count: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), np.arange(count, dtype=np.uint8) % 10)


def test_parse_idx_round_trips() -> None:
    images = tiny_split(3).images
    assert np.array_equal(parse_idx(idx_bytes(images), "x", ndim=3), images)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x08", "truncated header"),
        (b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + b"\x00" * 16, "bad magic number 00000d01"),
        (b"\x08\x03\x08\x01" + (4).to_bytes(4, "big") + b"\x00" * 4, "bad magic number"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02", "10 bytes, header (5,) needs 13"),
        (b"\x00\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x01\x02", "10 bytes, header (1,) needs 9"),
        (b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") + b"\x00", "bad magic number 00000803 (expected 00000801)"),
    ],
    ids=["truncated-header", "float-dtype", "bad-prefix", "truncated-data", "trailing-bytes", "wrong-ndim"],
)
def test_malformed_idx_is_a_clear_error_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(IdxError, match=r"^labels-idx1-ubyte: ") as error:
        parse_idx(data, "labels-idx1-ubyte", ndim=1)
    assert message in str(error.value)


def test_decode_split_checks_shape_count_and_label_range() -> None:
    split = tiny_split(4)
    with pytest.raises(IdxError, match=r"images are \(28, 27\)"):
        decode_split(idx_bytes(split.images[:, :, :27]), idx_bytes(split.labels), NAMES)
    with pytest.raises(IdxError, match="has 4 images but labels-idx1-ubyte has 3 labels"):
        decode_split(idx_bytes(split.images), idx_bytes(split.labels[:3]), NAMES)
    with pytest.raises(IdxError, match="label 10 outside 0..9"):
        decode_split(idx_bytes(split.images), idx_bytes(np.array([0, 1, 2, 10], np.uint8)), NAMES)


def test_normalise_maps_bytes_onto_zero_to_one_in_float32() -> None:
    scaled = normalise(np.array([0, 1, 128, 255], dtype=np.uint8))
    assert scaled.dtype == np.float32
    assert scaled[0] == 0.0 and scaled[-1] == 1.0 and np.all(np.diff(scaled) > 0)


def test_stratified_split_is_disjoint_complete_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(10, dtype=np.uint8), [100, 100, 100, 100, 100, 100, 100, 100, 100, 50])
    train, validation = stratified_split(labels, 190, seed=3)

    assert len(validation) == 190 and len(train) == len(labels) - 190
    assert not np.intersect1d(train, validation).size
    assert np.array_equal(np.sort(np.concatenate([train, validation])), np.arange(len(labels)))
    # 190 of 950 is 20% of each class: 20 of every 100, 10 of the 50.
    assert np.bincount(labels[validation]).tolist() == [20] * 9 + [10]
    assert np.array_equal(stratified_split(labels, 190, seed=3)[1], validation)
    assert not np.array_equal(stratified_split(labels, 190, seed=4)[1], validation)


def test_stratified_split_hits_the_exact_size_when_shares_are_fractional() -> None:
    labels = np.arange(33, dtype=np.uint8) % 10
    assert len(stratified_split(labels, 7, seed=0)[1]) == 7


def test_val_size_larger_than_the_data_is_an_error() -> None:
    with pytest.raises(Exception, match="'prepare.val_size' is 40, but there are only 30"):
        stratified_split(np.arange(30, dtype=np.uint8) % 10, 40, seed=0)


def test_prepare_splits_keeps_test_whole_and_validation_out_of_train() -> None:
    train, test = tiny_split(100, seed=1), tiny_split(20, seed=2)
    splits = prepare_splits(train, test, PrepareParams(val_size=10, seed=0))

    assert [len(splits[name].labels) for name in ("train", "validation", "test")] == [90, 10, 20]
    flat = {name: {row.tobytes() for row in split.images} for name, split in splits.items()}
    assert not flat["train"] & flat["validation"]
    assert np.array_equal(splits["test"].images, normalise(test.images))
    assert all(split.images.dtype == np.float32 for split in splits.values())


def test_saved_splits_round_trip_and_have_stable_bytes(tmp_path: Path) -> None:
    split = Split(normalise(tiny_split(5).images), tiny_split(5).labels)
    save_split(tmp_path / "a.npz", split)
    save_split(tmp_path / "b.npz", split)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_split(tmp_path, "a")
    assert np.array_equal(loaded.images, split.images) and np.array_equal(loaded.labels, split.labels)
    assert all(array.ctypes.data % TENSOR_ALIGNMENT == 0 for array in loaded)
    assert loaded.images.dtype == np.float32 and loaded.labels.dtype == np.uint8


@pytest.mark.parametrize("as_pixels", [False, True])
@pytest.mark.parametrize("damage", [lambda data: data[: len(data) // 2], lambda data: b"not a zip file"])
def test_a_damaged_split_file_is_a_clear_error_naming_it(
    tmp_path: Path, damage: Callable[[bytes], bytes], as_pixels: bool
) -> None:
    save_split(tmp_path / "a.npz", Split(normalise(tiny_split(5).images), tiny_split(5).labels))
    (tmp_path / "a.npz").write_bytes(damage((tmp_path / "a.npz").read_bytes()))
    with pytest.raises(StageError, match=r"a\.npz: unreadable .*dvc repro --force prepare"):
        load_split(tmp_path, "a", as_pixels=as_pixels)


def test_pixels_of_inverts_normalise_bit_for_bit_and_nothing_else() -> None:
    every_pixel = np.arange(256, dtype=np.uint8)
    assert np.array_equal(pixels_of(normalise(every_pixel)), every_pixel)
    one_bit_off = normalise(every_pixel)
    one_bit_off.view(np.uint32)[128] += 1
    for images in (one_bit_off, np.array([-0.0, 1.0], np.float32), np.array([np.nan, 2.0], np.float32)):
        assert pixels_of(images) is None
    assert pixels_of(normalise(every_pixel).astype(np.float64)) is None


def test_load_split_as_pixels_gives_the_pixels_of_prepared_images_only(tmp_path: Path) -> None:
    pixels = tiny_split(1000).images  # 1000 images: three read chunks of 334
    save_split(tmp_path / "prepared.npz", Split(normalise(pixels), tiny_split(1000).labels))
    loaded = load_split(tmp_path, "prepared", as_pixels=True)
    assert loaded.images.dtype == np.uint8 and np.array_equal(loaded.images, pixels)
    assert all(array.ctypes.data % TENSOR_ALIGNMENT == 0 for array in loaded)
    other = normalise(pixels)
    other[-1, -1, -1] = 0.5  # not a pixel value, in the last chunk
    save_split(tmp_path / "other.npz", Split(other, tiny_split(1000).labels))
    loaded = load_split(tmp_path, "other", as_pixels=True)
    assert loaded.images.dtype == np.float32 and np.array_equal(loaded.images, other)


def test_aligned_copies_only_arrays_tensorflow_cannot_use_in_place() -> None:
    buffer = aligned(np.arange(20, dtype=np.float32))
    assert aligned(buffer) is buffer
    shifted = buffer[1:]  # 4 bytes past an aligned start
    copy = aligned(shifted)
    assert copy is not shifted and copy.ctypes.data % TENSOR_ALIGNMENT == 0 and np.array_equal(copy, shifted)
    buffer.flags.writeable = False  # DLPack cannot export a read-only array
    assert aligned(buffer) is not buffer and aligned(buffer).flags.writeable


@pytest.mark.slow
@requires_debian_data
def test_fetch_and_prepare_on_the_real_data_give_the_stratified_splits_of_the_defaults(tmp_path: Path) -> None:
    """The stages on Debian's copy of Fashion-MNIST at the committed params: 55,000 + 5,000 + 10,000 images."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["fetch"]["sources"] = [str(DEBIAN_MIRROR)]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    fetched = run_stage("fetch", "data/raw", cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    prepared = run_stage("prepare", "data/raw", "data/prepared", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    assert "prepare: wrote train 55000, validation 5000, test 10000 images" in prepared.stdout

    splits = {name: load_split(tmp_path / "data/prepared", name) for name in ("train", "validation", "test")}
    assert np.bincount(splits["validation"].labels).tolist() == [500] * 10
    assert np.bincount(splits["train"].labels).tolist() == [5500] * 10
    assert all(split.images.shape[1:] == (28, 28) and split.images.dtype == np.float32 for split in splits.values())
    assert all(0.0 <= split.images.min() and split.images.max() <= 1.0 for split in splits.values())
