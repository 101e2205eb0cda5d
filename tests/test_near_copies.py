"""Near copies (raydx.data.near_copies): found, placed on the splits, said."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raydx.data import near_copies
from raydx.data.folds import Splits
from raydx.data.near_copies import near_copy_notes, near_copy_pairs, near_pairs, on_splits
from raydx.data.table import ImageTable
from raydx.prepare import Prepared, write_data_records

SIZE = 28


def _scans(n: int, seed: int) -> np.ndarray:
    """Smooth random greys, as unlike each other as different scans (blurred noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, SIZE // 7, SIZE // 7)).astype(np.float32)
    big = np.kron(noise, np.ones((7, 7), np.float32))  # blocks, then a blur
    kernel = np.ones(7, np.float32) / 7
    for axis in (1, 2):
        big = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, big)
    big = (big - big.min()) / (big.max() - big.min()) * 200 + 20
    return big.astype(np.uint8)[..., None]


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img[..., 0]).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))[..., None]


def _edits(img: np.ndarray) -> list[np.ndarray]:
    """What a picture saved twice goes through: re-encoding, brightness and contrast,
    resizing (a shift by a pixel or a caliper's mark may take it below the threshold)."""
    lighter = np.clip(img.astype(np.float32) * 0.9 + 20, 0, 255).astype(np.uint8)
    grey = Image.fromarray(img[..., 0])
    resized = np.asarray(grey.resize((22, 22), Image.BILINEAR).resize((SIZE, SIZE)))[..., None]
    return [_jpeg(img, 75), lighter, resized]


@pytest.mark.parametrize("seed", range(5))
def test_edited_copies_are_found_and_other_scans_are_not(seed: int) -> None:
    scans = _scans(40, seed)
    copies = np.stack(_edits(scans[0]))
    images = np.concatenate([scans, copies, np.full((1, SIZE, SIZE, 1), 90, np.uint8)])
    pairs, corr = near_pairs(images)
    found = {tuple(p) for p in pairs.tolist()}
    edited = set(range(40, 43))
    assert {(0, j) for j in edited} <= found  # each edit is the picture's near copy
    assert all(i in edited | {0} and j in edited for i, j in found)  # nothing else
    assert (corr >= near_copies.CORRELATION).all()
    flat = len(images) - 1
    assert flat not in pairs  # a flat image is alike to nothing


def _table(images: np.ndarray, labels: list[int], ids: list[str]) -> ImageTable:
    return ImageTable(
        images=images,
        labels=np.array(labels),
        sample_ids=np.array(ids, dtype=object),
        class_names=("benign", "malignant"),
        name="t",
    )


def test_pairs_say_which_split_they_straddle_and_leave_exact_copies_out() -> None:
    scans = _scans(8, 0)
    a, b, c = scans[0], scans[1], scans[2]
    images = np.stack([a, _jpeg(a, 80), b, _edits(b)[1], c, _edits(c)[2], c, *scans[3:8]])
    ids = [f"i{k}" for k in range(len(images))]
    table = _table(images, [0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0], ids)
    split = np.array(["test", "cv", "cv", "cv", "cv", "cv", "cv"] + ["cv"] * 5, dtype=object)
    fold = np.array([-1, 0, 0, 1, 2, 2, 0, 1, 2, 0, 1, 2])
    pairs = near_copy_pairs(table, Splits(split, fold, 3))
    by = {frozenset((r.sample_id, r.other)): r for r in pairs.itertuples()}
    assert set(by) == {
        frozenset(p) for p in [("i0", "i1"), ("i2", "i3"), ("i4", "i5"), ("i5", "i6")]
    }  # i4 = i6 exactly: duplicates.csv's
    assert by[frozenset(("i0", "i1"))].straddles == "test split"
    assert by[frozenset(("i2", "i3"))].straddles == "folds"
    assert by[frozenset(("i4", "i5"))].straddles == ""
    assert by[frozenset(("i5", "i6"))].straddles == "folds"
    assert by[frozenset(("i2", "i3"))].other_label == "benign"  # b's copy, labelled otherwise
    notes = near_copy_notes(pairs)
    assert notes == [
        "WARNING: 4 pairs of near copies (most likely one picture saved twice with small "
        "changes: their 16 x 16 thumbnails correlate >= 0.985; near_copies.csv): 1 test "
        "image with a near copy in the cross-validation pool (the test score is optimistic "
        "for those whose labels agree), 2 pairs in two folds (so is the CV AUC), 1 pair with "
        "conflicting labels (check them); where they are one patient's, name the patients "
        "(a manifest's patient column) or pass --join-near-copies, and the folds keep them "
        "together"
    ]
    given = pairs.copy()
    given.attrs["given_test"] = True  # a source's own test split: no folds mend it
    assert near_copy_notes(given)[0].endswith(
        "; the test split the data came with cannot be mended so"
    )
    same_fold = pairs[pairs["straddles"] == ""]
    assert near_copy_notes(same_fold) == [
        "1 pair of near copies (most likely one picture saved twice with small changes: "
        "their 16 x 16 thumbnails correlate >= 0.985; near_copies.csv), each pair within "
        "one fold or the test split"
    ]
    assert near_copy_notes(pairs[:0]) == []
    # placed again on other splits (a resume that keeps the run's own), found once
    moved = on_splits(
        pairs, table, Splits(np.array(["cv"] * 12, dtype=object), np.zeros(12, np.int64), 3)
    )
    assert (
        set(moved["straddles"]) == {""}
        and moved["sample_id"].tolist() == pairs["sample_id"].tolist()
    )


