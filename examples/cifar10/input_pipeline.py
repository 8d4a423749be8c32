"""CIFAR-10 as in-memory arrays: tfds or an offline image folder, one loader after decoding.

Two sources, one destination. tensorflow-datasets' ``cifar10`` (the default, read
through ``tfds.data_source``, which needs no TensorFlow once the data set is
prepared) and an image folder or ``.tar.gz`` of one (``config.data.data_dir``) are both
decoded to ``uint8`` NHWC images and integer labels and handed to the same
:func:`arrays_to_dataset`, which validates them; everything after that (subsets,
batching, shuffling) is shared. Decoded arrays are cached as ``.npz`` so that the
second run starts in seconds.

Augmentation and normalisation (:func:`augment`, :func:`rotate`, :func:`normalize`) are
jax functions: they run on the accelerator, inside the jitted train step (see ``train.py``).
A validation split, when asked for, is held out of the training set
(:func:`train_validation_split`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
# Bump when the cached array format changes, so stale caches are rebuilt.
_CACHE_VERSION = 2

_HOW_TO_SUPPLY = (
    "Supply CIFAR-10 either as an image folder or a .tar.gz of one, laid out as\n"
    "  train/<class>/*.png|jpg  and  test/<class>/*.png|jpg\n"
    f"with the ten class folders {', '.join(CLASS_NAMES)}\n"
    "(a single top-level folder around train/ and test/ is fine, e.g. "
    "--config.data.data_dir=../shared/data/cifar10-jpg.tar.gz), or leave it unset to use "
    "tensorflow-datasets' prepared 'cifar10' (see examples/cifar10/README.md)."
)


class DataError(ValueError):
    """The data source is missing or malformed; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split as arrays.

    Attributes:
      images: ``uint8`` array, shape ``(n, height, width, 3)``.
      labels: ``int32`` array, shape ``(n,)``, values in ``[0, num_classes)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    source: str  # where the data came from, for the logs
    class_names: tuple[str, ...] = CLASS_NAMES
    # Held out of the training set (config.data.validation_size > 0), else None.
    validation: Split | None = None

    def splits(self) -> tuple[tuple[str, Split], ...]:
        """``(name, split)`` of train, validation (if any) and test."""
        named = [("train", self.train), ("validation", self.validation), ("test", self.test)]
        return tuple((name, split) for name, split in named if split is not None)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split: what a run reports in its first line."""
        return {
            name: dict(
                zip(
                    self.class_names,
                    np.bincount(split.labels, minlength=len(self.class_names)).tolist(),
                    strict=True,
                )
            )
            for name, split in self.splits()
        }


# --------------------------------------------------------------------------------------
# The common path after decoding.


def arrays_to_dataset(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    source: str,
) -> Dataset:
    """Validates decoded arrays and wraps them; every source ends here.

    Args:
      train_images, test_images: ``uint8`` NHWC arrays with 3 channels.
      train_labels, test_labels: integer labels in ``[0, 10)``.
      source: a description of the source, used in messages.

    Returns:
      A :class:`Dataset`.

    Raises:
      DataError: on a wrong shape, dtype or label range.
    """
    splits = {}
    for name, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(
                f"{source}: {name} images must be uint8 of shape (n, height, width, 3), "
                f"got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{source}: {name} labels must be integers of shape ({images.shape[0]},), "
                f"got {labels.dtype} {labels.shape}"
            )
        if len(labels) == 0:
            raise DataError(f"{source}: the {name} split is empty. {_HOW_TO_SUPPLY}")
        if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
            raise DataError(
                f"{source}: {name} labels must lie in [0, {len(CLASS_NAMES)}), "
                f"got [{labels.min()}, {labels.max()}]"
            )
        splits[name] = Split(np.ascontiguousarray(images), labels.astype(np.int32))
    if splits["train"].images.shape[1:] != splits["test"].images.shape[1:]:
        raise DataError(
            f"{source}: train and test images differ in size: "
            f"{splits['train'].images.shape[1:]} vs {splits['test'].images.shape[1:]}"
        )
    return Dataset(splits["train"], splits["test"], source)


def _save_cache(path: Path, ds: Dataset, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: an interrupted run leaves no torn cache.
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the cache from other users
        np.savez(
            tmp,
            train_images=ds.train.images,
            train_labels=ds.train.labels,
            test_images=ds.test.images,
            test_labels=ds.test.labels,
            fingerprint=np.array(fingerprint),
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_cache(path: Path, fingerprint: str, source: str) -> Dataset | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return arrays_to_dataset(
                z["train_images"], z["train_labels"], z["test_images"], z["test_labels"], source
            )
    except (OSError, KeyError, ValueError):
        return None  # an unreadable cache is rebuilt, not fatal


def _cached(
    cache_file: Path, fingerprint: str, source: str, build: Callable[[], Dataset]
) -> Dataset:
    ds = _load_cache(cache_file, fingerprint, source)
    if ds is not None:
        return ds
    ds = build()
    try:
        _save_cache(cache_file, ds, fingerprint)
    except OSError as e:  # a read-only place only costs the next run a decode
        print(f"note: could not write the decoded-array cache {cache_file}: {e}")
    return ds


def default_cache_dir() -> Path:
    """``$AUTOLR_JAX_CACHE``, else ``$XDG_CACHE_HOME/autolr_jax``, else ``~/.cache/autolr_jax``."""
    if os.environ.get("AUTOLR_JAX_CACHE"):
        return Path(os.environ["AUTOLR_JAX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autolr_jax"


# --------------------------------------------------------------------------------------
# Image folder / .tar.gz source.


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot decode image {where}: {e}") from e


def _check_classes(found: dict[str, set[str]], where: str) -> None:
    for split in SPLITS:
        classes = found.get(split, set())
        if classes == set(CLASS_NAMES):
            continue
        missing = [c for c in CLASS_NAMES if c not in classes]
        unexpected = sorted(classes - set(CLASS_NAMES))
        parts = []
        if missing:
            parts.append(f"missing class folders {missing}")
        if unexpected:
            parts.append(f"unexpected class folders {unexpected}")
        raise DataError(f"{where}: {split}/ has {' and '.join(parts)}. {_HOW_TO_SUPPLY}")


def _stack(
    items: dict[str, list[tuple[int, str, np.ndarray]]], where: str
) -> tuple[np.ndarray, ...]:
    out = []
    for split in SPLITS:
        entries = sorted(items[split], key=lambda e: (e[0], _natural_key(e[1])))
        shapes = {e[2].shape for e in entries}
        if len(shapes) > 1:
            first = entries[0]
            odd = next(e for e in entries if e[2].shape != first[2].shape)
            raise DataError(
                f"{where}: images differ in size: {first[1]} is {first[2].shape[:2]}, "
                f"{odd[1]} is {odd[2].shape[:2]}; all images must have the same size"
            )
        out.append(np.stack([e[2] for e in entries]))
        out.append(np.array([e[0] for e in entries], np.int32))
    return tuple(out)


def _find_root(path: Path) -> Path:
    """``path`` if it holds train/ and test/, else its single sub-folder that does."""
    if all((path / s).is_dir() for s in SPLITS):
        return path
    subs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subs) == 1 and all((subs[0] / s).is_dir() for s in SPLITS):
        return subs[0]
    raise DataError(
        f"config.data.data_dir {path}: found no train/ and test/ folders in it "
        f"(looked in {path} and in a single sub-folder of it). {_HOW_TO_SUPPLY}"
    )


def _folder_listing(root: Path) -> list[tuple[str, str, Path]]:
    listing = []
    found: dict[str, set[str]] = {}
    for split in SPLITS:
        found[split] = {p.name for p in (root / split).iterdir() if p.is_dir()}
    _check_classes(found, str(root))
    for split in SPLITS:
        for cls in CLASS_NAMES:
            files = [
                p
                for p in (root / split / cls).iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ]
            if not files:
                raise DataError(
                    f"{root}: {split}/{cls}/ holds no images (*.png, *.jpg). {_HOW_TO_SUPPLY}"
                )
            listing.extend((split, cls, p) for p in files)
    return listing


def _load_folder(root: Path, listing: list[tuple[str, str, Path]], source: str) -> Dataset:
    items: dict[str, list] = {s: [] for s in SPLITS}
    index = {c: i for i, c in enumerate(CLASS_NAMES)}
    for split, cls, p in listing:
        items[split].append((index[cls], p.name, _decode(p.read_bytes(), str(p))))
    return arrays_to_dataset(*_stack(items, source), source)


_MEMBER_RE = re.compile(r"^(?:[^/]+/)?(train|test)/([^/]+)/([^/]+)$")


def _read_gzip(path: Path) -> bytes:
    """The whole decompressed archive; any damage is a DataError (gzip's CRC-32 and length).

    Streaming ``tarfile`` does not check the gzip trailer, and takes a damaged tar
    header for the end of the archive: a damaged copy would load with images missing.
    """
    try:
        with gzip.open(path, "rb") as f:
            return f.read()  # checks the CRC-32 and the length in the trailer at the end
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(
            f"config.data.data_dir {path}: the .tar.gz is damaged or truncated ({e}); copy it again"
        ) from e


def _load_tar(path: Path, source: str) -> Dataset:
    items: dict[str, list] = {s: [] for s in SPLITS}
    found: dict[str, set[str]] = {s: set() for s in SPLITS}
    pending = []
    raw = _read_gzip(path)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                m = _MEMBER_RE.match(name)
                if member.isdir():
                    parts = name.rstrip("/").split("/")
                    for i, part in enumerate(parts[:-1]):
                        if part in SPLITS and i + 2 == len(parts) and i <= 1:
                            found[part].add(parts[-1])
                    continue
                if not member.isfile() or m is None:
                    continue
                split, cls, fname = m.groups()
                found[split].add(cls)
                if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise DataError(f"config.data.data_dir {path}: member {name} is truncated")
                pending.append((split, cls, fname, data))
            end = tar.offset
    except DataError:
        raise
    except Exception as e:  # tarfile raises TarError, OSError, EOFError, even TypeError
        raise DataError(f"config.data.data_dir {path}: cannot read it as a .tar.gz: {e!r}") from e
    # tarfile stops at the first header it cannot parse as if the archive ended there; a
    # real end is followed by nothing but the zero blocks of the end-of-archive marker.
    if raw[end:].strip(b"\0"):
        raise DataError(
            f"config.data.data_dir {path}: unexpected end of the archive at byte {end} of "
            f"{len(raw)} (a damaged member header); copy it again"
        )
    if not any(found.values()):
        raise DataError(
            f"config.data.data_dir {path}: the archive holds no train/<class>/ or test/<class>/ "
            f"folders (at its top level or inside one top-level folder). {_HOW_TO_SUPPLY}"
        )
    _check_classes(found, str(path))
    for split in SPLITS:
        with_images = {cls for s, cls, _, _ in pending if s == split}
        empty = [c for c in CLASS_NAMES if c not in with_images]
        if empty:
            raise DataError(
                f"{path}: {split}/{empty[0]}/ holds no images (*.png, *.jpg). {_HOW_TO_SUPPLY}"
            )
    index = {c: i for i, c in enumerate(CLASS_NAMES)}
    for split, cls, fname, data in pending:
        items[split].append((index[cls], fname, _decode(data, f"{path}:{split}/{cls}/{fname}")))
    return arrays_to_dataset(*_stack(items, source), source)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_tar_gz(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


def load_image_folder(data_dir: str | os.PathLike, cache_dir: str | None = None) -> Dataset:
    """Loads CIFAR-10 from an image folder or a ``.tar.gz`` of one, caching the arrays.

    The decoded arrays are cached in ``cache_dir`` (default :func:`default_cache_dir`),
    never beside the data. The cache of an archive is keyed by the SHA-256 of its
    bytes, that of a folder by its files' names, sizes and modification times, so a
    changed source is never served from an old cache; a cache is only written from
    a source that read cleanly (a damaged archive is an error, never fewer images).

    Args:
      data_dir: the folder or archive.
      cache_dir: where the decoded arrays are cached.

    Returns:
      A :class:`Dataset`.

    Raises:
      DataError: missing path, damaged archive, wrong layout, wrong class names,
        unreadable images.
    """
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"config.data.data_dir {path} does not exist. {_HOW_TO_SUPPLY}")
    source = str(path)
    if path.is_file():
        if not _is_tar_gz(path):
            raise DataError(
                f"config.data.data_dir {path} is a file but not a .tar.gz archive. {_HOW_TO_SUPPLY}"
            )
        digest = _sha256(path)
        fingerprint = f"v{_CACHE_VERSION}|tar|{digest}"
        build = lambda: _load_tar(path, source)  # noqa: E731
    else:
        root = _find_root(path)
        listing = _folder_listing(root)
        stats = [(s, c, p.name, p.stat()) for s, c, p in listing]
        digest = hashlib.sha256(
            repr(sorted((s, c, n, st.st_size, st.st_mtime_ns) for s, c, n, st in stats)).encode()
        ).hexdigest()
        fingerprint = f"v{_CACHE_VERSION}|folder|{root.resolve()}|{digest}"
        build = lambda: _load_folder(root, listing, source)  # noqa: E731
    cache_file = Path(cache_dir or default_cache_dir()) / f"{path.name}-{digest[:16]}.arrays.npz"
    return _cached(cache_file, fingerprint, source, build)


# --------------------------------------------------------------------------------------
# tensorflow-datasets source.


def tfds_data_source(data_dir: str | None):
    """``tfds.data_source('cifar10')`` as (train, test) sequences of example dicts.

    Prepares the data set (download + conversion) only where TensorFlow is
    installed, since tfds 4.9 needs TensorFlow to *prepare* cifar10 (it encodes
    the images with ``tf.image.encode_png``); reading a prepared array_record copy
    needs neither TensorFlow nor a network.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            "tensorflow-datasets is not installed (pip install tensorflow-datasets). "
            + _HOW_TO_SUPPLY
        ) from e
    can_prepare = importlib.util.find_spec("tensorflow") is not None
    kwargs = dict(
        split=["train", "test"],
        download=can_prepare,
        builder_kwargs={"file_format": "array_record"},
    )
    if data_dir:
        kwargs["data_dir"] = data_dir
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    try:
        train, test = tfds.data_source("cifar10", **kwargs)
    except Exception as e:  # tfds raises KeyError/AssertionError/... for a missing copy
        if can_prepare:
            hint = "tfds tried to download and prepare it and failed (no internet?)."
        else:
            hint = (
                "It is not prepared there, and preparing it needs TensorFlow and internet: "
                "`pip install tensorflow` then run this command again once (or run "
                '`python -c "import tensorflow_datasets as tfds; '
                "tfds.data_source('cifar10', builder_kwargs={'file_format': "
                "'array_record'})\"`)."
            )
        raise DataError(
            f"tensorflow-datasets 'cifar10' (array_record) could not be loaded from {where}. "
            f"{hint} Offline, pass --config.data.data_dir instead. {_HOW_TO_SUPPLY}\n"
            f"(tfds said: {type(e).__name__}: {e})"
        ) from e
    return train, test


