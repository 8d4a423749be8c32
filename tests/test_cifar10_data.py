"""The CIFAR-10 example's data: image folders, archives, tfds (mocked), batches.

Every source decodes to the same arrays through one loader; bad sources are
clear errors naming what was expected; caches never land beside a read-only
source. No training here (see test_cifar10_example.py).
"""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from examples.cifar10 import input_pipeline as ip

CLASSES = ip.CLASS_NAMES


def write_folder(root: Path, n_train: int = 4, n_test: int = 2, size: int = 32) -> Path:
    """A CIFAR-10-shaped image folder with random PNG and JPEG images; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # A class-dependent tint, so the labels are learnable at all.
                img = rng.integers(0, 128, (size, size, 3)) + 12 * c
                ext = "png" if i % 2 == 0 else "jpg"
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.{ext}")
    return root


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    # 40 train / 20 test images; an extra top-level folder, as in the shared archive.
    return write_folder(tmp_path_factory.mktemp("data") / "cifar10")


def test_image_folder_and_archive_load_the_same_arrays(tiny_folder, tmp_path):
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="cifar10")
    a = ip.load_image_folder(tiny_folder.parent)  # one level of nesting
    b = ip.load_image_folder(archive)
    assert (archive.parent / "tiny.tar.gz.arrays.npz").is_file()  # cached beside it
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert x.images.dtype == np.uint8 and x.images.shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
    np.testing.assert_array_equal(np.bincount(a.train.labels), [4] * 10)
    # PNG pixels survive exactly: image 0000 of class 'bird' (label 2) is a PNG.
    from PIL import Image

    png = np.asarray(Image.open(tiny_folder / "train" / "bird" / "0000.png"))
    np.testing.assert_array_equal(a.train.images[a.train.labels == 2][0], png)
    # The second load comes from the cache.
    t = time.perf_counter()
    c = ip.load_image_folder(archive)
    assert time.perf_counter() - t < 2.0
    np.testing.assert_array_equal(c.train.images, b.train.images)


def test_read_only_source_caches_elsewhere(tiny_folder, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    archive = ro / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="cifar10")
    os.chmod(ro, 0o555)
    try:
        ip.load_image_folder(archive, cache_dir=str(tmp_path / "cache"))
        assert not (ro / "data.tar.gz.arrays.npz").exists()
        assert len(list((tmp_path / "cache").glob("data.tar.gz-*.arrays.npz"))) == 1
    finally:
        os.chmod(ro, 0o755)


def _copy_folder(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "does not exist"),
        ("no_splits", "found no train/ and test/"),
        (
            "wrong_class",
            "missing class folders \\['cat'\\] and unexpected class folders \\['kat'\\]",
        ),
        ("empty_class", "test/dog/ holds no images"),
        ("not_archive", "not a .tar.gz"),
        ("bad_image", "cannot decode image"),
        ("sizes", "images differ in size"),
    ],
)
def test_bad_data_dir(tiny_folder, tmp_path, damage, message):
    path = tmp_path / "data"
    if damage == "missing":
        pass
    elif damage == "no_splits":
        (path / "images" / "train").mkdir(parents=True)
    elif damage == "not_archive":
        path = tmp_path / "data.zip"
        path.write_bytes(b"PK")
    else:
        _copy_folder(tiny_folder, path)
        if damage == "wrong_class":
            (path / "train" / "cat").rename(path / "train" / "kat")
        elif damage == "empty_class":
            for f in (path / "test" / "dog").iterdir():
                f.unlink()
        elif damage == "bad_image":
            (path / "train" / "cat" / "0000.png").write_bytes(b"not an image")
        elif damage == "sizes":
            from PIL import Image

            Image.new("RGB", (16, 16)).save(path / "test" / "cat" / "0000.png")
    with pytest.raises(ip.DataError, match=message) as info:
        ip.load_image_folder(path)
    if damage in ("missing", "no_splits", "wrong_class", "empty_class"):
        assert "train/<class>/" in str(info.value)  # says how to supply the data


def test_bad_data_dir_tar(tiny_folder, tmp_path):
    archive = tmp_path / "wrong.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder / "train", arcname="cifar10/training")
    with pytest.raises(ip.DataError, match="holds no train/<class>/"):
        ip.load_image_folder(archive)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ip.DataError, match="cannot read it as a .tar.gz"):
        ip.load_image_folder(broken)


def test_tfds_source_uses_the_same_loader(tiny_folder, tmp_path, monkeypatch):
    """The tfds path, with tfds.data_source mocked (never a download): same arrays out."""
    tfds = require("tensorflow_datasets", "the tfds data source")
    folder = ip.load_image_folder(tiny_folder)
    calls = []

    def fake_data_source(name, *, split, data_dir=None, download=True, builder_kwargs=None):
        calls.append((name, split, data_dir, builder_kwargs))

        # tfds yields examples as dicts of numpy values, in the data set's own order.
        def examples(s):
            return [{"image": im, "label": np.int64(lb), "id": f"{i}"}
                    for i, (im, lb) in enumerate(zip(s.images, s.labels, strict=True))]  # fmt: skip

        return [examples(folder.train), examples(folder.test)]

    monkeypatch.setattr(tfds, "data_source", fake_data_source)
    seen = []
    real = ip.arrays_to_dataset
    monkeypatch.setattr(
        ip, "arrays_to_dataset", lambda *a, **k: seen.append(a[-1]) or real(*a, **k)
    )
    ds = ip.load_tfds(str(tmp_path / "tfds"), cache_dir=str(tmp_path / "cache"))
    assert calls == [
        ("cifar10", ["train", "test"], str(tmp_path / "tfds"), {"file_format": "array_record"})
    ]
    assert seen and seen[0].startswith("tfds:cifar10")  # through the common loader
    np.testing.assert_array_equal(ds.train.images, folder.train.images)
    np.testing.assert_array_equal(ds.test.labels, folder.test.labels)
    # Cached: the second load does not call tfds.
    ds2 = ip.load_tfds(str(tmp_path / "tfds"), cache_dir=str(tmp_path / "cache"))
    assert len(calls) == 1
    np.testing.assert_array_equal(ds2.train.images, folder.train.images)

    # A missing tfds copy is a clear error, not a stack trace from inside tfds.
    def missing(*args, **kwargs):
        raise KeyError("Trying to access `splits['train']` but `splits` is empty.")

    monkeypatch.setattr(tfds, "data_source", missing)
    with pytest.raises(ip.DataError, match="data_dir"):
        ip.load_tfds(str(tmp_path / "tfds2"), cache_dir=str(tmp_path / "cache"))


def test_lookahead_probe_batches_are_independent_draws():
    # Class-sorted storage: 10 classes x 100 images, labels 0..9 in blocks.
    labels = np.repeat(np.arange(10), 100)
    one = ip.probe_indices(1000, 32, 0, 7)
    np.testing.assert_array_equal(
        one, np.sort(np.random.default_rng([0, 1, 7]).choice(1000, 32, replace=False))
    )
    idx = ip.probe_indices(1000, 32, 0, 7, groups=10)
    assert len(set(idx.tolist())) == 320
    for batch in idx.reshape(10, 32):
        assert np.all(np.diff(batch) > 0)
        # A random batch of 32 from 10 balanced classes has several classes, not one or two.
        assert len(set(labels[batch].tolist())) >= 5
