"""Readers for the image datasets: scikit-learn digits, CIFAR-10/100 and SVHN.

CIFAR is read straight from the official python-pickle layout and SVHN from the official
``.mat`` files, so re-packed copies in the same layout (with other checksums) load too.
``download=True`` fetches the official archives with torchvision's helper.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl_envs.data.base import Split, make_split, stratified_split
from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.io import atomic_save

# NumPy's array reconstructor, which pickles of arrays call by name: ``numpy.core.multiarray``
# in the official files (NumPy 1), ``numpy._core.multiarray`` in files pickled with NumPy 2.
try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct


@dataclass
class RawImageData:
    """What a reader returns: official train/test splits and task metadata."""

    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    num_fine_classes: int = 0
    class_names: list[str] | None = None
    default_val_size: float | int = 0.1
    hflip: bool = True


class DatasetNotFoundError(PathNotFoundError):
    """Raised when a dataset is missing and may not be downloaded."""


def _missing(name: str, path: Path, detail: str = "") -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Dataset {name!r} not found or corrupted at {path}{detail}. Pass download=True to "
        f"fetch it, or point `data_root` (or the MTL_ENVS_DATA environment variable) at the "
        f"folder that holds it."
    )


# Every global the CIFAR-10/100 python files name (their uint8 ``data`` array); the rest of
# them is dicts, lists, strings, bytes and ints, which need none.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that cannot run code: it resolves only the globals of :data:`_CIFAR_GLOBALS`.

    ``pickle.load`` imports and calls whatever function a file names, so a crafted file in
    place of a CIFAR batch would run code; here any other global is an error instead.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refuses to load global {module}.{name}: CIFAR files hold only NumPy arrays, "
                "dicts, lists, strings and numbers, and loading anything else could run code"
            ) from None


def _read_pickle(path: Path, name: str) -> dict:
    """Unpickle a CIFAR python file with :class:`_CifarUnpickler`.

    Raises:
        DatasetNotFoundError: the file is missing, truncated or corrupt, or names a global
            other than NumPy's array reconstruction (the message names the file and why).
    """
    try:
        with open(path, "rb") as f:
            # latin1: the official files were pickled by Python 2, whose byte strings (keys,
            # array data) latin1 decodes one to one.
            return _CifarUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise _missing(name, path.parent, f" (no file {path.name!r})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as err:
        # Past the allow-list a corrupt file fails in whichever way its bytes lead the
        # unpickler (a bad memo key, wrong arguments to the array constructor...).
        raise _missing(name, path.parent, f" ({path.name!r} is unreadable: {err})") from None


def _cifar_images(batch: dict, path: Path, name: str) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _missing(name, path, f" (unexpected 'data' array {data.dtype} {data.shape})")
    return data.reshape(-1, 3, 32, 32)


def read_digits(data_root: Path, download: bool = False, split_seed: int = 0) -> RawImageData:
    """scikit-learn's 1,797 8x8 digit images with a fixed stratified test split of 300.

    With the default validation size (297) the splits are 1,200 / 297 / 300, so an epoch is
    exactly 12 batches of 100. Pixel intensities 0..16 are rescaled to 0..255 uint8 so every
    image dataset shares one representation.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, 300, split_seed)
    mean = float(images[train_idx].mean() / 255.0)
    std = float(images[train_idx].std() / 255.0)
    return RawImageData(
        train=make_split(images[train_idx], labels[train_idx]),
        test=make_split(images[test_idx], labels[test_idx]),
        num_classes=10,
        mean=(mean,),
        std=(std,),
        augment=False,
        class_names=[str(d) for d in range(10)],
        default_val_size=297,
    )


class CIFAR10Files:
    folder = "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    archive = "cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test_batch"]
    meta_file = "batches.meta"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100Files:
    folder = "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    archive = "cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    train_files = ["train"]
    test_files = ["test"]
    meta_file = "meta"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