def _examples_to_arrays(examples: Sequence[dict], what: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(examples)
    if n == 0:
        raise DataError(f"{what} is empty")
    images, labels = [], []
    for i in range(n):
        ex = examples[i]
        images.append(np.asarray(ex["image"], np.uint8))
        labels.append(int(ex["label"]))
    try:
        return np.stack(images), np.asarray(labels, np.int32)
    except ValueError as e:
        raise DataError(f"{what}: images differ in shape: {e}") from e


def load_tfds(data_dir: str | None = None, cache_dir: str | None = None) -> Dataset:
    """Loads tensorflow-datasets' ``cifar10`` via ``tfds.data_source``, caching the arrays.

    The arrays are cached in ``cache_dir`` (default :func:`default_cache_dir`),
    keyed by the tfds data directory, and reused without touching tfds.
    """
    where = str(Path(data_dir).expanduser().resolve()) if data_dir else "default"
    source = f"tfds:cifar10 ({data_dir or 'default tfds data_dir'})"
    key = hashlib.sha1(where.encode()).hexdigest()[:12]
    cache_file = Path(cache_dir or default_cache_dir()) / f"tfds-cifar10-{key}.arrays.npz"
    fingerprint = f"v{_CACHE_VERSION}|tfds|cifar10|{where}"

    def build() -> Dataset:
        train, test = tfds_data_source(data_dir)
        tr = _examples_to_arrays(train, f"{source} train")
        te = _examples_to_arrays(test, f"{source} test")
        return arrays_to_dataset(*tr, *te, source)

    return _cached(cache_file, fingerprint, source, build)


def write_synthetic_folder(
    root: str | os.PathLike, train_per_class: int = 4, test_per_class: int = 2, size: int = 32
) -> Path:
    """A tiny CIFAR-10-shaped image folder of random images, for tests and smoke runs.

    ``{train,test}/<class>/NNNN.{png,jpg}`` (PNG and JPEG alternate), each image a
    class-dependent tint plus noise, so that the labels are learnable at all.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, cls in enumerate(CLASS_NAMES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 128, (size, size, 3)) + 12 * c
                ext = "png" if i % 2 == 0 else "jpg"
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.{ext}")
    return root


# --------------------------------------------------------------------------------------
# Subsets and batches.


class SplitError(ValueError):
    """A data setting that does not fit the data set (``validation_size`` too large)."""


def balanced_order(labels: np.ndarray, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Every index of a split, in the order the class-balanced subsets take them.

    A fixed (seed 0) shuffle, then round-robin over the classes: the first image
    of each class in the shuffle (classes in label order), then the second of
    each, and so on; a class that runs out is skipped. Any prefix of this order is
    as balanced as the classes allow. Independent of the training seed.
    """
    labels = np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(labels))
    shuffled = labels[order]
    rank = np.empty(len(labels), np.int64)  # position of each image within its class
    for c in range(num_classes):
        in_c = shuffled == c
        rank[in_c] = np.arange(np.count_nonzero(in_c))
    return order[np.lexsort((shuffled, rank))]  # by rank, then by class