def test_a_set_too_large_to_compare_is_said_and_not_compared(monkeypatch) -> None:
    monkeypatch.setattr(near_copies, "MAX_IMAGES", 5)
    scans = _scans(6, 1)
    table = _table(scans, [0, 1] * 3, [f"i{k}" for k in range(6)])
    splits = Splits(np.array(["cv"] * 6, dtype=object), np.array([0, 1, 2] * 2), 3)
    assert near_copy_pairs(table, splits).empty
    assert near_copy_notes(near_copy_pairs(table, splits)) == [
        "near copies not looked for: 6 images, above 5 (at 200,000 images of 28 px the search "
        "took 52.5 s and the process 3.6 GB, images included, on 2 cores, and both grow "
        "faster than the set)"
    ]


@pytest.mark.parametrize("seed", range(5))
def test_the_index_above_dense_finds_exactly_the_pairs_that_comparing_every_pair_finds(
    seed: int, monkeypatch
) -> None:
    """Sets above ``DENSE`` images are searched in an index of principal components:
    no pair may be missed and none added, in the same order. Planted copies (edited)
    among smooth scans, and flat images (alike to nothing, all alike in the index)."""
    scans = _scans(300, seed)
    rng = np.random.default_rng(seed)
    edited = [e for i in rng.choice(300, 20, replace=False) for e in _edits(scans[i])]
    flat = np.full((5, SIZE, SIZE, 1), 90, np.uint8)
    images = np.concatenate([scans, np.stack(edited), flat])
    images = images[rng.permutation(len(images))]
    dense = near_pairs(images)
    monkeypatch.setattr(near_copies, "DENSE", 10)
    indexed = near_pairs(images)
    assert len(dense[0]) >= 40
    np.testing.assert_array_equal(indexed[0], dense[0])
    np.testing.assert_allclose(indexed[1], dense[1], atol=1e-5)


def test_thumbnails_of_some_rows_are_those_of_the_rows_taken_out() -> None:
    """``rows`` spares a copy of the whole stack (a review): the same rows, chunk after
    chunk, as indexing first."""
    images = _scans(600, 5)
    rows = np.random.default_rng(0).permutation(600)[:400]  # more than one chunk
    assert len(rows) > near_copies.CHUNK
    np.testing.assert_array_equal(
        near_copies.thumbnails(images, rows), near_copies.thumbnails(images[rows])
    )
    assert near_copies.thumbnails(images, rows[:0]).shape == (0, near_copies.SIDE**2)


