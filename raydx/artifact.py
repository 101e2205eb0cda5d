"""The best model as a product: weights, config and preprocessing, loadable without Ray."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from raydx.config import TrialConfig
from raydx.data.pipeline import Preprocessing, normalise_batch
from raydx.errors import RaydxError

FORMAT = "raydx-model/1"


@dataclass
class DiagnosisModel:
    """An ensemble of fold models (or one refit model) with everything needed to predict."""

    members: list[nn.Module]
    config: dict[str, Any]
    preprocessing: Preprocessing = field(init=False)

    def __post_init__(self) -> None:
        self.preprocessing = Preprocessing(**self.config["preprocessing"])

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def positive_class(self) -> int:
        return int(self.config["positive_class"])

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W) or (N, H, W, C) -> the network's normalised input."""
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.dtype != np.uint8:
            raise RaydxError(f"images must be uint8, but got dtype={arr.dtype}.")
        return torch.from_numpy(normalise_batch(arr, self.preprocessing))

    def predict_proba_tensor(self, x: torch.Tensor) -> np.ndarray:
        from raydx.train import predict

        return np.mean([predict(m, x) for m in self.members], axis=0)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Positive-class probability (binary) or class probabilities (N, C)."""
        return self.predict_proba_tensor(self.prepare(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class indices; binary sets use the threshold chosen on out-of-fold predictions."""
        p = self.predict_proba(images)
        if p.ndim == 1:
            neg = 1 - self.positive_class
            return np.where(p >= self.threshold, self.positive_class, neg)
        return p.argmax(1)


def build_member(cfg: dict[str, Any]) -> nn.Module:
    from raydx.train import build_model

    params = cfg.get("params") or {"model": cfg["model"], **cfg.get("model_params", {})}
    trial = TrialConfig.from_params(params)
    return build_model(
        trial,
        in_channels=int(cfg["preprocessing"]["channels"]),
        n_classes=len(cfg["class_names"]),
        image_size=int(cfg["preprocessing"]["image_size"]),
    )


def save_model(path: Path, *, weight_files: list[Path], config: dict[str, Any]) -> Path:
    """Copy the member weights and write ``config.json`` next to them."""
    path.mkdir(parents=True, exist_ok=True)
    names = []
    for i, src in enumerate(weight_files):
        name = f"member_{i}.safetensors"
        shutil.copyfile(src, path / name)
        names.append(name)
    full = {"format": FORMAT, **config, "members": names}
    (path / "config.json").write_text(json.dumps(full, indent=2) + "\n")
    return path


def save_state_dicts(
    path: Path, states: list[dict[str, torch.Tensor]], config: dict[str, Any]
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    files = []
    for i, state in enumerate(states):
        f = path / f".tmp_member_{i}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, f)
        files.append(f)
    try:
        return save_model(path, weight_files=files, config=config)
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def load_model(path: str | Path, *, device: str = "cpu") -> DiagnosisModel:
    """Load a saved raydx model directory (``OUT/model``) for prediction, without Ray."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise RaydxError(f"model path '{path}' has no config.json; pass a run's 'model' folder.")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("format") != FORMAT:
        raise RaydxError(
            f"model format {cfg.get('format')!r} is not supported (expected {FORMAT!r})."
        )
    members = []
    for name in cfg["members"]:
        m = build_member(cfg)
        m.load_state_dict(load_file(path / name, device=device))
        members.append(m.to(device).eval())
    return DiagnosisModel(members=members, config=cfg)