def balanced_subset(split: Split, n: int | None, num_classes: int = len(CLASS_NAMES)) -> Split:
    """The first ``n`` examples of a fixed (seed 0) shuffle, balanced over classes.

    Independent of the training seed, so that every run of a comparison sees the
    same subset. ``None`` or ``n >= len(split)`` returns the split unchanged.
    The examples keep their order in ``split``.
    """
    if n is None or n >= len(split):
        return split
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    take = np.sort(balanced_order(split.labels, num_classes)[:n])
    return Split(split.images[take], split.labels[take])


def train_validation_split(
    split: Split, train_subset: int | None, validation_size: int,
    num_classes: int = len(CLASS_NAMES),
) -> tuple[Split, Split | None]:  # fmt: skip
    """The training images and the class-balanced validation split held out of them.

    Both come from :func:`balanced_order` (fixed, independent of the training
    seed). With ``train_subset`` set and at least ``validation_size`` images left
    outside it, the training subset is exactly ``balanced_subset(split,
    train_subset)`` (as without a validation split) and the validation images are
    the next ``validation_size`` of the order, so never in the subset. Otherwise
    (the full training set, or too few images left) the validation images are
    carved out first, as the first ``validation_size`` of the order, and the
    training images (at most ``train_subset``) are taken from the rest.

    Returns:
      ``(train, validation)``; ``validation`` is None when ``validation_size`` is 0.

    Raises:
      SplitError: ``validation_size`` leaves no training image.
    """
    if not validation_size:
        return balanced_subset(split, train_subset, num_classes), None
    n_all = len(split)
    if validation_size >= n_all:
        raise SplitError(
            f"config.data.validation_size {validation_size} leaves no training images "
            f"(the training set has {n_all}); it must be at most {n_all - 1}"
        )
    order = balanced_order(split.labels, num_classes)
    n = n_all if train_subset is None else min(train_subset, n_all)
    if n + validation_size <= n_all and n < n_all:
        train_idx, val_idx = order[:n], order[n : n + validation_size]
    else:
        val_idx, train_idx = order[:validation_size], order[validation_size:][:n]
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return (
        Split(split.images[train_idx], split.labels[train_idx]),
        Split(split.images[val_idx], split.labels[val_idx]),
    )