def test_the_index_takes_a_set_of_flat_images(monkeypatch) -> None:
    """Flat images are alike to nothing: none, or one, left to index is no pair (a
    review: an empty index crashed scipy)."""
    monkeypatch.setattr(near_copies, "DENSE", 10)
    flat = np.full((30, SIZE, SIZE, 1), 90, np.uint8)
    for images in (flat, np.concatenate([flat, _scans(1, 0)])):
        pairs, corr = near_pairs(images)
        assert pairs.shape == (0, 2) and corr.shape == (0,)


def test_the_index_finds_breastmnists_near_copies_as_comparing_every_pair_does(
    breastmnist: Path, monkeypatch
) -> None:
    d = np.load(breastmnist)
    images = np.concatenate([d[f"{s}_images"] for s in ("train", "val", "test")])[..., None]
    dense = near_pairs(images)
    monkeypatch.setattr(near_copies, "DENSE", 10)
    indexed = near_pairs(images)
    assert len(dense[0]) == 213  # 212 near copies and the exact one (test 76 = train 115)
    np.testing.assert_array_equal(indexed[0], dense[0])


def test_a_large_set_that_looks_alike_in_the_index_is_not_listed(monkeypatch) -> None:
    """The index foretells the candidate pairs from a sample before listing them, so a
    look-alike set never fills memory with pairs."""
    scans = _scans(6, 4)
    alike = np.stack(
        [
            np.clip(img.astype(int) + k % 7, 0, 255).astype(np.uint8)
            for k, img in enumerate(np.repeat(scans[:2], 120, axis=0))
        ]
    )
    monkeypatch.setattr(near_copies, "DENSE", 10)
    table = _table(alike, [0, 1] * 120, [f"i{k}" for k in range(240)])
    splits = Splits(np.array(["cv"] * 240, dtype=object), np.arange(240) % 3, 3)
    pairs = near_copy_pairs(table, splits)
    note = near_copy_notes(pairs)[0]
    assert pairs.empty and note.startswith("near copies not listed: about ")
    assert "far more than there are images" in note


def test_a_set_whose_images_all_look_alike_is_not_listed() -> None:
    """More pairs than images: a modality whose pictures look alike at 16 x 16 (a fundus
    camera's dark frame), not copies."""
    scans = _scans(6, 3)
    images = np.stack([img for img in scans for _ in range(3)])  # 6 sets of 3 copies...
    images = np.stack([_edits(img)[1] if k % 3 else img for k, img in enumerate(images)])
    table = _table(images, [0, 1] * 9, [f"i{k}" for k in range(18)])
    splits = Splits(np.array(["cv"] * 18, dtype=object), np.arange(18) % 3, 3)
    assert len(near_copy_pairs(table, splits)) == 12  # 6 x (a-b, a-c): b = c exactly
    alike = np.stack([img for img in scans[:2] for _ in range(6)])
    alike = np.stack(
        [np.clip(img.astype(int) + k, 0, 255).astype(np.uint8) for k, img in enumerate(alike)]
    )
    table = _table(alike, [0, 1] * 6, [f"i{k}" for k in range(12)])
    splits = Splits(np.array(["cv"] * 12, dtype=object), np.arange(12) % 3, 3)
    pairs = near_copy_pairs(table, splits)
    assert pairs.empty and near_copy_notes(pairs)[0].startswith(
        "near copies not listed: 30 pairs of the 12 images have thumbnails that correlate >= 0.985"
    )