def _download_archive(files: type, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(files.url, str(root), filename=files.archive, md5=files.md5)


def read_cifar10(data_root: Path, download: bool = False) -> RawImageData:
    """CIFAR-10 from ``data_root/cifar-10-batches-py`` (official python-pickle layout)."""
    files = CIFAR10Files
    folder = data_root / files.folder
    if download and not folder.is_dir():
        _download_archive(files, data_root)

    def read(names: list[str]) -> Split:
        batches = [_read_pickle(folder / n, "cifar10") for n in names]
        images = np.concatenate(
            [_cifar_images(b, folder / n, "cifar10") for b, n in zip(batches, names)]
        )
        labels = np.concatenate([np.asarray(b["labels"]) for b in batches])
        return make_split(images, labels)

    train, test = read(files.train_files), read(files.test_files)
    meta = _read_pickle(folder / files.meta_file, "cifar10")
    return RawImageData(
        train, test, 10, files.mean, files.std, True, class_names=list(meta.get("label_names", []))
    )


def fine_to_coarse_rank(fine: np.ndarray, coarse: np.ndarray, num_fine: int) -> np.ndarray:
    """Map each fine class to its rank inside its superclass (0..psi-1), by fine-class id.

    With this rank, fine class f of superclass c is auxiliary label ``psi * c + rank[f]``:
    the block layout of the masked softmax (RL-AUX eq. 6).
    """
    parent = np.full(num_fine, -1, dtype=np.int64)
    parent[fine] = coarse
    if (parent < 0).any():
        missing = np.flatnonzero(parent < 0).tolist()
        raise ConfigError(f"fine classes {missing} never occur; cannot build the class hierarchy")
    rank = np.zeros(num_fine, dtype=np.int64)
    for c in np.unique(parent):
        members = np.flatnonzero(parent == c)
        rank[members] = np.arange(len(members))
    return rank


def read_cifar100(data_root: Path, download: bool = False) -> RawImageData:
    """CIFAR-100 from ``data_root/cifar-100-python``: 20 superclasses as the primary task.

    ``fine_labels`` are re-indexed as ``5 * coarse + rank`` (rank of the fine class inside its
    superclass), so the human auxiliary task lives in the same hierarchical label space as the
    generated ones (hierarchy factor psi = 5).
    """
    files = CIFAR100Files
    folder = data_root / files.folder
    if download and not folder.is_dir():
        _download_archive(files, data_root)
    raw = {}
    for part, names in (("train", files.train_files), ("test", files.test_files)):
        batch = _read_pickle(folder / names[0], "cifar100")
        raw[part] = (
            _cifar_images(batch, folder / names[0], "cifar100"),
            np.asarray(batch["coarse_labels"], dtype=np.int64),
            np.asarray(batch["fine_labels"], dtype=np.int64),
        )
    meta = _read_pickle(folder / files.meta_file, "cifar100")
    _, coarse, fine = raw["train"]
    rank = fine_to_coarse_rank(fine, coarse, 100)
    per_block = np.bincount(coarse[np.unique(fine, return_index=True)[1]], minlength=20)
    if not (per_block == 5).all():
        raise ConfigError(f"CIFAR-100 superclasses must hold 5 fine classes each; got {per_block}")
    split = {
        part: make_split(images, coarse_l, 5 * coarse_l + rank[fine_l])
        for part, (images, coarse_l, fine_l) in raw.items()
    }
    return RawImageData(
        split["train"],
        split["test"],
        20,
        files.mean,
        files.std,
        True,
        num_fine_classes=100,
        class_names=list(meta.get("coarse_label_names", [])),
    )


def write_cifar100(data_root: str | os.PathLike, parts: dict[str, dict], meta: dict) -> Path:
    """Write CIFAR-100 files in the official python-pickle layout that :func:`read_cifar100`
    reads, each through a temporary file and a rename; returns the folder.

    ``parts`` maps ``"train"`` and ``"test"`` to ``{"data": (N, 3072) uint8 array in R, G, B
    planes, "fine_labels": [...], "coarse_labels": [...]}``; ``meta`` holds the label names.
    """
    folder = Path(data_root) / CIFAR100Files.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in (*parts.items(), (CIFAR100Files.meta_file, meta)):
        atomic_save(folder / name, lambda tmp, payload=payload: _pickle_to(tmp, payload))
    return folder


def _pickle_to(path: Path, payload: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)


def subset_cifar100(
    src_root: str | os.PathLike, dst_root: str | os.PathLike, train: int, test: int, seed: int = 0
) -> Path:
    """Copy a stratified (by fine class) subset of ``train`` training and ``test`` test
    images of ``src_root``'s CIFAR-100 to ``dst_root`` in the same layout: a copy small
    enough to carry to a machine without the full files."""
    folder = Path(src_root) / CIFAR100Files.folder
    parts = {}
    for part, size in (("train", train), ("test", test)):
        batch = _read_pickle(folder / part, "cifar100")
        fine = np.asarray(batch["fine_labels"])
        n, classes = len(fine), len(np.unique(fine))
        # A stratified split keeps at least one image of every class on both sides.
        if not isinstance(size, int) or not (size == n or classes <= size <= n - classes):
            raise ConfigError(
                f"`{part}` must be an image count in [{classes}, {n - classes}] (one image per "
                f"class on each side of the split) or {n} (all); got {size!r}."
            )
        keep = np.arange(n) if size == n else stratified_split(fine, size, seed)[1]
        parts[part] = {
            "data": _cifar_images(batch, folder / part, "cifar100").reshape(len(fine), -1)[keep],
            "fine_labels": fine[keep].tolist(),
            "coarse_labels": np.asarray(batch["coarse_labels"])[keep].tolist(),
        }
    meta = _read_pickle(folder / CIFAR100Files.meta_file, "cifar100")
    return write_cifar100(dst_root, parts, meta)


def tile_cifar100(
    src_root: str | os.PathLike, dst_root: str | os.PathLike, train: int, test: int
) -> Path:
    """Write ``src_root``'s CIFAR-100 to ``dst_root`` repeated up to ``train`` training and
    ``test`` test images (whole copies, then the first images once more): data of the full
    set's size from a carried subset, for timings. Copies of an image land in the training,
    validation and test splits alike, so accuracies on tiled data mean nothing."""
    folder = Path(src_root) / CIFAR100Files.folder
    parts = {}
    for part, size in (("train", train), ("test", test)):
        batch = _read_pickle(folder / part, "cifar100")
        images = _cifar_images(batch, folder / part, "cifar100").reshape(-1, 3 * 32 * 32)
        if not isinstance(size, int) or size < len(images):
            raise ConfigError(
                f"`{part}` must be an int of at least {len(images)} (the images to tile); "
                f"got {size!r}."
            )
        take = np.arange(size) % len(images)
        parts[part] = {
            "data": images[take],
            "fine_labels": np.asarray(batch["fine_labels"])[take].tolist(),
            "coarse_labels": np.asarray(batch["coarse_labels"])[take].tolist(),
        }
    meta = _read_pickle(folder / CIFAR100Files.meta_file, "cifar100")
    return write_cifar100(dst_root, parts, meta)


class SVHNFiles:
    folder = "svhn"
    urls = {
        "train": (
            "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
            "e26dedcc434d2e4c54c9b2d4a06d8373",
        ),
        "test": (
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "eb5a983be6a315427106f1b164d9cef3",
        ),
    }
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)