def load_dataset(data) -> Dataset:
    """The data set a run's ``config.data`` asks for: the source, then the subsets.

    Raises:
      DataError: the source is missing or malformed.
      SplitError: ``data.validation_size`` leaves no training images.
    """
    if data.data_dir:
        ds = load_image_folder(data.data_dir, data.cache_dir)
    else:
        ds = load_tfds(data.tfds_data_dir, data.cache_dir)
    train, validation = train_validation_split(
        ds.train, data.train_subset, data.get("validation_size", 0)
    )
    return Dataset(
        train,
        balanced_subset(ds.test, data.test_subset),
        ds.source,
        validation=validation,
    )


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of an epoch: a function of (seed, epoch) only, so resuming repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(
    split: Split, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled batches of an epoch; the last partial batch is dropped (one compiled shape)."""
    perm = epoch_permutation(len(split), seed, epoch)
    for i in range(len(split) // batch_size):
        idx = np.sort(perm[i * batch_size : (i + 1) * batch_size])
        yield split.images[idx], split.labels[idx]


def probe_indices(n: int, size: int, seed: int, step: int, groups: int = 1) -> np.ndarray:
    """Random training examples for the probe at update ``step`` (a function of seed and step).

    ``groups`` batches of ``size`` distinct examples, concatenated (the look-ahead
    probe's batches, then its scoring batch). Each batch is a random draw: the
    indices are sorted within a batch only, never across batches, because the
    arrays may be stored class by class (sorting ``groups * size`` indices and then
    splitting them would give batches of one or two classes).
    """
    idx = np.random.default_rng([seed, 1, step]).choice(n, size * groups, replace=False)
    return np.sort(idx.reshape(groups, size), axis=1).reshape(-1)


def bn_batches(split: Split, batch_size: int, seed: int, epoch: int, n: int) -> np.ndarray:
    """``n`` un-augmented training batches ``[n, batch, H, W, 3]`` (a function of seed, epoch)."""
    perm = np.random.default_rng([seed, 2, epoch]).permutation(len(split))
    idx = np.sort(perm[: n * batch_size].reshape(n, batch_size), axis=1)
    return split.images[idx]


def eval_batches(
    split: Split, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches covering the split once; the last is padded, with a 0/1 mask marking real rows."""
    n = len(split)
    for start in range(0, n, batch_size):
        images = split.images[start : start + batch_size]
        labels = split.labels[start : start + batch_size]
        k = len(labels)
        mask = np.ones(batch_size, np.float32)
        if k < batch_size:
            pad = batch_size - k
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)])
            labels = np.concatenate([labels, np.zeros(pad, np.int32)])
            mask[k:] = 0.0
        yield images, labels, mask


