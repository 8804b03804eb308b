"""Tests of the data (``data/``): the course dataset, clear errors for bad input, the data
set-up from a mirror, and the 300-W converter and split.

Coordinate convention of the synthetic images: pixel (row i, column j) is the point (x=j, y=i),
so a dot drawn around (x, y) has its centre of mass at (x, y).
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import (
    FAKE_SPLITS,
    build_fake_zip,
    draw_dots,
    face_layout,
    write_keypoints_csv,
)
from facial_keypoints import images, paths
from facial_keypoints.cli import convert_300w
from facial_keypoints.data import course, fetch, w300
from facial_keypoints.training import transforms as T
from helpers_dots import (
    as_hwc,
    dot_centre,
)
from helpers_keypoints import needs_data

SEEDS = range(6)


# --------------------------------------------------------------------------------------------
# 5. The dataset
# --------------------------------------------------------------------------------------------
def test_dataset_sample(fake_dataset):
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"])
    assert len(ds) == 18 and ds.filenames == fake_dataset["names"]
    s = ds[4]
    assert set(s) == {"image", "keypoints"}
    assert s["image"].shape == (32, 40, 3) and s["image"].dtype == np.uint8
    assert s["keypoints"].shape == (68, 2) and s["keypoints"].dtype == np.float32
    np.testing.assert_allclose(s["keypoints"], fake_dataset["points"][4], atol=1e-4)
    with_t = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"],
                                       transform=T.face_transform(32))
    assert with_t[0]["image"].shape == (1, 32, 32)


def test_dataset_keypoint_subset(fake_dataset):
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"], keypoints=[30])
    s = ds[2]
    assert s["keypoints"].shape == (1, 2)
    np.testing.assert_allclose(s["keypoints"][0], fake_dataset["points"][2][30], atol=1e-4)


def test_dataset_subset_is_deterministic_per_seed(fake_dataset):
    def make(seed):
        return course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"],
                                         subset=5, seed=seed).filenames

    assert len(make(0)) == 5
    assert make(0) == make(0)
    assert set(make(0)) <= set(fake_dataset["names"])
    assert make(1) != make(0) and len(make(1)) == 5
    full = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"], subset=100)
    assert len(full) == 18


def test_dataset_names_filter(fake_dataset):
    keep = fake_dataset["names"][3:7]
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"],
                                   names=keep + ["Nobody_00.jpg"])
    assert ds.filenames == keep
    np.testing.assert_allclose(ds[0]["keypoints"], fake_dataset["points"][3], atol=1e-4)


def test_dataset_helper_reads_a_data_dir(tmp_path):
    names = ["Ann_Lee_00.jpg", "Ann_Lee_01.jpg"]
    (tmp_path / "test").mkdir()
    for i, n in enumerate(names):
        Image.new("RGB", (30, 20), (i * 50, 0, 0)).save(tmp_path / "test" / n)
    write_keypoints_csv(tmp_path / "test_frames_keypoints.csv", names,
                        [face_layout(width=10, center=(15, 10))] * 2)
    ds = course.dataset("test", data_dir=tmp_path)
    assert len(ds) == 2 and ds[1]["image"].shape == (20, 30, 3)


def _save(path, im, fmt):
    im.save(path, format=fmt)
    return path


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "P", "I;16", "CMYK"])
def test_load_image_reads_by_content(tmp_path, mode):
    w, h = 24, 16
    if mode == "I;16":
        arr = np.full((h, w), 65535, np.uint16)
        arr[:, : w // 2] = 0
        im, fmt = Image.fromarray(arr), "PNG"
        assert im.mode == "I;16"
        expect_left, expect_right = (0, 0, 0), (255, 255, 255)
    elif mode == "CMYK":
        im, fmt = Image.new("CMYK", (w, h), (0, 255, 255, 0)), "JPEG"  # red
        expect_left = expect_right = (255, 0, 0)
    elif mode == "P":
        im = Image.new("RGB", (w, h), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
        fmt = "PNG"
        expect_left = expect_right = (0, 0, 255)
    elif mode == "L":
        im, fmt = Image.new("L", (w, h), 128), "PNG"
        expect_left = expect_right = (128, 128, 128)
    else:
        color = (0, 200, 0, 255)[: len(mode)]
        im, fmt = Image.new(mode, (w, h), color), "PNG"
        expect_left = expect_right = (0, 200, 0)
    path = _save(tmp_path / "face.jpg", im, fmt)  # the extension says JPEG, whatever it is
    arr = images.load_image(path)
    assert arr.shape == (h, w, 3) and arr.dtype == np.uint8
    tol = 6 if fmt == "JPEG" else 0
    np.testing.assert_allclose(arr[h // 2, 1], expect_left, atol=tol)
    np.testing.assert_allclose(arr[h // 2, -2], expect_right, atol=tol)


def test_load_image_drops_alpha_and_turns_exif_rotated_upright(tmp_path):
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 0  # fully transparent: the colour stays, alpha is dropped
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    assert images.load_image(tmp_path / "a.png").shape == (10, 20, 3)
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert images.load_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_split_by_person(fake_dataset):
    names = fake_dataset["names"]
    train, val = course.split_by_person(names, val_fraction=0.34, seed=3)
    assert sorted(train + val) == sorted(names)
    assert {course.person_of(n) for n in train}.isdisjoint({course.person_of(n) for n in val})
    assert len({course.person_of(n) for n in val}) == 2
    assert course.split_by_person(names, 0.34, seed=3) == (train, val)
    assert len(course.split_by_person(names, 0.0)[1]) == 3  # at least one person


def test_person_of():
    assert course.person_of("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
    assert course.person_of("data/training/Abdel_Aziz_Al-Hakim_00.jpg") == "Abdel_Aziz_Al-Hakim"
    assert course.person_of("Kim_Jong-Il_10.png") == "Kim_Jong-Il"


@needs_data
def test_split_by_person_on_real_data():
    ds = course.dataset("train")
    train, val = course.split_by_person(ds.filenames, 0.1)
    assert len(train) + len(val) == 3462 and 0.05 < len(val) / 3462 < 0.2
    assert {course.person_of(n) for n in train}.isdisjoint({course.person_of(n) for n in val})


@needs_data
def test_check_dataset_on_real_data():
    assert fetch.check_dataset(paths.DATA_DIR) == []
    s = course.dataset("test")[0]
    h, w = s["image"].shape[:2]
    assert s["keypoints"].shape == (68, 2)
    assert (s["keypoints"] >= -5).all() and (s["keypoints"][:, 0] <= w + 5).all()
    assert (s["keypoints"][:, 1] <= h + 5).all()


# --------------------------------------------------------------------------------------------
# 6. Clear errors for bad input
# --------------------------------------------------------------------------------------------
def test_csv_with_missing_columns(tmp_path):
    csv = tmp_path / "k.csv"
    csv.write_text(",0,1,2\nA_B_00.jpg,1,2,3\n")
    with pytest.raises(course.DataError, match="columns"):
        course.FacialKeypointsDataset(csv, tmp_path)


def test_csv_with_nan_names_the_line(tmp_path):
    csv = tmp_path / "k.csv"
    pts = [face_layout()] * 3
    write_keypoints_csv(csv, ["A_00.jpg", "A_01.jpg", "A_02.jpg"], pts)
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].replace(",", ",,", 1).rsplit(",", 1)[0]  # empty first coordinate
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(course.DataError, match=r"line 3"):
        course.read_keypoints_csv(csv)
    lines[2] = lines[2].replace(",,", ",abc,", 1)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(course.DataError, match=r"non-numeric.*line 3"):
        course.read_keypoints_csv(csv)


def test_missing_csv_tells_how_to_fetch(tmp_path):
    with pytest.raises(course.DataError, match=r"Run `fkp-fetch-data`"):
        course.FacialKeypointsDataset(tmp_path / "nope.csv", tmp_path)


def test_empty_csv(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(course.DataError, match="not a readable CSV"):
        course.read_keypoints_csv(tmp_path / "empty.csv")


def test_missing_image_file(fake_dataset):
    (fake_dataset["images"] / fake_dataset["names"][2]).unlink()
    ds = course.FacialKeypointsDataset(fake_dataset["csv"], fake_dataset["images"])
    with pytest.raises(images.ImageReadError, match="no such file"):
        ds[2]
    assert ds[3]["image"].shape == (32, 40, 3)


@pytest.mark.parametrize("content", [b"this is not a picture\n", b""])
def test_unreadable_image_file(tmp_path, content):
    (tmp_path / "face.jpg").write_bytes(content)
    with pytest.raises(images.ImageReadError, match="not a readable image"):
        images.load_image(tmp_path / "face.jpg")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(images.ImageReadError, match=r"cut\.png.*not a readable image"):
        images.load_image(tmp_path / "cut.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(images.ImageReadError, match="folder"):
        images.load_image(tmp_path)


# --------------------------------------------------------------------------------------------
# 7. Data set-up
# --------------------------------------------------------------------------------------------
def listing(folder):
    folder = Path(folder)
    if not folder.exists():
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def mtimes(folder):
    return {str(p): p.stat().st_mtime_ns for p in Path(folder).rglob("*")}


def test_fetch_from_mirror_extracts_checks_and_marks(fake_mirror, tmp_path):
    target = tmp_path / "data"
    assert not fetch.dataset_ready(target)
    assert fetch.fetch_dataset(target, quiet=True) == target
    assert fetch.dataset_ready(target) and (target / fetch.COMPLETE_MARKER).is_file()
    assert fetch.check_dataset(target) == []
    assert sorted(os.listdir(target)) == sorted(
        [fetch.COMPLETE_MARKER, "test", "test_frames_keypoints.csv", "training",
         "training_frames_keypoints.csv"])  # no temp folder, no __MACOSX
    ds = course.dataset("train", data_dir=target)
    assert len(ds) == 4 and ds[0]["image"].shape == (32, 40, 3)


def test_fetch_second_run_is_a_no_op(fake_mirror, tmp_path):
    target = tmp_path / "data"
    fetch.fetch_dataset(target, quiet=True)
    before = mtimes(target)
    (fake_mirror / fetch.DATA_ZIP).unlink()  # a second extraction could not even start
    fetch.fetch_dataset(target, quiet=True)
    assert mtimes(target) == before


def test_fetch_replaces_stale_pieces_of_an_unfinished_setup(fake_mirror, tmp_path):
    target = tmp_path / "data"
    (target / "training").mkdir(parents=True)
    (target / "training" / "junk.jpg").write_bytes(b"x")
    (target / "test_frames_keypoints.csv").write_text("half a file")
    fetch.fetch_dataset(target, quiet=True)
    assert not (target / "training" / "junk.jpg").exists()
    assert fetch.check_dataset(target) == []


def _corrupt_member(zip_path, member):
    """Flip bytes in the middle of ``member``'s compressed data."""
    with zipfile.ZipFile(zip_path) as z:
        info = z.getinfo(member)
    data = bytearray(zip_path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    for k in range(mid - 16, mid + 16):
        data[k] ^= 0x5A
    zip_path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "corrupt_member", "missing_image"])
