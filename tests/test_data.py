"""Dataset readers on files written in the official layouts, splits and augmentation."""

import pickle

import numpy as np
import pytest
import torch
from conftest import write_fake_cifar100

from mtl_envs.data import DatasetNotFoundError, load_dataset, random_crop_flip
from mtl_envs.data.images import subset_cifar100, tile_cifar100
from mtl_envs.errors import ConfigError
from mtl_envs.utils import default_data_root


def test_digits_fixed_stratified_split():
    data = load_dataset("digits", device="cpu")
    assert (len(data.train), len(data.val), len(data.test)) == (1200, 297, 300)
    assert data.image_shape == (1, 8, 8) and data.train.images.dtype == torch.uint8
    counts = torch.bincount(data.train.labels, minlength=10)
    assert counts.min() >= 115 and counts.max() <= 125  # stratified: about 120 per digit
    again = load_dataset("digits", device="cpu")
    assert torch.equal(data.test.images, again.test.images)


def test_cifar100_coarse_primary_and_hierarchical_fine_labels(tmp_path):
    coarse_of_fine = write_fake_cifar100(tmp_path)
    data = load_dataset("cifar100", tmp_path, device="cpu")
    assert data.num_classes == 20 and data.num_fine_classes == 100
    assert data.image_shape == (3, 32, 32)
    assert len(data.train) + len(data.val) == 200 and len(data.test) == 100
    # Without a validation split the training set keeps the file order.
    whole = load_dataset("cifar100", tmp_path, device="cpu", val_fraction=0.0)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        fine = np.asarray(pickle.load(f)["fine_labels"])
    # Fine class f is auxiliary class 5 * coarse(f) + (rank of f among its superclass's ids).
    rank = {
        f: sorted(np.flatnonzero(coarse_of_fine == coarse_of_fine[f])).index(f) for f in range(100)
    }
    expected = [5 * coarse_of_fine[f] + rank[f] for f in fine]
    assert whole.train.fine_labels.tolist() == expected
    assert torch.equal(whole.train.fine_labels // 5, whole.train.labels)


def test_cifar100_subset_is_stratified_and_reads_back(tmp_path):
    write_fake_cifar100(tmp_path / "full", per_fine=4)
    folder = subset_cifar100(tmp_path / "full", tmp_path / "small", train=200, test=100)
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    with open(folder / "train", "rb") as f:
        train = pickle.load(f)
    assert np.bincount(train["fine_labels"], minlength=100).tolist() == [2] * 100
    with open(tmp_path / "full" / "cifar-100-python" / "train", "rb") as f:
        full = pickle.load(f)
    # Every kept image comes with its own labels: look each one up in the full file.
    where = {row.tobytes(): i for i, row in enumerate(full["data"])}
    for row, fine, coarse in zip(train["data"], train["fine_labels"], train["coarse_labels"]):
        i = where[row.tobytes()]
        assert (full["fine_labels"][i], full["coarse_labels"][i]) == (fine, coarse)
    data = load_dataset("cifar100", tmp_path / "small", device="cpu", val_fraction=0.0)
    assert (len(data.train), len(data.test)) == (200, 100)
    for bad in (401, 350, 50, 0.5):  # too many; under one per class on a side; not a count
        with pytest.raises(ConfigError, match=r"`train` must be an image count in \[100, 300\]"):
            subset_cifar100(tmp_path / "full", tmp_path / "bad", train=bad, test=100)


def test_tiled_cifar100_repeats_whole_copies_then_the_first_images(tmp_path):
    write_fake_cifar100(tmp_path / "small")
    folder = tile_cifar100(tmp_path / "small", tmp_path / "big", train=450, test=100)
    with open(tmp_path / "small" / "cifar-100-python" / "train", "rb") as f:
        small = pickle.load(f)
    with open(folder / "train", "rb") as f:
        big = pickle.load(f)
    assert big["data"].shape == (450, 3072)
    # 200 images: two whole copies, then the first 50 once more.
    np.testing.assert_array_equal(big["data"][400:], small["data"][:50])
    np.testing.assert_array_equal(big["data"][200:400], small["data"])
    assert big["fine_labels"][:250] == small["fine_labels"] + small["fine_labels"][:50]
    assert big["coarse_labels"][400:] == small["coarse_labels"][:50]
    assert len(load_dataset("cifar100", tmp_path / "big", device="cpu").test) == 100
    with pytest.raises(ConfigError, match="`train` must be an int of at least 200"):
        tile_cifar100(tmp_path / "small", tmp_path / "bad", train=100, test=100)


def test_cifar10_and_svhn_read(fake_data_root):
    c10 = load_dataset("cifar10", fake_data_root, device="cpu")
    assert c10.num_classes == 10 and len(c10.train) + len(c10.val) == 200 and len(c10.test) == 40
    svhn = load_dataset("svhn", fake_data_root, device="cpu")
    assert svhn.image_shape == (3, 32, 32) and len(svhn.test) == 50
    assert int(svhn.test.labels.min()) == 0 and int(svhn.test.labels.max()) == 9  # 10 -> 0
    # The fake test file's labels are 1..10 in turn (the .mat files' 10 is the digit 0), and
    # the test split keeps the file's order: 1..9 then 0 (a "label - 1" reading gives 0..9).
    assert svhn.test.labels[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_missing_dataset_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar100", tmp_path / "nowhere", device="cpu")
    message = str(err.value)
    assert "nowhere" in message and "download=True" in message and "MTL_ENVS_DATA" in message


def test_corrupt_file_is_an_error_not_a_partial_load(tmp_path):
    write_fake_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:1000])  # truncated download
    with pytest.raises(DatasetNotFoundError, match="train"):
        load_dataset("cifar100", tmp_path, device="cpu")
    with open(path, "wb") as f:
        pickle.dump(
            {"data": np.zeros((3, 10), np.uint8), "fine_labels": [0] * 3, "coarse_labels": [0] * 3},
            f,
        )
    with pytest.raises(DatasetNotFoundError, match="unexpected 'data'"):
        load_dataset("cifar100", tmp_path, device="cpu")