def test_the_run_folder_and_the_model_card_keep_them(tmp_path: Path) -> None:
    from raydx.model_card import copy_warnings, near_copy_lines

    scans = _scans(6, 2)
    images = np.concatenate([scans, _jpeg(scans[0], 70)[None], _edits(scans[1])[1][None]])
    table = _table(images, [0, 1, 0, 1, 0, 1, 0, 1], [f"i{k}" for k in range(8)])
    split = np.array(["test"] + ["cv"] * 7, dtype=object)
    splits = Splits(split, np.array([-1, 0, 1, 2, 0, 1, 2, 2]), 3)
    prep = Prepared(
        table,
        1,
        splits,
        pd.DataFrame(),
        None,
        near_copy_pairs(table, splits),  # type: ignore[arg-type]
    )
    write_data_records(prep, tmp_path)
    assert near_copy_lines(tmp_path) == [
        "- 2 pairs of near copies (most likely one picture saved twice with small changes: "
        "their 16 x 16 thumbnails correlate >= 0.985; `near_copies.csv`).",
        "- 1 image of the test split has a near copy in the cross-validation pool: the test "
        "score is optimistic for those whose labels agree.",
        "- 1 pair of near copies lies in two folds: the CV AUC is optimistic for them.",
    ]
    assert near_copy_lines(tmp_path, 300_000) == [
        "- Near copies were not looked for (300,000 images, above 200,000)."
    ]
    assert copy_warnings(tmp_path) == [line[2:] for line in near_copy_lines(tmp_path)]
    pd.DataFrame(  # the report also says what the card says of exact copies, first
        {
            "set": [0, 0],
            "sample_id": ["t9", "c9"],
            "label": [0, 1],
            "side": ["test", "cv"],
            "labels_conflict": [True, True],
            "across_test": [True, True],
        }
    ).to_csv(tmp_path / "duplicates.csv", index=False)
    said = copy_warnings(tmp_path)
    assert said[0].startswith("1 image of the test split has exact copies") and len(said) == 5
    assert any(n.startswith("WARNING: 2 pairs of near copies") for n in prep.notes)
    empty = Prepared(table, 1, splits, pd.DataFrame(), None)  # type: ignore[arg-type]
    write_data_records(empty, tmp_path / "none")
    assert not (tmp_path / "none" / near_copies.FILE).exists()


def test_the_test_score_without_the_test_images_that_have_a_copy(tmp_path: Path) -> None:
    """Near copies (near_copies.csv) and exact ones across the test split (duplicates.csv:
    BreastMNIST's test image 76 is train image 115) are left out alike."""
    from raydx.data.near_copies import copy_free, without_copies_text

    ids = np.array(["t0", "t1", "t2", "t3", "t4"], dtype=object)
    assert copy_free(tmp_path, ids) is None  # no copies at all
    pd.DataFrame(
        {
            "sample_id": ["t1", "c1", "c2"],
            "other": ["c9", "t2", "c3"],
            "side": ["test", "cv", "cv"],
            "other_side": ["cv", "test", "cv"],
            "straddles": ["test split", "test split", "folds"],
        }
    ).to_csv(tmp_path / near_copies.FILE, index=False)
    assert copy_free(tmp_path, ids).tolist() == [True, False, False, True, True]
    pd.DataFrame(
        {
            "set": [0, 0, 1, 1],
            "sample_id": ["t4", "c7", "c5", "c6"],
            "side": ["test", "cv", "cv", "cv"],
            "labels_conflict": [True, True, False, False],
            "across_test": [True, True, False, False],
        }
    ).to_csv(tmp_path / "duplicates.csv", index=False)
    assert copy_free(tmp_path, ids).tolist() == [True, False, False, True, False]
    assert copy_free(tmp_path, ids[1:3]) is None  # nothing would be left
    kept = {"left_out": 58, "n": 98, "auc": 0.8712, "auc_ci95": [0.8, 0.93], "accuracy": 0.85}
    assert without_copies_text({"without_copies": kept}) == (
        "; without the 58 test images with a copy in the pool, test AUC 0.871 "
        "[95% CI 0.800-0.930], accuracy 0.850 (n=98)"
    )
    undefined = {**kept, "auc": float("nan")}
    assert "test AUC undefined (n=98)" in without_copies_text({"without_copies": undefined})
    assert without_copies_text({"auc": 0.9}) == ""