@pytest.mark.parametrize("before", ["absent", "empty", "other_file"])
def test_fetch_bad_zip_leaves_data_dir_as_it_was(fake_mirror, tmp_path, damage, before):
    zip_path = fake_mirror / fetch.DATA_ZIP
    if damage == "truncated":
        zip_path.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size * 2 // 3])
    elif damage == "corrupt_member":
        _corrupt_member(zip_path, FAKE_SPLITS["train"][0])
    else:
        build_fake_zip(zip_path, drop_image="Ann_Lee_01.jpg")
    target = tmp_path / "data"
    if before != "absent":
        target.mkdir()
    if before == "other_file":
        (target / "notes.txt").write_text("keep me")
    expected = listing(target)
    with pytest.raises(course.DataError) as err:
        fetch.fetch_dataset(target, quiet=True)
    msg = str(err.value)
    assert fetch.DATA_ZIP in msg
    if damage == "missing_image":
        assert "missing" in msg and "Ann_Lee_01.jpg" in msg
    else:
        assert "not a complete zip" in msg
    after = listing(target)
    assert after == expected or (expected is None and after == [])
    assert not fetch.dataset_ready(target)


def test_mirror_that_is_not_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.MIRROR_ENV, str(tmp_path / "no" / "such" / "mirror"))
    with pytest.raises(course.DataError, match=fetch.MIRROR_ENV):
        fetch.fetch_dataset(tmp_path / "data", quiet=True)