def test_unknown_dataset_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'cifar100'"):
        load_dataset("cifar-100", device="cpu")


def test_split_arguments_validated():
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", device="cpu", val_fraction=1.5)
    with pytest.raises(ValueError, match="train_subset"):
        load_dataset("digits", device="cpu", train_subset=10**6)
    small = load_dataset("digits", device="cpu", train_subset=500)
    assert len(small.train) == 500


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_ENVS_DATA", str(tmp_path))
    assert default_data_root() == tmp_path


def test_random_crop_flip_is_a_shifted_possibly_flipped_window():
    g = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = random_crop_flip(images, g, padding=2)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[b], w) for w in windows)
    # Same generator state -> same augmentation; another state, another one.
    again = random_crop_flip(images, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(out, again)
    # Over a batch of 64, some images are mirrored (a flipped window that no plain window
    # equals) and some are moved: the identity is one of the 50 windows, never all of them.
    many = torch.rand(64, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    out = random_crop_flip(many, torch.Generator().manual_seed(2), padding=2)
    padded = torch.nn.functional.pad(many, (2, 2, 2, 2))
    mirrored = moved = 0
    for b in range(64):
        plain = [padded[b, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        mirrored += not any(torch.equal(out[b], w) for w in plain)
        moved += not torch.equal(out[b], many[b])
    assert 10 < mirrored < 54 and moved > 32
    other = random_crop_flip(many, torch.Generator().manual_seed(3), padding=2)
    assert not torch.equal(out, other)


def test_svhn_is_cropped_but_never_mirrored(fake_data_root):
    g = torch.Generator().manual_seed(0)
    images = torch.arange(64 * 3 * 6 * 6, dtype=torch.float32).reshape(64, 3, 6, 6)
    out = random_crop_flip(images, g, padding=2, flip=False)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(64):
        windows = [padded[b, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    svhn = load_dataset("svhn", data_root=fake_data_root)
    cifar = load_dataset("cifar100", data_root=fake_data_root)
    assert svhn.augment and not svhn.hflip and cifar.augment and cifar.hflip


def test_multitask_datasets(fake_data_root):
    from mtl_envs.data.multitask import load_multitask_dataset

    digits10 = load_multitask_dataset("digits10", device="cpu")
    assert digits10.num_tasks == 10 and digits10.shared_inputs and bool(digits10.train.mask.all())
    assert torch.equal(digits10.train.targets.sum(1), torch.ones(len(digits10.train)))
    cifar = load_multitask_dataset("cifar100_mtl", fake_data_root, device="cpu")
    assert cifar.num_tasks == 20 and cifar.num_classes == 5
    assert torch.equal(cifar.train.mask.sum(1), torch.ones(len(cifar.train), dtype=torch.long))
    assert float(cifar.train.targets.max()) <= 4
    exam = load_multitask_dataset("exam", device="cpu")
    assert exam.num_tasks == 65 and exam.task_type == "regression"
    assert len(exam.train) + len(exam.val) + len(exam.test) == 4059
    assert exam.task_metadata.shape[0] == 65 and exam.input_shape == (8,)
    assert bool((exam.test.mask.sum(0) >= 1).all())  # every school has test students
