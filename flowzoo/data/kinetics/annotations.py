"""Kinetics annotation CSVs and where their videos lie on disk.

A CSV (train.csv / validate.csv of Kinetics-700-2020) has one row per clip with the columns
    label, youtube_id, time_start, time_end, split        (extra columns are ignored)
Class index = position of the label in the sorted list of all labels of the CSV(s) given, so passing
train.csv alone or with validate.csv gives the same 700 indices.

The video of a row is the file named  <youtube_id>_<time_start:06d>_<time_end:06d>.<ext>  (ext: mp4,
webm, mkv or avi; the name the cvdfoundation/kinetics-dataset downloader and ActivityNet's crawler
write), looked up in this order, first hit wins:
    1. ROOT/<split>/<label>/NAME      (the standard layout: a folder per split, a folder per class;
                                       the split folder may be "val" for split "validate", and the
                                       class folder may spell spaces as "_")
    2. ROOT/<split>/NAME              (one folder per split, as the downloader's tarballs unpack)
    3. ROOT/<label>/NAME, ROOT/NAME   (one split only, or a flat folder)
    4. anywhere else under ROOT       (names are unique across Kinetics splits, so this is safe)
A row whose file is found nowhere is reported as missing, never an error.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi")
SPLIT_FOLDERS = {"validate": ("validate", "val"), "val": ("val", "validate")}


@dataclass(frozen=True)
class Clip:
    """One annotated clip: its class name, YouTube id, start/end seconds and split."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str

    @property
    def stem(self) -> str:
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def read_annotations(paths: str | Path | list) -> list[Clip]:
    """Every row of the CSV(s), in file order; ValueError (one sentence) for a file that is not a Kinetics CSV."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError("no annotation CSV given; pass the Kinetics train.csv (columns label, youtube_id, time_start, time_end, split).")
    clips = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"annotation CSV {path} does not exist; pass the Kinetics train.csv (e.g. k700-2020/annotations/train.csv).")
        try:
            clips += _read_csv(path)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a readable Kinetics annotation CSV ({type(exc).__name__}); pass the Kinetics "
                             f"train.csv (columns {', '.join(COLUMNS)}).") from None
    return clips


def _read_csv(path: Path) -> list[Clip]:
    clips = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a Kinetics annotation CSV: it lacks the column(s) {', '.join(missing)} (needs {', '.join(COLUMNS)}).")
        for line, row in enumerate(reader, start=2):
            try:
                clips.append(Clip(row["label"].strip(), row["youtube_id"].strip(), int(float(row["time_start"])),
                                  int(float(row["time_end"])), row["split"].strip()))
            except (TypeError, ValueError, AttributeError):  # AttributeError: a row cut short (None fields)
                raise ValueError(f"{path} line {line}: the row is incomplete or time_start and time_end are not numbers, got {row['time_start']!r} and {row['time_end']!r}.") from None
    return clips


def class_names(clips: list[Clip]) -> list[str]:
    return sorted({c.label for c in clips})


def find_annotations(root: str | Path, split: str = "train") -> list[Path]:
    """The CSV of `split` next to the videos (ROOT/annotations/SPLIT.csv or ROOT/SPLIT.csv), or []."""
    root = Path(root)
    for name in SPLIT_FOLDERS.get(split, (split,)):
        for candidate in (root / "annotations" / f"{name}.csv", root / f"{name}.csv"):
            if candidate.is_file():
                return [candidate]
    return []


def _file_index(root: Path) -> dict[str, list[Path]]:
    """Video file stem -> every path with that stem under root (one walk; Kinetics has ~650k files)."""
    index: dict[str, list[Path]] = {}
    for path in root.rglob("*"):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            index.setdefault(path.stem, []).append(path)
    return index


def _rank(path: Path, root: Path, clip: Clip) -> int:
    """Lower is better: the lookup order of the module docstring."""
    parts = path.relative_to(root).parts[:-1]
    splits = SPLIT_FOLDERS.get(clip.split, (clip.split,))
    labels = (clip.label, clip.label.replace(" ", "_"))
    if len(parts) == 2 and parts[0] in splits and parts[1] in labels:
        return 0
    if len(parts) == 1 and parts[0] in splits:
        return 1
    if (len(parts) == 1 and parts[0] in labels) or not parts:
        return 2
    return 3  # elsewhere under root (e.g. another split's folder): used only if nothing better exists


def locate_videos(root: str | Path, clips: list[Clip]) -> list[Path | None]:
    """The file of each clip by the rule above, None where there is none."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist; pass the Kinetics root (with train/ inside) as data.path or --data.")
    index = _file_index(root)
    located = []
    for clip in clips:
        candidates = index.get(clip.stem, [])
        located.append(min(candidates, key=lambda p: (_rank(p, root, clip), str(p))) if candidates else None)
    return located