# --------------------------------------------------------------------------------------
# On the accelerator, inside the jitted train step.

# Per-channel statistics of the CIFAR-10 training set (official binary release).
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32) * 255.0
STD = np.array([0.2470, 0.2435, 0.2616], np.float32) * 255.0
# config.data.normalize: 'cifar' (the statistics above) or 'half' (mean 0.5, std 0.5).
NORMALIZATIONS = ("cifar", "half")


def normalize(images: jax.Array, mode: str = "cifar") -> jax.Array:
    """uint8 NHWC -> float32, standardised per channel.

    ``mode='cifar'``: with the CIFAR-10 training set's mean and std (:data:`MEAN`,
    :data:`STD`). ``mode='half'``: torchvision's ``ToTensor()`` then
    ``Normalize((0.5,) * 3, (0.5,) * 3)``, i.e. ``(x / 255 - 0.5) / 0.5``, in [-1, 1].
    """
    if mode == "cifar":
        return (images.astype(jnp.float32) - MEAN) / STD
    if mode == "half":
        return (images.astype(jnp.float32) / 255.0 - 0.5) / 0.5
    raise ValueError(f"normalize mode must be one of {NORMALIZATIONS}, got {mode!r}")


def normalizer(data) -> Callable[[jax.Array], jax.Array]:
    """The ``normalize`` of a run's ``config.data`` (its ``normalize`` setting)."""
    mode = data.get("normalize", "cifar")
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize mode must be one of {NORMALIZATIONS}, got {mode!r}")
    return lambda images: normalize(images, mode)


