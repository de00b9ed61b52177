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
    assert torch.equal(data.val.images, again.val.images)
    # Pixel k of 16 becomes round(255 k / 16): 1 -> 15.94 -> 16, 8 -> 127.5 -> 128 (half to
    # even), 9 -> 143.4 -> 143, ...; a floor would give 15, 127, 143.
    levels = [0, 16, 32, 48, 64, 80, 96, 112, 128, 143, 159, 175, 191, 207, 223, 239, 255]
    assert torch.cat([data.train.images, data.test.images]).unique().tolist() == levels
    # The three splits are the 1,797 images, each exactly once, with its own label (the
    # digits' images are all distinct, so an image names its row).
    from sklearn.datasets import load_digits

    bunch = load_digits()
    full = np.round(bunch.images * 255 / 16).astype(np.uint8)
    rows = {img.tobytes(): int(label) for img, label in zip(full, bunch.target)}
    seen = [
        (img.numpy().tobytes(), int(label))
        for split in (data.train, data.val, data.test)
        for img, label in zip(split.images[:, 0], split.labels)
    ]
    assert len(seen) == 1797 and len({img for img, _ in seen}) == 1797
    assert all(rows[img] == label for img, label in seen)
    # Validation and test are stratified too: every digit within one image of its share.
    total = torch.bincount(data.train.labels, minlength=10) + torch.bincount(data.val.labels)
    val_share = torch.bincount(data.val.labels, minlength=10) - total * 297 / 1497
    everywhere = torch.as_tensor(np.bincount(bunch.target))
    test_share = torch.bincount(data.test.labels, minlength=10) - everywhere * 300 / 1797
    assert val_share.abs().max() < 1 and test_share.abs().max() < 1
    # Normalisation statistics from the 1,497 training + validation images, not the test's
    # (over all 1,797 the mean would be 0.30531 instead of 0.30545).
    fit = torch.cat([data.train.images, data.val.images]).double() / 255
    assert data.mean[0] == pytest.approx(float(fit.mean()), rel=1e-9)
    assert data.std[0] == pytest.approx(float(fit.std(unbiased=False)), rel=1e-9)
    # split_seed draws another validation split from the same 1,497 images; the test split
    # stays fixed.
    other = load_dataset("digits", device="cpu", split_seed=1)
    assert torch.equal(other.test.images, data.test.images)
    assert not torch.equal(other.val.images, data.val.images)
    pool = torch.cat([data.train.images, data.val.images]).flatten(1).sort(0).values
    other_pool = torch.cat([other.train.images, other.val.images]).flatten(1)
    assert torch.equal(other_pool.sort(0).values, pool) and len(other.val) == 297


def test_cifar100_coarse_primary_and_hierarchical_fine_labels(tmp_path):
    coarse_of_fine = write_fake_cifar100(tmp_path)
    data = load_dataset("cifar100", tmp_path, device="cpu")
    assert data.num_classes == 20 and data.num_fine_classes == 100
    assert data.image_shape == (3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, 100)  # val 0.1 of 200
    # CIFAR-100's own statistics (not CIFAR-10's 0.4914, 0.4822, 0.4465).
    assert data.mean == (0.5071, 0.4865, 0.4409) and data.std == (0.2673, 0.2564, 0.2762)
    # Without a validation split the training set keeps the file order.
    whole = load_dataset("cifar100", tmp_path, device="cpu", val_fraction=0.0)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f)
    fine = np.asarray(raw["fine_labels"])
    # A row of 3072 bytes is the R, G and B planes, each 32 rows of 32 pixels.
    assert torch.equal(whole.train.images, torch.from_numpy(raw["data"]).view(-1, 3, 32, 32))
    assert whole.train.images[0, 1, 0, 1] == raw["data"][0, 1024 + 1]  # G plane, row 0, col 1
    assert whole.train.images[0, 0, 1, 0] == raw["data"][0, 32]  # R plane, row 1, col 0
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
    for bad in (401, 350, 50, 99, 301, 0.5):  # too many; under one a class on a side; no count
        with pytest.raises(ConfigError, match=r"`train` must be an image count in \[100, 300\]"):
            subset_cifar100(tmp_path / "full", tmp_path / "bad", train=bad, test=100)
    # The bounds are counts one may ask for: 100 keeps one image a class, 300 three; 400 all.
    for size, per_class in ((100, 1), (300, 3), (400, 4)):
        folder = subset_cifar100(tmp_path / "full", tmp_path / f"n{size}", train=size, test=100)
        with open(folder / "train", "rb") as f:
            fine = pickle.load(f)["fine_labels"]
        assert np.bincount(fine, minlength=100).tolist() == [per_class] * 100
    # Another seed keeps other images (with 2 of 4 a class, the same 200 at two seeds would
    # be a 1 in 6^100 chance).
    folder = subset_cifar100(tmp_path / "full", tmp_path / "seed1", train=200, test=100, seed=1)
    with open(folder / "train", "rb") as f:
        assert not np.array_equal(pickle.load(f)["data"], train["data"])


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
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2470, 0.2435, 0.2616)
    svhn = load_dataset("svhn", fake_data_root, device="cpu")
    assert svhn.image_shape == (3, 32, 32) and len(svhn.test) == 50
    assert int(svhn.test.labels.min()) == 0 and int(svhn.test.labels.max()) == 9  # 10 -> 0
    # The fake test file's labels are 1..10 in turn (the .mat files' 10 is the digit 0), and
    # the test split keeps the file's order: 1..9 then 0 (a "label - 1" reading gives 0..9).
    assert svhn.test.labels[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    # The .mat files hold X as (height, width, channel, image): image k is X[..., k] with its
    # channels moved first, not transposed (a (3, 2, 1, 0) reading swaps rows and columns).
    from scipy.io import loadmat

    x = loadmat(fake_data_root / "svhn" / "test_32x32.mat")["X"]
    assert torch.equal(svhn.test.images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))
    assert svhn.test.images[4, 2, 0, 7] == x[0, 7, 2, 4]  # image 4, blue, row 0, column 7