def test_mirror_without_the_zip(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.MIRROR_ENV, str(tmp_path))
    with pytest.raises(course.DataError, match=f"{fetch.MIRROR_ENV}.*{fetch.DATA_ZIP}"):
        fetch.fetch_dataset(tmp_path / "data", quiet=True)
    assert listing(tmp_path / "data") == []


def test_check_dataset_reports_problems(fake_mirror, tmp_path):
    target = tmp_path / "data"
    fetch.fetch_dataset(target, quiet=True)
    (target / "test" / os.listdir(target / "test")[0]).unlink()
    frame = pd.read_csv(target / "training_frames_keypoints.csv")
    frame.iloc[:3].to_csv(target / "training_frames_keypoints.csv", index=False)
    problems = fetch.check_dataset(target)
    assert len(problems) == 2
    assert any("3 rows, expected 4" in p for p in problems)
    assert any("test/" in p and "missing" in p for p in problems)
    (target / "test_frames_keypoints.csv").unlink()
    assert any("no such keypoint file" in p for p in fetch.check_dataset(target))


# --------------------------------------------------------------------------------------------
# 300-W converter (images + 1-based .pts files -> crops + keypoints.csv)
# --------------------------------------------------------------------------------------------
def _write_pts(path, pts, header=True):
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts]   # .pts files are 1-based
    text = ("version: 1\nn_points: 68\n{\n" + "\n".join(lines) + "\n}\n") if header \
        else "\n".join(lines) + "\n"
    path.write_text(text)


