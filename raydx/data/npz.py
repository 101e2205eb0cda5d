"""MedMNIST-layout ``.npz`` files, read from disk or downloaded with the ``medmnist`` package.

The label names are copied from ``medmnist.INFO`` (v3.0.2) so that a local file gets
readable class names without the package installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from raydx.data.intensity import Intensity, scale_images
from raydx.data.table import ImageTable
from raydx.errors import DataError, RaydxError
from raydx.lookup import lookup

SPLITS = ("train", "val", "test")
MEDMNIST_SIZES = (28, 64, 128, 224)

# medmnist.INFO[flag]["label"] for the single-label 2D sets, index order.
MEDMNIST_LABELS: dict[str, tuple[str, ...]] = {
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ),
    "octmnist": (
        "choroidal neovascularization",
        "diabetic macular edema",
        "drusen",
        "normal",
    ),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": (
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ),
    "tissuemnist": (
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ),
    "organamnist": (
        "bladder",
        "femur-left",
        "femur-right",
        "heart",
        "kidney-left",
        "kidney-right",
        "liver",
        "lung-left",
        "lung-right",
        "pancreas",
        "spleen",
    ),
}
MEDMNIST_LABELS["organcmnist"] = MEDMNIST_LABELS["organamnist"]
MEDMNIST_LABELS["organsmnist"] = MEDMNIST_LABELS["organamnist"]
# medmnist.INFO[flag]["n_samples"] (train, val, test), the same at every image size: a
# copy of a set under another file name is known by them, so that its classes keep
# their names and the disease class is found by name (a renamed pneumoniamnist would
# otherwise make its minority class, "normal", the positive one).
MEDMNIST_SPLIT_SIZES: dict[tuple[int, int, int], str] = {
    (89996, 10004, 7180): "pathmnist",
    (7007, 1003, 2005): "dermamnist",
    (97477, 10832, 1000): "octmnist",
    (4708, 524, 624): "pneumoniamnist",
    (1080, 120, 400): "retinamnist",
    (546, 78, 156): "breastmnist",
    (11959, 1712, 3421): "bloodmnist",
    (165466, 23640, 47280): "tissuemnist",
    (34561, 6491, 17778): "organamnist",
    (12975, 2392, 8216): "organcmnist",
    (13932, 2452, 8827): "organsmnist",
}
MEDMNIST_MULTILABEL = ("chestmnist",)
MEDMNIST_3D = (
    "organmnist3d",
    "nodulemnist3d",
    "adrenalmnist3d",
    "fracturemnist3d",
    "vesselmnist3d",
    "synapsemnist3d",
)

_SIZE_SUFFIX = re.compile(r"_(\d+)$")


def load_npz(
    path: str | Path, *, name: str | None = None, intensity: Intensity | str = "auto"
) -> ImageTable:
    """Read a MedMNIST-layout file: ``{train,val,test}_images`` and ``..._labels``.

    ``train`` is required; ``val`` and ``test`` may be absent (then raydx holds out its
    own test split), but a split that is present needs both its keys. The set name is
    ``name`` or the file stem without a ``_<size>`` suffix; it picks the class names.
    Pixels other than 8-bit are brought to 0-255 as ``intensity`` says.
    """
    scaling = Intensity.parse(intensity)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"data path '{path}' does not exist. Pass an existing MedMNIST-layout .npz file, "
            f"'medmnist:<flag>' to download one, or 'synthetic'."
        )
    if not path.is_file():
        raise DataError(f"data path '{path}' is not a file; a .npz file is expected here.")
    set_name = _base_flag(name if name is not None else path.stem)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # zipfile/pickle/OS errors all mean "not a readable npz"
        raise DataError(
            f"cannot read '{path}' as a .npz file: {type(e).__name__}: {e}".rstrip(".") + "."
        ) from None

    found = ", ".join(sorted(arrays)) or "none"
    present = [s for s in SPLITS if f"{s}_images" in arrays or f"{s}_labels" in arrays]
    for split in ["train", *present]:
        for kind in ("images", "labels"):
            if f"{split}_{kind}" not in arrays:
                raise DataError(
                    f"'{path}' has no key '{split}_{kind}' (the MedMNIST layout needs "
                    f"{{train,val,test}}_images and _labels); keys found: {found}."
                )

    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    official: list[str] = []
    for split in present:
        x = _as_nhwc(arrays[f"{split}_images"], f"{split}_images", path)
        y = _as_labels(arrays[f"{split}_labels"], f"{split}_labels", path, set_name)
        if len(x) != len(y):
            raise DataError(
                f"'{path}' has {len(x)} {split}_images but {len(y)} {split}_labels; "
                f"they must match one to one."
            )
        images.append(x)
        labels.append(y)
        ids.extend(f"{split}/{i}" for i in range(len(y)))
        official.extend([split] * len(y))
    shapes = {x.shape[1:] for x in images}
    if len(shapes) > 1:
        raise DataError(
            f"'{path}' has images of different shapes across splits: {sorted(shapes)}; "
            f"all splits must share one (H, W, C)."
        )

    x_all, mode = _to_bytes(np.concatenate(images), ids, path, scaling)
    y_all = np.concatenate(labels)
    notes: list[str] = []
    known = set_name if set_name in MEDMNIST_LABELS else None
    sizes = (official.count("train"), official.count("val"), official.count("test"))
    alias = MEDMNIST_SPLIT_SIZES.get(sizes) if known is None else None
    if alias is not None and int(y_all.max(initial=0)) < len(MEDMNIST_LABELS[alias]):
        known = alias
        notes.append(
            f"'{path.name}' has the split sizes of MedMNIST's {alias} "
            f"({'/'.join(map(str, sizes))}): its class names are used; name the file "
            f"{alias}.npz (or {alias}_<size>.npz) to say so"
        )
    class_names = _class_names(known or set_name, y_all, path)
    values = np.unique(y_all)
    if known is None and len(values) > 1 and values[-1] >= len(values):
        # Labels coded 1/2 (or 0/2): an empty class "0" would make a 3-way softmax of a
        # binary task. Number the classes present and keep their codes as names.
        class_names = tuple(str(v) for v in values)
        y_all = np.searchsorted(values, y_all).astype(np.int64)
    return ImageTable(
        images=x_all,
        labels=y_all,
        sample_ids=np.array(ids, dtype=object),
        class_names=class_names,
        name=set_name,
        official_split=np.array(official, dtype=object),
        info={
            **({"array_modes": {mode: len(x_all)}} if mode else {}),
            **({"notes": notes} if notes else {}),
        },
    )


def load_medmnist(flag: str, *, root: str | Path | None = None) -> ImageTable:
    """Load a 2D MedMNIST set by flag (``breastmnist``, ``pathmnist_64``, ...).

    A file already in ``root`` (default ``~/.medmnist``, the package's own cache) is read
    without the package; otherwise the optional ``medmnist`` package downloads it.
    """
    raw = str(flag).strip().lower()
    base = _base_flag(raw)
    size_match = _SIZE_SUFFIX.search(raw)
    size = int(size_match.group(1)) if size_match else 28
    if base in MEDMNIST_3D:
        raise DataError(
            f"MedMNIST '{base}' is a 3D set; only the 2D sets are supported: "
            f"{', '.join(sorted(MEDMNIST_LABELS))}."
        )
    if base in MEDMNIST_MULTILABEL:
        raise DataError(
            f"MedMNIST '{base}' is multi-label; multi-label classification is not supported."
        )
    try:
        lookup(base, MEDMNIST_LABELS, "MedMNIST flag")
    except RaydxError as e:
        raise DataError(str(e)) from None
    if size not in MEDMNIST_SIZES:
        raise DataError(
            f"MedMNIST image size must be one of {', '.join(map(str, MEDMNIST_SIZES))}, "
            f"but got size={size} (from '{flag}')."
        )

    folder = Path(root).expanduser() if root is not None else Path.home() / ".medmnist"
    filename = f"{base}.npz" if size == 28 else f"{base}_{size}.npz"
    target = folder / filename
    if not target.is_file():
        _download_medmnist(base, size, folder, raw)
    return load_npz(target, name=base)


def _download_medmnist(base: str, size: int, folder: Path, flag: str) -> None:
    """Download with the optional ``medmnist`` package; any failure is one DataError line."""
    hint = f"Pass a local file instead: --data path/to/{base}.npz."
    try:
        import medmnist
    except ImportError:
        raise DataError(
            f"Cannot download MedMNIST '{flag}': the 'medmnist' package is not installed "
            f"(pip install medmnist) or there is no network. {hint}"
        ) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cls = getattr(medmnist, medmnist.INFO[base]["python_class"])
        cls(split="test", download=True, root=str(folder), size=size)
    except Exception as e:  # network, checksum, disk: the package's messages are multi-line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        why = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise DataError(
            f"Cannot download MedMNIST '{flag}' into '{folder}' ({why}); is there a network? {hint}"
        ) from None


def _base_flag(name: str) -> str:
    """``breastmnist_224`` -> ``breastmnist``: the set name without MedMNIST's size suffix."""
    return _SIZE_SUFFIX.sub("", str(name).strip().lower())


def _as_nhwc(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Grey (N, H, W) or (N, H, W, 1|3) uint8 images -> (N, H, W, C)."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DataError(
            f"'{path}' key '{key}' must hold images of shape (N, H, W) or (N, H, W, 3), "
            f"but got shape {x.shape}."
        )
    if x.shape[1] != x.shape[2]:
        raise DataError(
            f"'{path}' key '{key}' holds {x.shape[1]}x{x.shape[2]} images; "
            f"only square images are supported."
        )
    return x


def _to_bytes(
    x: np.ndarray, ids: list[str], path: Path, intensity: Intensity
) -> tuple[np.ndarray, str]:
    """Every split's pixels -> uint8 by one rule (``intensity.scale_images``), and a
    Pillow-like mode name of what was scaled ("" when nothing was)."""
    names = [f"key '{split}_images' image {j}" for split, _, j in (i.partition("/") for i in ids)]
    try:
        out, scaled = scale_images(x, intensity, names)
    except ValueError as e:
        raise DataError(f"'{path}' {e}.") from None
    if not scaled:
        return out, ""
    integral = np.issubdtype(x.dtype, np.integer)
    return out, "I;16" if integral and x.dtype.itemsize <= 2 else "I" if integral else "F"


def _as_labels(y: np.ndarray, key: str, path: Path, set_name: str) -> np.ndarray:
    """(N, 1) or (N,) integer labels -> (N,) int64; multi-label sets are refused."""
    if y.ndim == 2 and y.shape[1] > 1:
        raise DataError(
            f"'{set_name}' has multi-label labels of shape {y.shape} in '{key}'; "
            f"multi-label classification is not supported."
        )
    if y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"'{path}' key '{key}' must hold labels of shape (N,) or (N, 1), "
            f"but got shape {y.shape}."
        )
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"'{path}' key '{key}' must hold integer class labels, but got dtype={y.dtype}."
        )
    if y.size and y.min() < 0:
        raise DataError(f"'{path}' key '{key}' must hold labels >= 0, but got {int(y.min())}.")
    return y.astype(np.int64)


def _class_names(set_name: str, labels: np.ndarray, path: Path) -> tuple[str, ...]:
    """MedMNIST's names for a known set, else "0", "1", ... up to the largest label
    (``load_npz`` renumbers labels with gaps)."""
    top = int(labels.max()) if labels.size else 0
    known = MEDMNIST_LABELS.get(set_name)
    if known is None:
        return tuple(str(i) for i in range(max(top + 1, 2)))
    if top >= len(known):
        raise DataError(
            f"'{path}' has label {top}, but MedMNIST '{set_name}' has only {len(known)} "
            f"classes (0-{len(known) - 1}); rename the file if it is not {set_name}."
        )
    return known
