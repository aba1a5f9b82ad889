"""Bad input, probed as a user would: each case gets a clear error (exit 2, nothing started) or an entry in
the manifest (quarantined or skipped, with its reason); nothing is lost silently.

    .venv/bin/python -m pytest -q tests/pipelines/test_bad_input.py            # the config and folder checks
    .venv/bin/python -m pytest -q -m slow tests/pipelines/test_bad_input.py    # + real ingests (Ray, MLflow)

docs/bad_input.md has the table of every case.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.entry.cli import main
from pipelines.services import names


def _photo_folder(root, rng):
    """3 classes × 6 good images of assorted sizes and modes, plus 3 bad files."""
    for c, cls in enumerate(("cat", "dog", "fox")):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(6):
            size = (20 + 7 * i, 30 + 3 * c)
            arr = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert("L" if i % 3 == 0 else "RGB")
            img.save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "garbage.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    good = (root / "fox" / "0.jpg").read_bytes()
    (root / "fox" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "fox" / "notes.txt").write_text("not an image, not a class")


@pytest.mark.slow
def test_corrupt_zero_byte_and_truncated_images_are_quarantined(ray_local, mlflow_store, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo_folder(photos, np.random.default_rng(0))
    rc = main(["run", "quickstart", "data=image_folder", f"data.path={photos}", "data.image_size=16",
               "stages=[ingest]", "tracking.system_metrics=false"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "3 quarantined" in err

    client = mlflow_store.client()
    exp = client.get_experiment_by_name("visionray/quickstart")
    runs = client.search_runs([exp.experiment_id])
    ingest = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "ingest")
    assert ingest.info.status == "FINISHED"
    assert ingest.data.metrics[names.QUARANTINED] == 3
    manifest = json.loads(open(client.download_artifacts(ingest.info.run_id, names.MANIFEST_ARTIFACT)).read())
    reasons = {q["path"].rsplit("/", 1)[-1]: q["reason"] for q in manifest["quarantine"]}
    assert set(reasons) == {"empty.png", "garbage.png", "truncated.jpg"}
    assert all(reasons.values())
    # nothing else was lost: every good image is in exactly one split, at the configured size
    assert sum(s["rows"] for s in manifest["splits"].values()) == 18
    assert manifest["shape"] == [16, 16, 3]
    assert manifest["classes"] == ["cat", "dog", "fox"]
    for split in manifest["splits"].values():
        assert set(split["class_counts"]) <= {"cat", "dog", "fox"}


def test_an_empty_class_stops_before_anything_starts(mlflow_store, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo_folder(photos, np.random.default_rng(1))
    (photos / "empty_class").mkdir()
    line = _refused(capsys, mlflow_store, ["data=image_folder", f"data.path={photos}", "stages=[ingest]"])
    assert "'empty_class'" in line and "no usable images" in line
    assert not (mlflow_store.root / "data" / "image_folder").exists()


# --------------------------------------------------------------------------- checked before anything starts


def _refused(capsys, store, overrides: list[str], pipeline: str = "quickstart") -> str:
    """Exit 2 with one sentence on stderr, and nothing started: no MLflow store, no Ray; the sentence."""
    import ray

    was_up = ray.is_initialized()
    rc = main(["run", pipeline, *overrides, "tracking.system_metrics=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("visionray: "), err
    assert not (store.root / "mlruns").exists()
    assert was_up or not ray.is_initialized()
    return err[0]


@pytest.mark.parametrize("override, key, says", [
    ("train.momentum=inf", "train.momentum", "must be a finite number"),
    ("train.momentum=nan", "train.momentum", "must be a finite number"),
    ("train.momentum=-0.5", "train.momentum", "must be in [0, 1)"),
    ("train.gamma=nan", "train.gamma", "must be a finite number"),
    ("train.gamma=-1", "train.gamma", "must be in (0, 1]"),
    ("train.step_epochs=-3", "train.step_epochs", "must be >= 1"),
    ("train.lr=inf", "train.lr", "must be a finite number"),
    ("train.epochs=inf", "train.epochs", "must be a whole number"),
    ("cluster.max_failures=-1", "cluster.max_failures", "must be >= 0"),
    ("seed=-1", "seed", "must be in [0, 2**32)"),
    ("data.split_seed=-7", "data.split_seed", "must be >= 0"),
    ("tune.seed=-1", "tune.seed", "must be in [0, 2**32)"),
    ("data.image_size=100000", "data.image_size", "must be in [8, 1024]"),
    ("data.path=" + "x" * 5000, "data.path", "longer than a path can be"),
])
def test_a_bad_number_or_an_impossible_value_is_refused_before_anything_starts(mlflow_store, capsys, override,
                                                                               key, says):
    line = _refused(capsys, mlflow_store, ["data=digits", override])
    assert line.startswith(f"visionray: {key}") and says in line, line


def test_a_data_path_that_is_a_file_is_refused_before_anything_starts(mlflow_store, tmp_path, capsys):
    (tmp_path / "photos.zip").write_bytes(b"PK")
    line = _refused(capsys, mlflow_store, ["data=image_folder", f"data.path={tmp_path / 'photos.zip'}"])
    assert "photos.zip is a file" in line and "one sub-folder per class" in line


def test_a_folder_without_class_folders_is_refused_before_anything_starts(mlflow_store, tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "flat" / "a.png")
    line = _refused(capsys, mlflow_store, ["data=image_folder", f"data.path={tmp_path / 'flat'}"])
    assert "has no class sub-folders" in line


def test_a_class_folder_name_that_is_not_utf8_is_refused_naming_it(mlflow_store, tmp_path, capsys):
    import os

    photos = tmp_path / "photos"
    _photo_folder(photos, np.random.default_rng(2))
    os.rename(photos / "cat", os.fsencode(photos) + b"/caf\xe9")
    line = _refused(capsys, mlflow_store, ["data=image_folder", f"data.path={photos}"])
    assert "caf\\xe9" in line and "not valid UTF-8" in line


def test_a_key_given_twice_is_warned_and_the_last_value_wins(capsys):
    assert main(["show", "quickstart", "train.lr=0.1", "train.lr=0.2"]) == 0
    out, err = capsys.readouterr()
    assert "warning: train.lr is given twice (0.1 then 0.2); the last value is used" in err
    assert "lr: 0.2" in out


def test_the_folder_scan_lists_what_it_skips_and_keeps_what_it_reads(tmp_path):
    """Each way an entry is skipped, with its reason; a file name that is not UTF-8 is read, not a crash."""
    import os

    from components.data.sources.image_folder import scan_image_folder

    photos, outside = tmp_path / "photos", tmp_path / "outside"
    _photo_folder(photos, np.random.default_rng(3))
    outside.mkdir()
    Image.new("RGB", (9, 9)).save(outside / "secret.png")
    (outside / "cls").mkdir()
    Image.new("RGB", (9, 9)).save(outside / "cls" / "x.png")
    good = (photos / "cat" / "1.png").read_bytes()
    (photos / "cat" / "leak.png").symlink_to(outside / "secret.png")  # a file outside the root
    (photos / "linked").symlink_to(outside / "cls")  # a class folder outside the root
    (photos / "cat" / "loop").symlink_to(photos / "cat")  # a loop
    (photos / "cat" / "inside.png").symlink_to(photos / "dog" / "1.png")  # inside: read
    Image.new("RGB", (9, 9)).save(photos / "dog" / "anim.gif")
    Image.new("RGB", (9, 9)).save(photos / "dog" / "photo.webp")
    Image.new("RGB", (9, 9)).save(photos / "dog" / "scan.bmp")
    (photos / "dog" / ".hidden.png").write_bytes(good)
    os.mkfifo(photos / "dog" / "pipe.png")  # reading it would block for ever
    (photos / "README.txt").write_text("beside the classes")
    with open(os.fsencode(photos / "fox") + b"/r\xe9sum\xe9.png", "wb") as f:  # not UTF-8: read
        f.write(good)
    classes, skipped = scan_image_folder(photos)
    assert [name for name, _ in classes] == ["cat", "dog", "fox"]
    reasons = {q.path.rsplit("/", 1)[-1]: q.reason for q in skipped}
    assert "outside the dataset folder" in reasons["leak.png"] and "outside" in reasons["linked"]
    assert "symlink loop" in reasons["loop"]
    assert reasons["anim.gif"].startswith("a GIF image") and reasons["photo.webp"].startswith("a WEBP image")
    assert reasons["scan.bmp"].startswith("a BMP image") and reasons[".hidden.png"] == "hidden file"
    assert reasons["pipe.png"] == "a FIFO, not an image file"
    assert reasons["README.txt"] == "a file beside the class folders, not inside one"
    assert reasons["notes.txt"] == "not a .png/.jpg/.jpeg file"
    files = {f.name for _, fs in classes for f in fs}
    assert "inside.png" in files and os.fsdecode(b"r\xe9sum\xe9.png") in files
    assert not {"leak.png", "secret.png", "x.png"} & files


@pytest.mark.slow
def test_a_real_ingest_records_every_skipped_entry_in_the_manifest(ray_local, mlflow_store, tmp_path, capsys):
    import os

    photos, outside = tmp_path / "photos", tmp_path / "outside"
    _photo_folder(photos, np.random.default_rng(4))
    outside.mkdir()
    Image.new("RGB", (9, 9)).save(outside / "secret.png")
    (photos / "cat" / "leak.png").symlink_to(outside / "secret.png")
    Image.new("RGB", (9, 9)).save(photos / "dog" / "anim.gif")
    with open(os.fsencode(photos / "fox") + b"/r\xe9sum\xe9.png", "wb") as f:
        f.write((photos / "fox" / "1.png").read_bytes())
    rc = main(["run", "quickstart", "data=image_folder", f"data.path={photos}", "data.image_size=16",
               "stages=[ingest]", "tracking.system_metrics=false"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "3 quarantined; 3 skipped, listed in the manifest" in err
    client = mlflow_store.client()
    exp = client.get_experiment_by_name("visionray/quickstart")
    ingest = next(r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get(names.STAGE_TAG) == "ingest")
    assert ingest.data.metrics[names.SKIPPED] == 3
    manifest = json.loads(open(client.download_artifacts(ingest.info.run_id, names.MANIFEST_ARTIFACT)).read())
    skipped = {q["path"].rsplit("/", 1)[-1]: q["reason"] for q in manifest["skipped"]}
    assert set(skipped) == {"leak.png", "anim.gif", "notes.txt"}
    assert sum(s["rows"] for s in manifest["splits"].values()) == 19  # 18 good + the non-UTF-8 name


def test_a_yaml_file_that_sets_a_key_twice_is_warned_and_conf_has_none(tmp_path, capsys):
    from pipelines.config import available, load_config
    from pipelines.config.load import _read_yaml

    for pipeline in available("pipeline"):  # the project's own files: no duplicate anywhere
        load_config(pipeline)
    assert capsys.readouterr().err == ""
    path = tmp_path / "x.yaml"
    path.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    assert _read_yaml(path) == {"train": {"lr": 0.2, "epochs": 2}}
    assert f"warning: {path} sets lr twice in one mapping (line 4); the last value is used" in capsys.readouterr().err