def test_cifar10_reads_the_five_batches_in_order(tmp_path):
    """Each batch's labels stay with its own images: the five files get labels shifted by one
    class per batch, so that a label read from another batch is wrong."""
    from conftest import write_fake_cifar10

    write_fake_cifar10(tmp_path, per_batch=20)
    folder = tmp_path / "cifar-10-batches-py"
    images, labels = [], []
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f)
        batch["labels"] = [(label + i) % 10 for label in batch["labels"]]
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        images.append(batch["data"])
        labels += batch["labels"]
    data = load_dataset("cifar10", tmp_path, device="cpu", val_fraction=0.0)
    expected = torch.from_numpy(np.concatenate(images)).view(-1, 3, 32, 32)
    assert torch.equal(data.train.images, expected[:100]) and torch.equal(
        data.test.images, expected[100:]
    )
    assert data.train.labels.tolist() == labels[:100] and data.test.labels.tolist() == labels[100:]
    assert data.train.labels[20:22].tolist() == [1, 2]  # batch 2 starts at class 0 + 1


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
    # The training part holds 1,497 digits of 10 classes: a stratified split needs one image
    # of each class on both sides, so counts in [10, 1487] (a fraction's count rounded up:
    # 0.001 -> 2 images); a bool is no count.
    for bad in (1.5, 1.0, -0.1, 1497, 1488, 5, 0.001, True, "0.1"):
        with pytest.raises(ConfigError, match=r"`val_fraction` must .*\[10, 1487\]"):
            load_dataset("digits", device="cpu", val_fraction=bad)
    # After the default 297 for validation, 1,200 remain: [10, 1190] or all 1,200.
    for bad in (10**6, 1201, 0, 5, 1195, True, 2.0):
        with pytest.raises(ConfigError, match=r"`train_subset` must .*\[10, 1190\]"):
            load_dataset("digits", device="cpu", train_subset=bad)
    assert len(load_dataset("digits", device="cpu", val_fraction=10).val) == 10
    assert len(load_dataset("digits", device="cpu", train_subset=10).train) == 10
    full = load_dataset("digits", device="cpu")
    assert torch.equal(
        load_dataset("digits", device="cpu", train_subset=1200).train.images, full.train.images
    )
    assert len(load_dataset("digits", device="cpu", val_fraction=100).val) == 100  # a count
    small = load_dataset("digits", device="cpu", train_subset=500)
    assert len(small.train) == 500 and torch.equal(small.val.images, full.val.images)
    # A stratified subset of the training split: each digit keeps its share of 500 / 1200
    # within one image (a plain random draw of 500 is off by up to 8 at seed 0).
    share = (
        torch.bincount(small.train.labels, minlength=10)
        - torch.bincount(full.train.labels) * 500 / 1200
    )
    assert share.abs().max() < 1
    kept = {img.numpy().tobytes() for img in full.train.images}
    assert all(img.numpy().tobytes() in kept for img in small.train.images)
    # Under another split_seed the subset comes from that seed's training split.
    other = load_dataset("digits", device="cpu", train_subset=500, split_seed=1)
    pool = {
        img.numpy().tobytes()
        for img in load_dataset("digits", device="cpu", split_seed=1).train.images
    }
    assert all(img.numpy().tobytes() in pool for img in other.train.images)


