"""Tests of training/ship.py's record of where a fine-tuned model's weights came from: the
runs are read from the parents' files when the model is shipped, stored in the shipped
checkpoint and its card, and kept when it is shipped again after those files are gone."""
from __future__ import annotations

import torch

from facial_keypoints.keypoints import checkpoints, nets
from facial_keypoints.training import ship
from helpers_keypoints import TINY_INPUT, make_tiny_checkpoint


def fine_tuned(path, parent):
    """A tiny checkpoint whose run started from ``parent``'s weights."""
    torch.manual_seed(1)
    meta = checkpoints.checkpoint_meta(
        "resnet18", {"width": 8}, TINY_INPUT, 1.3, TINY_INPUT / 2, TINY_INPUT / 4,
        command="python train.py --init parent.pt", train_config={"init": str(parent),
                                                                   "epochs": 3})
    meta["metrics"] = {"val_nme": 0.05, "epoch": 3, "train_minutes": 1.0}
    checkpoints.save_checkpoint(path, nets.ResNet18Keypoints(width=8), meta)
    return path


def test_the_lineage_is_stored_and_kept_when_the_parents_are_gone(tmp_path):
    parent = make_tiny_checkpoint(tmp_path / "parent.pt")
    child = fine_tuned(tmp_path / "child.pt", parent)
    assert ship.lineage({"init": str(parent)})[0]["command"] == "tests: tiny random model"
    dest = tmp_path / "shipped" / "model.pt"
    dest.parent.mkdir()
    ship.ship_model(child, dest, {})
    runs = checkpoints.read_checkpoint(dest)["lineage"]
    assert [r["init"] for r in runs] == [str(parent)] and runs[0]["input_size"] == TINY_INPUT
    card = dest.with_name("MODEL_CARD.md").read_text()
    assert f"Its starting weights, `{parent}`, were trained from scratch" in card
    parent.unlink()
    ship.ship_model(dest, dest, {})                        # shipped again, its parent gone
    assert checkpoints.read_checkpoint(dest)["lineage"] == runs
    assert "trained from scratch" in dest.with_name("MODEL_CARD.md").read_text()
    # a model whose parent was never described says so
    orphan = fine_tuned(tmp_path / "orphan.pt", tmp_path / "gone.pt")
    assert ship.lineage({"init": str(tmp_path / "gone.pt")}) == [
        {"init": str(tmp_path / "gone.pt"), "missing": True}]
    ship.ship_model(orphan, tmp_path / "shipped" / "orphan.pt", {},
                    card_path=tmp_path / "orphan.md")
    assert "that file is not here to describe" in (tmp_path / "orphan.md").read_text()