@pytest.mark.parametrize("seed", range(10))
def test_joined_near_copies_share_a_fold_and_a_side(seed: int) -> None:
    """--join-near-copies: each set of near copies is one group, as a patient's images,
    in one fold (and on one side of the test split raydx draws); left alone, the same
    folds split some of them."""
    from raydx.data.near_copies import find_near_copies, joined_key
    from raydx.prepare import split_table

    scans = _scans(60, seed)
    copies = [_edits(scans[k])[k % 3] for k in range(0, 60, 2)]  # 30 pairs
    images = np.concatenate([scans, np.stack(copies)])
    labels = [k % 2 for k in range(60)] + [k % 2 for k in range(0, 60, 2)]
    table = _table(images, labels, [f"i{k}" for k in range(90)])
    found = find_near_copies(table)
    assert len(found.pairs) == 30
    apart = near_copy_pairs(table, split_table(table, folds=5, seed=seed), found)
    assert (apart["straddles"] != "").any()
    splits = split_table(table, folds=5, seed=seed, near=joined_key(found, len(table)))
    pairs = near_copy_pairs(table, splits, found, joined=True)
    assert (pairs["straddles"] == "").all()
    assert near_copy_notes(pairs) == [
        "30 pairs of near copies (most likely one picture saved twice with small changes: "
        "their 16 x 16 thumbnails correlate >= 0.985; near_copies.csv), kept in one fold or "
        "the test split each (--join-near-copies)"
    ]
    counts = np.bincount(splits.fold[splits.fold >= 0])
    assert counts.max() - counts.min() <= 4  # still even folds


def test_joined_near_copies_across_a_given_test_split_stay_apart() -> None:
    """As exact copies: a test split that came with the data is not moved; the copies on
    its training side share a fold."""
    from raydx.data.near_copies import find_near_copies, joined_key
    from raydx.prepare import split_table

    scans = _scans(30, 7)
    twins = np.stack([_jpeg(scans[0], 70), _edits(scans[0])[1]])  # of test image i0
    table = dataclasses.replace(
        _table(
            np.concatenate([scans, twins]),
            [k % 2 for k in range(30)] + [0, 0],
            [f"i{k}" for k in range(32)],
        ),
        official_split=np.array(
            ["test"] + ["train"] * 24 + ["test"] * 5 + ["train"] * 2, dtype=object
        ),
    )
    found = find_near_copies(table)
    apart = []
    for seed in range(6):
        plain = near_copy_pairs(table, split_table(table, folds=3, seed=seed), found)
        apart.append(set(plain["straddles"]))
        splits = split_table(table, folds=3, seed=seed, near=joined_key(found, len(table)))
        pairs = near_copy_pairs(table, splits, found, joined=True)
        assert sorted(pairs["straddles"]) == ["", "test split", "test split"]
        assert near_copy_notes(pairs)[0].endswith(
            "; the folds keep them together (--join-near-copies), but not across that split"
        )
    assert any("folds" in a for a in apart)  # left alone, some seed splits the twins


def test_a_join_that_leaves_too_few_groups_says_so() -> None:
    from raydx.data.near_copies import find_near_copies, joined_key
    from raydx.errors import RaydxError
    from raydx.prepare import split_table

    scans = _scans(4, 5)
    images = np.concatenate([scans, np.stack([_edits(s)[0] for s in scans])])
    table = _table(images, [0, 1, 0, 1] * 2, [f"i{k}" for k in range(8)])
    split_table(table, folds=2, seed=0, test_fraction=0.25)  # by image: 4 of each class
    with pytest.raises(RaydxError, match=r"joined into groups by --join-near-copies: drop it"):
        split_table(
            table, folds=2, seed=0, test_fraction=0.25, near=joined_key(find_near_copies(table), 8)
        )


def test_the_cli_and_a_runs_options_carry_the_join(tmp_path: Path) -> None:
    """tune and cv take the flag; a run's options hand it to the benchmarks' pool
    (pool_options) and, as a default, to a re-check (raydx cv --config RUN)."""
    import json

    from raydx.cli import _parse
    from raydx.prepare import pool_options
    from raydx.run import CV_KEPT_OPTIONS

    assert _parse(["tune", "--join-near-copies"]).join_near_copies is True
    assert _parse(["cv", "--config", "b.yaml", "--join-near-copies"]).join_near_copies is True
    assert _parse(["tune"]).join_near_copies is None  # the run's own, or the default: off
    assert _parse(["cv", "--config", "RUN", "--no-join-near-copies"]).join_near_copies is False
    assert "join_near_copies" in CV_KEPT_OPTIONS
    (tmp_path / "run.json").write_text(json.dumps({"options": {"join_near_copies": True}}))
    assert pool_options(tmp_path)["join_near_copies"] is True
    (tmp_path / "run.json").write_text(json.dumps({"options": {}}))  # an older run
    assert pool_options(tmp_path)["join_near_copies"] is False