def test_label_noise_flips_a_fixed_share_of_train_and_val_labels_only():
    clean = load_dataset("digits", device="cpu")
    noisy = load_dataset("digits", device="cpu", label_noise=0.2)
    for name, flipped in (("train", 240), ("val", 59), ("test", 0)):  # round(0.2 n): 1200, 297
        a, b = getattr(clean, name), getattr(noisy, name)
        assert torch.equal(a.images, b.images)
        # Every drawn label moves to another class (a shift of 1..9, never 0).
        assert int((a.labels != b.labels).sum()) == flipped, name
        assert int(b.labels.min()) >= 0 and int(b.labels.max()) <= 9
    # The flips are drawn from split_seed: another seed flips other positions.
    seed1 = load_dataset("digits", device="cpu", split_seed=1)
    noisy1 = load_dataset("digits", device="cpu", split_seed=1, label_noise=0.2)
    where0 = torch.nonzero(clean.train.labels != noisy.train.labels).flatten()
    where1 = torch.nonzero(seed1.train.labels != noisy1.train.labels).flatten()
    assert len(where1) == 240 and not torch.equal(where0, where1)
    again = load_dataset("digits", device="cpu", label_noise=0.2)
    assert torch.equal(again.train.labels, noisy.train.labels)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="`label_noise` must be a fraction in"):
            load_dataset("digits", device="cpu", label_noise=bad)


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


def test_per_task_dataset_scales_with_train_and_val_statistics():
    """Two tasks of 5 samples; split seed 0 puts samples 2 and 9 in test and 4 and 6 in
    validation. Targets are 1 and 3 alternately on the 8 train + val samples (mean 2, std 1)
    and 100 and -50 on the test ones, which scaling fitted on all samples (or on train only)
    would show."""
    from mtl_envs.data.tabular import per_task_dataset, per_task_parts

    task = np.repeat([0, 1], 5)
    parts = per_task_parts(task, 2, np.random.default_rng(0))  # 0 train, 1 val, 2 test
    assert parts.tolist() == [0, 0, 2, 0, 1, 0, 1, 0, 0, 2]
    y = np.array([1, 3, 100, 1, 3, 1, 3, 1, 3, -50], dtype=float)
    x = np.array([0, 2, 7, 0, 2, 0, 2, 0, 2, 7], dtype=float)[:, None]  # fit: mean 1, std 1
    meta = np.array([[1.0, 5.0], [3.0, 5.0]])  # column means 2, 5; stds 1, 0 (kept as 1)
    data = per_task_dataset("toy", x, y, task, ["a", "b"], meta, ["m", "c"], split_seed=0)
    assert data.target_mean == (2.0,) and data.target_std == (1.0,)
    # (y - 2) / 1 per sample, in the task's column; 0 in the other.
    assert data.train.targets.tolist() == [[-1, 0], [1, 0], [-1, 0], [0, -1], [0, -1], [0, 1]]
    assert data.val.targets.tolist() == [[1, 0], [0, 1]]
    assert data.test.targets.tolist() == [[98, 0], [0, -52]]
    assert data.test.inputs[:, 0].tolist() == [6, 6] and data.val.inputs[:, 0].tolist() == [1, 1]
    assert data.task_metadata.tolist() == [[-1, 0], [1, 0]]
    assert data.train.task_ids().tolist() == [0, 0, 0, 1, 1, 1]


def test_multitask_datasets(fake_data_root):
    from mtl_envs.data.multitask import load_multitask_dataset

    digits10 = load_multitask_dataset("digits10", device="cpu")
    assert digits10.num_tasks == 10 and digits10.shared_inputs and bool(digits10.train.mask.all())
    assert torch.equal(digits10.train.targets.sum(1), torch.ones(len(digits10.train)))
    # Task t asks "is it digit t?": the one positive task of an image is its digit.
    digits = load_dataset("digits", device="cpu")
    for name in ("train", "val", "test"):
        split, base = getattr(digits10, name), getattr(digits, name)
        assert torch.equal(split.inputs, base.images)
        assert torch.equal(split.targets.argmax(1), base.labels), name
    cifar = load_multitask_dataset("cifar100_mtl", fake_data_root, device="cpu")
    assert cifar.num_tasks == 20 and cifar.num_classes == 5
    assert torch.equal(cifar.train.mask.sum(1), torch.ones(len(cifar.train), dtype=torch.long))
    assert float(cifar.train.targets.max()) <= 4
    # Task t is superclass t; its target, the fine class's rank in the superclass, is the
    # auxiliary fine label 5 * coarse + rank modulo 5.
    base = load_dataset("cifar100", fake_data_root, device="cpu")
    for name in ("train", "val", "test"):
        split, labels = getattr(cifar, name), getattr(base, name)
        assert torch.equal(split.task_ids(), labels.labels), name
        assert torch.equal(split.targets[split.mask], (labels.fine_labels % 5).float()), name
    exam = load_multitask_dataset("exam", device="cpu")
    assert exam.num_tasks == 65 and exam.task_type == "regression"
    assert len(exam.train) + len(exam.val) + len(exam.test) == 4059
    assert exam.task_metadata.shape[0] == 65 and exam.input_shape == (8,)
    assert bool((exam.test.mask.sum(0) >= 1).all())  # every school has test students