def rotate(images: jax.Array, degrees: jax.Array) -> jax.Array:
    """Each image rotated counter-clockwise by its angle, nearest neighbour, zero fill.

    torchvision's ``RandomRotation`` at its defaults (``InterpolationMode.NEAREST``,
    ``fill=0``, ``expand=False``), as PIL's ``Image.rotate(angle, Image.NEAREST)``
    computes it: about the image centre, an output pixel takes the input pixel
    nearest to its rotated-back position, or 0 where that falls outside the image.

    Args:
      images: ``(b, h, w, c)``, any dtype.
      degrees: ``(b,)`` angles in degrees (positive: counter-clockwise on screen).
    """
    _, h, w, _ = images.shape
    theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    y = jnp.arange(h, dtype=jnp.float32)[:, None] - cy
    x = jnp.arange(w, dtype=jnp.float32)[None, :] - cx

    def one(image, t):
        cos, sin = jnp.cos(t), jnp.sin(t)
        # The input position of each output pixel (the inverse rotation, y pointing down).
        src_x = cx + x * cos - y * sin
        src_y = cy + x * sin + y * cos
        # PIL's nearest neighbour: floor(position + 1/2), i.e. ties round up.
        ix = jnp.floor(src_x + 0.5).astype(jnp.int32)
        iy = jnp.floor(src_y + 0.5).astype(jnp.int32)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        pixels = image[jnp.clip(iy, 0, h - 1), jnp.clip(ix, 0, w - 1)]
        return jnp.where(inside[..., None], pixels, jnp.zeros_like(pixels))

    return jax.vmap(one)(images, theta)