def read_svhn(data_root: Path, download: bool = False) -> RawImageData:
    """SVHN (cropped digits) from ``data_root/svhn/{train,test}_32x32.mat``; label 10 means 0.

    The 73,257 training images only: the 531,131 of ``extra_32x32.mat`` are not read (RL-AUX
    speaks of about 600,000 images, all three files, without saying which it trained on).
    """
    from scipy.io import loadmat

    files = SVHNFiles
    folder = data_root / files.folder
    split = {}
    for part, (url, md5) in files.urls.items():
        path = folder / f"{part}_32x32.mat"
        if download and not path.is_file():
            from torchvision.datasets.utils import download_url

            download_url(url, str(folder), filename=path.name, md5=md5)
        if not path.is_file():
            raise _missing("svhn", folder, f" (no file {path.name!r})")
        try:
            mat = loadmat(path)
            images = np.transpose(np.asarray(mat["X"]), (3, 2, 0, 1))
            labels = np.asarray(mat["y"]).reshape(-1).astype(np.int64) % 10
        except (KeyError, ValueError, OSError) as err:
            raise _missing("svhn", folder, f" ({path.name!r} is unreadable: {err})") from None
        split[part] = make_split(np.ascontiguousarray(images, dtype=np.uint8), labels)
    return RawImageData(
        split["train"],
        split["test"],
        10,
        files.mean,
        files.std,
        True,
        class_names=[str(d) for d in range(10)],
        # A crop only: mirrored house numbers are not digits (the RL-AUX reference crops).
        hflip=False,
    )


# The image datasets by name: a new one is a reader above plus one line here.
DATASETS: dict[str, Callable[..., RawImageData]] = {
    "digits": read_digits,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "svhn": read_svhn,
}
