"""Every file format round-trips: the tests write small files in that format and read them back."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainwell.data.formats import detect_format, encode_features, read_idx_array
from trainwell.data.sources import load_source
from trainwell.errors import DataError
from trainwell.recipe import DataSection


def section(source, **kw) -> DataSection:
    return DataSection(source=str(source), **kw)


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=12), "b": rng.integers(0, 5, 12),
                         "colour": ["red", "green", "blue"] * 4, "label": ["yes", "no"] * 6})


# -------------------------------------------------------------------------------------- tables
@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_table_round_trip_with_one_hot(tmp_path, table, fmt):
    path = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
    ds = load_source(section(path, target="label"), 0)
    assert ds.feature_names == ("a", "b", "colour=blue", "colour=green", "colour=red")
    np.testing.assert_allclose(ds.x[:, 0], table["a"], rtol=1e-6)
    np.testing.assert_array_equal(ds.x[:, 1], table["b"])
    for level in ("blue", "green", "red"):
        col = ds.feature_names.index(f"colour={level}")
        np.testing.assert_array_equal(ds.x[:, col], (table["colour"] == level).astype(np.float32))
    assert ds.classes == ("no", "yes")
    np.testing.assert_array_equal(np.asarray(ds.classes)[ds.y], table["label"])


def test_string_columns_rejected_when_asked(tmp_path, table):
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"column 'colour' holds strings; encode it as numbers, drop it, or set "
                       r"data.categorical = \"onehot\" or \"auto\""):
        load_source(section(tmp_path / "t.csv", target="label", categorical="error"), 0)


def test_identifier_like_string_column_rejected(tmp_path):
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(30)], "x": range(30), "y": [0, 1] * 15})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"column 'id' has 30 distinct strings \(more than data.max_categories "
                       r"= 10\).*data.categorical = \"auto\""):
        load_source(section(tmp_path / "t.csv", max_categories=10, categorical="onehot"), 0)
    # auto embeds a column of many levels, but one with a distinct string in every row is an identifier.
    with pytest.raises(DataError, match=r"column 'id' has 30 distinct strings \(a distinct string in every row: "
                       r"an identifier, not a category\); drop it with data.drop = \[\"id\"\]"):
        load_source(section(tmp_path / "t.csv", max_categories=10), 0)


def test_missing_target_column_is_named(tmp_path, table):
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"data.target: column 'nope' not in t.csv; columns: a, b, colour, label"):
        load_source(section(tmp_path / "t.csv", target="nope"), 0)


def test_encoding_new_rows_uses_training_levels(table):
    names = ("a", "colour=blue", "colour=red")
    new = pd.DataFrame({"a": [1.0, 2.0], "colour": ["red", "purple"]})
    x = encode_features(new, names, "new.csv")
    np.testing.assert_array_equal(x, [[1, 0, 1], [2, 0, 0]])
    with pytest.raises(DataError, match=r"new.csv: missing feature columns \['b'\]"):
        encode_features(new, ("a", "b"), "new.csv")


# -------------------------------------------------------------------------------------- arrays
def test_npz_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(20, 2, 3)).astype(np.float32)
    y = np.arange(20) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_source(section(tmp_path / "d.npz"), 0)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


def test_npy_with_labels_file_and_last_column(tmp_path):
    x = np.random.default_rng(2).normal(size=(15, 4)).astype(np.float32)
    y = np.arange(15) % 2
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = load_source(section(tmp_path / "x.npy", target="y.npy"), 0)   # relative to the features file
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    np.save(tmp_path / "xy.npy", np.column_stack([x, y]))
    ds = load_source(section(tmp_path / "xy.npy"), 0)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


def test_npy_images_need_a_labels_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 2, 2)))
    with pytest.raises(DataError, match=r"without a labels file \(data.target = \"labels.npy\"\)"):
        load_source(section(tmp_path / "x.npy"), 0)


# ----------------------------------------------------------------------------------------- IDX
def write_idx(path, array: np.ndarray, compress: bool) -> None:
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (10, 5, 4), dtype=np.uint8)
    labels = (np.arange(10) % 3).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    ds = load_source(section(tmp_path / f"train-images-idx3-ubyte{suffix}"), 0)
    assert ds.x.shape == (10, 1, 5, 4)
    np.testing.assert_allclose(ds.x[:, 0] * 255, images, atol=1e-4)
    np.testing.assert_array_equal(ds.y, labels)


def test_idx_other_dtypes_and_bad_header(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "f.idx", values, False)
    np.testing.assert_array_equal(read_idx_array(tmp_path / "f.idx"), values)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx_array(tmp_path / "bad.idx")
    write_idx(tmp_path / "short.idx", values, False)
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-4])
    with pytest.raises(DataError, match=r"IDX header says \(2, 3\) but the file holds 20 data bytes"):
        read_idx_array(tmp_path / "short.idx")


# --------------------------------------------------------------------------------------- CIFAR
def write_cifar(path, images: np.ndarray, labels: list[np.ndarray]) -> None:
    head = np.stack(labels, 1).astype(np.uint8)
    path.write_bytes(np.concatenate([head, images.reshape(len(images), -1)], 1).tobytes())


def test_cifar10_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1, 2])
    write_cifar(tmp_path / "data_batch_1.bin", images, [labels])
    assert detect_format(tmp_path / "data_batch_1.bin") == "cifar10"
    ds = load_source(section(tmp_path / "data_batch_1.bin"), 0)
    np.testing.assert_allclose(ds.x * 255, images, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(ds.classes, dtype=int)[ds.y], labels)


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    coarse, fine = np.array([0, 19, 4, 4, 7]), np.array([99, 3, 50, 51, 2])
    write_cifar(tmp_path / "train.bin", images, [coarse, fine])
    assert detect_format(tmp_path / "train.bin") == "cifar100"
    for level, labels in (("fine", fine), ("coarse", coarse)):
        ds = load_source(section(tmp_path / "train.bin", target=level), 0)
        np.testing.assert_array_equal(np.asarray(ds.classes, dtype=int)[ds.y], labels)
        np.testing.assert_allclose(ds.x * 255, images, atol=1e-4)


def test_cifar_labels_out_of_range(tmp_path):
    write_cifar(tmp_path / "b.bin", np.zeros((2, 3, 32, 32), np.uint8), [np.array([3, 12])])
    with pytest.raises(DataError, match=r"1 labels outside the expected range 0..9 \(values 12\)"):
        load_source(section(tmp_path / "b.bin"), 0)


# -------------------------------------------------------------------------------- image folder
@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_round_trip(tmp_path, channels):
    rng = np.random.default_rng(6)
    saved = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
            saved[(cls, i)] = pixels
    ds = load_source(section(tmp_path, channels=channels), 0)
    assert ds.x.shape == (6, channels, 6, 5) and ds.classes == ("cat", "dog")
    expected = saved[("dog", 1)].astype(np.float32) / 255
    if channels == 1:
        expected = np.asarray(Image.fromarray(saved[("dog", 1)]).convert("L"), np.float32)[..., None] / 255
    np.testing.assert_allclose(ds.x[4], expected.transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 1, 1, 1])


def test_image_folder_sizes_must_agree_or_resize(tmp_path):
    for cls, size in (("a", 4), ("b", 6)):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (size, size), (10, 20, 30)).save(tmp_path / cls / "x.png")
    with pytest.raises(DataError, match=r"images have different sizes .*; set data.image_size"):
        load_source(section(tmp_path), 0)
    ds = load_source(section(tmp_path, image_size=8), 0)
    assert ds.x.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(ds.x[:, :, 3, 3], [[10 / 255, 20 / 255, 30 / 255]] * 2, atol=1e-6)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "d.xyz").write_text("1,2\n")
    with pytest.raises(DataError, match=r"cannot tell the format of .*d.xyz.*; .* or set data.format"):
        load_source(section(tmp_path / "d.xyz"), 0)
    with pytest.raises(DataError, match=r"data.source: file '.*nope.csv' not found"):
        load_source(section(tmp_path / "nope.csv"), 0)
    (tmp_path / "d.xyz").write_text("a,b\n1,0\n2,1\n3,0\n")
    ds = load_source(section(tmp_path / "d.xyz", format="csv"), 0)
    assert ds.x.shape == (3, 1)
