"""The CIFAR-10 example's data: image folders, archives, tfds (mocked), batches.

Every source decodes to the same arrays through one loader; bad sources are
clear errors naming what was expected; caches never land beside a read-only
source. No training here (see test_cifar10_example.py).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from examples.cifar10 import input_pipeline as ip

CLASSES = ip.CLASS_NAMES


def write_folder(root: Path, n_train: int = 4, n_test: int = 2) -> Path:
    """A CIFAR-10-shaped image folder with random PNG and JPEG images; returns ``root``."""
    return ip.write_synthetic_folder(root, n_train, n_test)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    # 40 train / 20 test images; an extra top-level folder, as in the shared archive.
    return write_folder(tmp_path_factory.mktemp("data") / "cifar10")


def test_image_folder_and_archive_load_the_same_arrays(tiny_folder, tmp_path):
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="cifar10")
    a = ip.load_image_folder(tiny_folder.parent)  # one level of nesting
    b = ip.load_image_folder(archive, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("tiny.tar.gz-*.arrays.npz"))) == 1
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
    c = ip.load_image_folder(archive, cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - t < 2.0
    np.testing.assert_array_equal(c.train.images, b.train.images)


def _archive(folder: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar10")
    return path


def test_cache_never_beside_the_data_and_keyed_by_content(tiny_folder, tmp_path, monkeypatch):
    """The cache goes to the user's cache directory, however writable the data's folder is;
    a changed archive (same name, size and modification time) is never served from it."""
    monkeypatch.setenv("AUTOLR_JAX_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    archive = _archive(tiny_folder, src / "data.tar.gz")
    first = ip.load_image_folder(archive)
    assert sorted(p.name for p in src.iterdir()) == ["data.tar.gz"]  # nothing written beside
    assert len(list((tmp_path / "cache").glob("data.tar.gz-*.arrays.npz"))) == 1
    # A different archive under the same name, size and mtime: fewer images in one class.
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other / "cifar10")
    (other / "cifar10" / "train" / "horse" / "0000.png").unlink()
    stat = archive.stat()
    smaller = _archive(other / "cifar10", tmp_path / "smaller.tar.gz").read_bytes()
    archive.write_bytes(smaller.ljust(stat.st_size, b"\0")[: max(len(smaller), stat.st_size)])
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = ip.load_image_folder(archive)
    assert len(second.train) == len(first.train) - 1


def _damage(data: bytes, rng: np.random.Generator) -> bytes:
    """4 KiB (or a fifth of a small file) overwritten with random bytes, past the header."""
    n = min(4096, len(data) // 5)
    start = int(rng.integers(20, len(data) - n))
    return data[:start] + rng.bytes(n) + data[start + n :]


def test_damaged_archive_is_an_error_never_fewer_images(tiny_folder, tmp_path):
    """Random damage to an archive: an error naming the file, or (if it missed every
    member) the full data set; never fewer images, and no cache from a bad read."""
    good = _archive(tiny_folder, tmp_path / "good.tar.gz").read_bytes()
    full = ip.load_image_folder(tmp_path / "good.tar.gz", cache_dir=str(tmp_path / "c0"))
    rng = np.random.default_rng(0)
    outcomes = []
    for trial in range(12):
        path = tmp_path / f"bad{trial}.tar.gz"
        path.write_bytes(_damage(good, rng))
        cache = tmp_path / f"cache{trial}"
        try:
            ds = ip.load_image_folder(path, cache_dir=str(cache))
        except ip.DataError as e:
            assert str(path) in str(e)
            assert not cache.exists() or not any(cache.iterdir())  # nothing cached
            outcomes.append("error")
            continue
        assert (len(ds.train), len(ds.test)) == (len(full.train), len(full.test))
        outcomes.append("full")
    assert "error" in outcomes
    # A cut-off archive and a tar whose member header is damaged (but gzip intact).
    (tmp_path / "cut.tar.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ip.DataError, match="damaged or truncated"):
        ip.load_image_folder(tmp_path / "cut.tar.gz", cache_dir=str(tmp_path / "c1"))
    import gzip

    raw = bytearray(gzip.decompress(good))
    with tarfile.open(fileobj=__import__("io").BytesIO(bytes(raw))) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    raw[offsets[len(offsets) // 2] : offsets[len(offsets) // 2] + 100] = b"x" * 100
    (tmp_path / "hdr.tar.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ip.DataError, match="unexpected end of the archive"):
        ip.load_image_folder(tmp_path / "hdr.tar.gz", cache_dir=str(tmp_path / "c2"))


def test_class_counts(tiny_folder):
    counts = ip.load_image_folder(tiny_folder).class_counts()
    assert counts["train"] == dict.fromkeys(CLASSES, 4)
    assert counts["test"] == dict.fromkeys(CLASSES, 2)


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
    with pytest.raises(ip.DataError, match="damaged or truncated"):
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
