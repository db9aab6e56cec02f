"""ml.data: CIFAR archives and folders, label modes, subsets, the image-folder cache, splits, the package interface."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ml.data
import ml.data.folders
import ml.data.sources
from ml.data import (
    ArrayDataset,
    detect_cifar,
    load_cifar,
    load_image_folder,
    load_source,
    select_classes,
    stratified_split,
)
from tests.ml.fakedata import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE,
    CIFAR100_FINE,
    CIFAR100_SUPERCLASSES,
    IMAGE_FOLDER_CLASSES,
    md5_of,
)


# ----------------------------------------------------------------------------- CIFAR-10
def test_cifar10_archive_train_and_test(cifar10_archive: Path) -> None:
    md5 = md5_of(cifar10_archive)
    train = load_cifar(cifar10_archive, split="train", expected_md5=md5)
    test = load_cifar(cifar10_archive, split="test", expected_md5=md5)
    assert train.classes == CIFAR10_CLASSES
    assert train.images.shape == (40, 3, 32, 32) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [4] * 10
    assert len(test) == 20
    assert train.superclasses is None


def test_cifar10_pixels_are_channel_major(make_cifar) -> None:
    folder = make_cifar("cifar10", archive=False)
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    data = load_cifar(folder, split="train")
    first = np.asarray(raw[b"data"][0]).reshape(3, 32, 32)
    # batch 1 comes first, in file order
    assert np.array_equal(data.images[0], first)
    assert data.labels[0] == raw[b"labels"][0]


def test_archive_and_folder_give_the_same_data(make_cifar) -> None:
    archive = make_cifar("cifar10", archive=True, seed=3)
    folder = make_cifar("cifar10", archive=False, seed=3)
    a = load_cifar(archive, expected_md5=md5_of(archive))
    b = load_cifar(folder)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_official_md5_is_the_default_and_mismatch_names_the_file(cifar10_archive: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_cifar(cifar10_archive)
    message = str(err.value)
    assert str(cifar10_archive) in message
    assert "c58f30108f718f92721af3b95e74349a" in message  # expected (official)
    assert md5_of(cifar10_archive) in message  # actual


def test_folder_missing_a_batch_is_a_clear_error(make_cifar) -> None:
    folder = make_cifar("cifar10", archive=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar(folder)


def test_detect_which_cifar(
    cifar10_archive: Path, cifar100_archive: Path, cifar10_dir: Path, cifar100_dir: Path
) -> None:
    assert detect_cifar(cifar10_archive)[0].name == "cifar10"
    assert detect_cifar(cifar100_archive)[0].name == "cifar100"
    assert detect_cifar(cifar10_dir)[0].name == "cifar10"
    assert detect_cifar(cifar100_dir)[0].name == "cifar100"
    assert detect_cifar(cifar10_dir.parent) == (detect_cifar(cifar10_dir)[0], cifar10_dir)  # a download folder
    assert detect_cifar(cifar10_dir / "data_batch_1") is None


def test_bad_split_and_label_mode(cifar10_dir: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_cifar(cifar10_dir, split="validation")
    with pytest.raises(ValueError, match="CIFAR-100"):
        load_cifar(cifar10_dir, label_mode="coarse")


# ----------------------------------------------------------------------------- CIFAR-100
def test_cifar100_fine_labels_and_superclass_map(cifar100_archive: Path) -> None:
    data = load_cifar(cifar100_archive, split="train", expected_md5=md5_of(cifar100_archive))
    assert data.classes == CIFAR100_FINE
    assert len(data) == 400 and np.bincount(data.labels).tolist() == [4] * 100
    assert data.superclasses is not None and len(data.superclasses) == 100
    for superclass, fine in CIFAR100_SUPERCLASSES.items():
        for name in fine:
            assert data.superclasses[name] == superclass


def test_cifar100_coarse_is_20_way(cifar100_dir: Path) -> None:
    fine = load_cifar(cifar100_dir, split="test")
    coarse = load_cifar(cifar100_dir, split="test", label_mode="coarse")
    assert coarse.classes == CIFAR100_COARSE
    assert np.bincount(coarse.labels).tolist() == [10] * 20  # 5 fine classes x 2 test images
    # the coarse label of every image is its fine class's superclass
    for f, c in zip(fine.labels, coarse.labels, strict=True):
        assert fine.superclasses[fine.classes[f]] == coarse.classes[c]


def test_superclass_map_comes_from_the_data(make_cifar) -> None:
    """Swap two coarse labels in the file: the map follows the file, not a built-in table."""
    folder = make_cifar("cifar100", archive=False)
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="bytes")
    shark = CIFAR100_FINE.index("shark")
    people = CIFAR100_COARSE.index("people")
    train[b"coarse_labels"] = [
        people if fl == shark else cl for fl, cl in zip(train[b"fine_labels"], train[b"coarse_labels"], strict=True)
    ]
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    assert load_cifar(folder).superclasses["shark"] == "people"


def test_inconsistent_superclasses_are_refused(make_cifar) -> None:
    folder = make_cifar("cifar100", archive=False)
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="bytes")
    first_shark = train[b"fine_labels"].index(CIFAR100_FINE.index("shark"))
    train[b"coarse_labels"][first_shark] = CIFAR100_COARSE.index("people")
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    with pytest.raises(ValueError, match="shark"):
        load_cifar(folder)


def test_fish_subset_remaps_labels(cifar100_dir: Path) -> None:
    full = load_cifar(cifar100_dir)
    fish = load_source(cifar100_dir, superclass="fish")
    assert fish.classes == ["aquarium_fish", "flatfish", "ray", "shark", "trout"]
    assert sorted(set(fish.labels.tolist())) == [0, 1, 2, 3, 4]
    assert len(fish) == 5 * 4
    assert set(fish.superclasses.values()) == {"fish"}
    # the images follow their labels: every "shark" image is an original shark image
    sharks = {img.tobytes() for img in full.images[full.labels == full.classes.index("shark")]}
    assert all(img.tobytes() in sharks for img in fish.images[fish.labels == 3])


def test_class_list_subset_keeps_original_order(cifar10_dir: Path) -> None:
    data = load_source(cifar10_dir, classes="truck,cat")
    assert data.classes == ["cat", "truck"]
    assert np.bincount(data.labels).tolist() == [4, 4]
    with pytest.raises(ValueError, match="unicorn"):
        load_source(cifar10_dir, classes=["cat", "unicorn"])


def test_superclass_subset_needs_cifar100(cifar10_dir: Path, cifar100_dir: Path) -> None:
    with pytest.raises(ValueError, match="no superclasses"):
        load_source(cifar10_dir, superclass="fish")
    with pytest.raises(ValueError, match="unknown superclasses"):
        load_source(cifar100_dir, superclass="dragons")


def test_coarse_subset_by_class_list(cifar100_dir: Path) -> None:
    data = load_source(cifar100_dir, label_mode="coarse", classes=["trees", "fish"])
    assert data.classes == ["fish", "trees"]
    assert len(data) == 2 * 5 * 4


# ----------------------------------------------------------------------------- load_source
def test_load_source_by_name_uses_the_download_folder(tmp_path: Path, make_cifar, monkeypatch) -> None:
    folder = make_cifar("cifar10", archive=False)
    monkeypatch.setattr(ml.data.sources, "DEFAULT_DATA_DIR", folder.parent)
    assert load_source("cifar10").classes == CIFAR10_CLASSES
    monkeypatch.setattr(ml.data.sources, "DEFAULT_DATA_DIR", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="python -m ml download cifar10"):
        load_source("cifar10")


def test_load_source_missing_path_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_source(tmp_path / "nope")


def test_load_source_image_folder_with_splits(tmp_path: Path, ml_cache: Path) -> None:
    from tests.ml.fakedata import write_image_folder

    write_image_folder(tmp_path / "ds" / "train", per_class=3)
    write_image_folder(tmp_path / "ds" / "test", per_class=2)
    assert len(load_source(tmp_path / "ds")) == 12
    assert len(load_source(tmp_path / "ds", split="test")) == 8
    with pytest.raises(ValueError, match="CIFAR-100"):
        load_source(tmp_path / "ds", label_mode="coarse")


def test_single_tree_refuses_test_split(image_folder: Path, ml_cache: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_source(image_folder, split="test")


# ----------------------------------------------------------------------------- image folders and cache
def test_image_folder_loads_classes_and_pixels(image_folder: Path, ml_cache: Path) -> None:
    data = load_image_folder(image_folder)
    assert data.classes == IMAGE_FOLDER_CLASSES
    assert data.images.shape == (80, 3, 32, 32)
    first = sorted((image_folder / "cat").iterdir())[0]
    assert np.array_equal(data.images[0], np.asarray(Image.open(first)).transpose(2, 0, 1))


def test_resizes_other_sizes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "a" / "x.png")
    Image.new("L", (32, 32), 200).save(tmp_path / "a" / "y.png")  # greyscale becomes RGB
    data = load_image_folder(tmp_path, cache_dir=None)
    assert data.images.shape == (2, 3, 32, 32)
    assert data.images[0, :, 5, 5].tolist() == [10, 20, 30]
    assert data.images[1, :, 0, 0].tolist() == [200, 200, 200]


def test_second_load_comes_from_the_cache(image_folder: Path, ml_cache: Path, monkeypatch) -> None:
    first = load_image_folder(image_folder)
    assert len(list(ml_cache.glob("*.npz"))) == 1

    def fail(*_args, **_kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(ml.data.folders, "decode_image", fail)
    second = load_image_folder(image_folder)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    assert second.extra["cache"].startswith(str(ml_cache))


def test_changing_a_file_changes_the_key(image_folder: Path, ml_cache: Path) -> None:
    load_image_folder(image_folder)
    target = sorted((image_folder / "dog").iterdir())[0]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # mtime changes even on coarse clocks
    data = load_image_folder(image_folder)
    assert len(list(ml_cache.glob("*.npz"))) == 2
    index = len(list((image_folder / "cat").iterdir()))  # the dog images follow the cats
    assert data.images[index, :, 0, 0].tolist() == [255, 0, 0]


def test_adding_a_file_changes_the_key(image_folder: Path, ml_cache: Path) -> None:
    assert len(load_image_folder(image_folder)) == 80
    shutil.copy(sorted((image_folder / "dog").iterdir())[0], image_folder / "dog" / "extra.png")
    assert len(load_image_folder(image_folder)) == 81


def _load_when_both_are_about_to_rename(folder: Path, cache: Path, barrier, results) -> None:
    """In a forked child: load a cold cache, but hold the rename into place until the other child
    is about to rename too, which is the interleaving of two DDP ranks that made one of them fail."""
    real_replace = os.replace

    def replace(src, dst):
        try:
            barrier.wait(timeout=20)  # an implementation that renames once just waits here for nothing
        except threading.BrokenBarrierError:
            pass
        return real_replace(src, dst)

    os.replace = replace  # this child's os module only
    try:
        data = load_image_folder(folder, cache_dir=cache, workers=1)
        results.put((os.getpid(), "ok", len(data), int(data.images.sum())))
    except BaseException as exc:
        results.put((os.getpid(), "error", repr(exc), 0))
        raise


def test_two_processes_loading_a_cold_cache_at_once_both_succeed(image_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cold-cache"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [
        ctx.Process(target=_load_when_both_are_about_to_rename, args=(image_folder, cache, barrier, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert [o[1:] for o in outcomes if o[1] != "ok"] == []
    assert [child.exitcode for child in children] == [0, 0]
    expected = load_image_folder(image_folder, cache_dir=None, workers=1)
    assert {o[2:] for o in outcomes} == {(len(expected), int(expected.images.sum()))}
    # one whole cache file, no temporary file left behind, and it is what a later load reads
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".npz") or ".tmp" in p.name] == []
    assert len(list(cache.iterdir())) == 1
    cached = load_image_folder(image_folder, cache_dir=cache, workers=1)
    assert cached.extra["cache"] == str(next(cache.iterdir()))
    assert np.array_equal(cached.images, expected.images) and np.array_equal(cached.labels, expected.labels)


def test_a_failed_cache_write_leaves_no_temporary_file(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ml.data.folders.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        load_image_folder(image_folder, cache_dir=cache, workers=1)
    assert list(cache.iterdir()) == []


def test_parallel_decode_matches_serial(image_folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(ml.data.folders, "PARALLEL_MIN_FILES", 1)
    serial = load_image_folder(image_folder, cache_dir=None, workers=1)
    parallel = load_image_folder(image_folder, cache_dir=None, workers=2)
    assert np.array_equal(serial.images, parallel.images)


def test_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no class folders"):
        load_image_folder(tmp_path, cache_dir=None)
    (tmp_path / "cat").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_image_folder(tmp_path, cache_dir=None)


# ----------------------------------------------------------------------------- splits and the dataset type
def test_stratified_split_is_seeded_and_stratified() -> None:
    labels = np.repeat(np.arange(10), 50)
    train, val = stratified_split(labels, per_class=5, seed=1)
    assert np.bincount(labels[val]).tolist() == [5] * 10
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 500
    assert np.array_equal(val, stratified_split(labels, 5, seed=1)[1])
    assert not np.array_equal(val, stratified_split(labels, 5, seed=2)[1])


def test_stratified_split_default_size_needs_enough_images() -> None:
    with pytest.raises(ValueError, match="cannot hold out"):
        stratified_split(np.repeat(np.arange(3), 10), per_class=10)


def test_array_dataset_validates_shapes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(np.zeros((2, 3, 4, 4), dtype=np.float32), np.zeros(2, dtype=np.int64), ["a"])
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(np.zeros((2, 3, 4, 4), dtype=np.uint8), np.zeros(3, dtype=np.int64), ["a"])


def test_select_classes_on_image_folder(image_folder: Path, ml_cache: Path) -> None:
    data = select_classes(load_image_folder(image_folder), ["ship", "dog"])
    assert data.classes == ["dog", "ship"] and sorted(set(data.labels.tolist())) == [0, 1]


# ----------------------------------------------------------------------------- the package interface
# the names other modules and the commands import (grep "from ml.data import"), and the settings tests patch
USED_ELSEWHERE = {"ArrayDataset", "CIFAR", "load_source", "md5_file", "stratified_split", "DEFAULT_CACHE_DIR"}


def test_the_package_exports_what_the_rest_of_the_repository_imports() -> None:
    namespace: dict = {}
    exec(f"from ml.data import {', '.join(ml.data.__all__)}", namespace)
    assert USED_ELSEWHERE <= set(ml.data.__all__)
    assert all(namespace[name] is getattr(ml.data, name) for name in ml.data.__all__)


def test_default_dirs_are_the_repository_ones_and_defined_once(monkeypatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert ml.data.DEFAULT_CACHE_DIR == Path(os.environ.get("ML_CACHE_DIR", repo / ".cache" / "ml"))
    assert ml.data.DEFAULT_DATA_DIR == Path(os.environ.get("ML_DATA_DIR", repo / "data"))
    # the package reads the settings from the one module that defines and uses each
    monkeypatch.setattr(ml.data.folders, "DEFAULT_CACHE_DIR", Path("/elsewhere/cache"))
    monkeypatch.setattr(ml.data.sources, "DEFAULT_DATA_DIR", Path("/elsewhere/data"))
    monkeypatch.setattr(ml.data.folders, "PARALLEL_MIN_FILES", 7)
    assert ml.data.DEFAULT_CACHE_DIR == Path("/elsewhere/cache")
    assert ml.data.DEFAULT_DATA_DIR == Path("/elsewhere/data")
    assert ml.data.PARALLEL_MIN_FILES == 7
    with pytest.raises(AttributeError, match="no attribute"):
        ml.data.NO_SUCH_SETTING  # noqa: B018


def test_setting_a_default_on_the_package_sets_it_where_it_is_used(
    image_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ml.data, "DEFAULT_CACHE_DIR", tmp_path / "via-package")
    assert ml.data.folders.DEFAULT_CACHE_DIR == tmp_path / "via-package"
    assert "DEFAULT_CACHE_DIR" not in vars(ml.data)  # no second copy to disagree
    load_image_folder(image_folder)
    assert len(list((tmp_path / "via-package").glob("folder-*.npz"))) == 1
    monkeypatch.setattr(ml.data, "DEFAULT_DATA_DIR", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        load_source("cifar10")


def test_the_cache_fixture_puts_the_cache_files_where_it_says(image_folder: Path, ml_cache: Path) -> None:
    assert ml.data.DEFAULT_CACHE_DIR == ml_cache
    data = load_image_folder(image_folder)  # cache_dir=True: the default cache dir
    assert [p.parent for p in ml_cache.glob("*.npz")] == [ml_cache]
    assert data.extra == {} and load_image_folder(image_folder).extra["cache"].startswith(str(ml_cache))


def test_the_decoding_worker_function_pickles_by_name() -> None:
    from ml.data.folders import _decode_chunk

    assert pickle.loads(pickle.dumps(_decode_chunk)) is _decode_chunk