def rotation_angles(key: jax.Array, n: int, max_degrees: float) -> jax.Array:
    """``n`` angles uniform in ``[-max_degrees, max_degrees]`` (``RandomRotation(max_degrees)``)."""
    return jax.random.uniform(key, (n,), jnp.float32, -max_degrees, max_degrees)


def augment(
    images: jax.Array, key: jax.Array, pad: int = 4, *, crop: bool = True, rotation: float = 0.0
) -> jax.Array:
    """Random crop after zero-padding by ``pad`` pixels, random horizontal flip, rotation.

    torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``, on
    device: a crop offset and a coin per image; ``crop=False`` skips the crop.
    ``rotation > 0`` then rotates each image by an angle uniform in
    ``[-rotation, rotation]`` degrees (``RandomRotation(rotation)``, :func:`rotate`).
    The crop and the flip draw the same numbers from ``key`` whatever the other
    settings, and the rotation draws from a key of its own.
    """
    b, h, w, c = images.shape
    k_y, k_x, k_flip = jax.random.split(key, 3)
    out = images
    if crop:
        padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        dy = jax.random.randint(k_y, (b,), 0, 2 * pad + 1)
        dx = jax.random.randint(k_x, (b,), 0, 2 * pad + 1)
        out = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(
            padded, dy, dx
        )
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    out = jnp.where(flip[:, None, None, None], out[:, :, ::-1], out)
    if rotation > 0:
        out = rotate(out, rotation_angles(jax.random.fold_in(key, 3), b, rotation))
    return out


def augmenter(data) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """The ``(images, key) -> images`` augmentation of a run's ``config.data``, or None (off).

    ``augment`` switches it on: the horizontal flip, the random crop unless
    ``augment_crop`` is False, and a random rotation when ``augment_rotation > 0``.
    """
    if not data.augment:
        return None
    crop = data.get("augment_crop", True)
    rotation = float(data.get("augment_rotation", 0.0) or 0.0)
    return lambda images, key: augment(images, key, crop=crop, rotation=rotation)