def test_read_pts_both_layouts_are_0_based(tmp_path, face_points):
    for header in (True, False):
        _write_pts(tmp_path / "a.pts", face_points, header)
        np.testing.assert_allclose(w300.read_pts(tmp_path / "a.pts"), face_points, atol=1e-3)
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 5\n{\n1 2\n3 4\n}\n")
    with pytest.raises(course.DataError, match="2 points, expected 68"):
        w300.read_pts(tmp_path / "b.pts")


@pytest.mark.parametrize("where", ["inside", "at the border"])
def test_convert_300w_crops_follow_the_dots(tmp_path, where):
    """Faces drawn as dots (one partly outside the picture) come out as 224-px crops whose
    keypoints sit on the dots, read back through the dataset class; a second folder gets its
    own prefix; nothing is left half-written."""
    w, h = 400, 300
    center = (200, 150) if where == "inside" else (60, 150)
    pts = face_layout(center=center, width=90)
    src = tmp_path / "lfpw" / "trainset"
    src.mkdir(parents=True)
    Image.fromarray(draw_dots(pts, shape=(h, w), radius=3.0)).save(src / "image_0001.png")
    _write_pts(src / "image_0001.pts", pts)
    other = tmp_path / "helen"
    other.mkdir()
    Image.fromarray(draw_dots(pts, shape=(h, w), radius=3.0)).save(other / "1_1.jpg", quality=98)
    _write_pts(other / "1_1.pts", pts, header=False)
    dest = tmp_path / "data" / "300w_train"
    assert convert_300w.main(["--data-dir", str(dest.parent), str(src), f"helen={other}"]) == 0
    ds = course.FacialKeypointsDataset(dest / "keypoints.csv", dest / "images")
    assert ds.filenames == ["trainset_image_0001.jpg", "helen_1_1.jpg"]
    for i in range(2):
        sample = ds[i]
        assert sample["image"].shape == (224, 224, 3)
        kp = sample["keypoints"]
        # the landmark box: centred, its long side half the crop (scale 2.0)
        x0, y0 = kp.min(0)
        x1, y1 = kp.max(0)
        assert abs((x0 + x1) / 2 - 111.5) < 1.5 and abs(max(x1 - x0, y1 - y0) - 112) < 1.5
        jaw = kp[[0, 8, 16]]
        img = as_hwc(sample["image"])
        for x, y in jaw:
            assert np.hypot(*(dot_centre(img, x, y, radius=4.0) - (x, y))) < 0.8
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".convert")]


def test_convert_300w_refuses_a_folder_without_pts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(course.DataError, match="no .pts files"):
        w300.convert_300w([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_300w_keeps_photos_and_listed_duplicates_together(tmp_path):
    names = ["helen_1_1.jpg", "helen_1_2.jpg", "helen_2_1.jpg", "lfpw_image_0001.jpg",
             "lfpw_image_0002.jpg", "lfpw_image_0003.jpg"] + [f"lfpw_image_1{i:03d}.jpg"
                                                             for i in range(40)]
    readme = tmp_path / "README.md"
    readme.write_text("groups:\n  - lfpw_image_0001, lfpw_image_0003\n"
                      "  - helen_2_1, lfpw_image_0002\n")
    group = w300.photo_groups_300w(names, readme)
    assert group["helen_1_1.jpg"] == group["helen_1_2.jpg"] != group["helen_2_1.jpg"]
    assert group["lfpw_image_0001.jpg"] == group["lfpw_image_0003.jpg"]
    assert group["helen_2_1.jpg"] == group["lfpw_image_0002.jpg"]
    for seed in range(5):
        train, held = w300.split_300w(names, 0.3, seed, readme)
        assert sorted(train + held) == sorted(names) and train and held
        assert not {group[n] for n in train} & {group[n] for n in held}
    again = w300.split_300w(names, 0.3, 0, readme)
    assert w300.split_300w(names, 0.3, 0, readme) == again


