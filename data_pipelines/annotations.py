"""Reading annotation files into validated entries (docs/model.md, "Data").

Two layouts:
- HAWK anomaly JSON: a list of `{"video": relpath, "description": str, "QA": [{"q", "a"}]}`
  (optional `"source"`; otherwise the first directory of `video`, e.g. "UCF-Crime").
- Caption corpora: WebVid-style CSV with columns `page_dir, videoid, name`
  (video `{page_dir}/{videoid}.mp4`), a folder of such CSVs (as released), or JSON lines
  `{"video": relpath, "caption": str}`.

A bad entry (missing or wrong-typed field, non-UTF-8 text) becomes a `Problem` naming the file,
the entry and the reason; the good entries around it are kept. A file that cannot be read or
parsed at all raises AnnotationError (nothing in it can be trusted).
Paths may be local or any etils.epath path (gs://...).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import posixpath
from typing import Any

import numpy as np


class AnnotationError(ValueError):
  """An annotation file that cannot be used at all (unreadable, not JSON/CSV, wrong layout)."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One sample to extract: a video and its text."""
  where: str          # "file.json[12]" / "file.csv:7": where it was annotated
  video: str          # path relative to the videos folder, as annotated
  video_path: str     # full path of the video file
  source: str         # dataset name ("UCF-Crime", "captions", ...)
  description: str = ""
  caption: str = ""
  qa: tuple[tuple[str, str], ...] = ()

  def qa_dicts(self) -> list[dict[str, str]]:
    return [{"q": q, "a": a} for q, a in self.qa]


@dataclasses.dataclass(frozen=True)
class Problem:
  """A skipped entry and why."""
  where: str
  video: str
  reason: str

  def to_json(self, split: str = "") -> dict[str, str]:
    return {"split": split, "where": self.where, "video": self.video, "reason": self.reason}


def _read_text(path: str) -> str:
  """File text; bytes that are not UTF-8 survive as surrogates, so each entry can be checked
  on its own (see _check_utf8) instead of failing the whole file."""
  from etils import epath
  p = epath.Path(path)
  if not p.exists():
    raise AnnotationError(f"{path}: annotation file not found")
  try:
    data = p.read_bytes()
  except OSError as e:
    raise AnnotationError(f"{path}: cannot read annotation file ({e})") from e
  return data.decode("utf-8", errors="surrogateescape")


def _check_utf8(value: str, field: str) -> str | None:
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:
    return f"field {field!r} holds bytes that are not valid UTF-8"
  return None


def _join(videos_dir: str, rel: str) -> str:
  if "://" in videos_dir:
    return posixpath.join(videos_dir, rel)
  import os
  return os.path.join(videos_dir, rel)


def _default_source(rel: str, fallback: str) -> str:
  parts = [p for p in rel.replace("\\", "/").split("/") if p and p != "."]
  return parts[0] if len(parts) > 1 else fallback


def _hawk_entry(item: Any, where: str, videos_dir: str) -> Entry | Problem:
  video = item.get("video") if isinstance(item, dict) else None
  shown = video if isinstance(video, str) else ""
  if not isinstance(item, dict):
    return Problem(where, shown, f"entry is a {type(item).__name__}, expected a JSON object")
  for field, kind in (("video", str), ("description", str), ("QA", list)):
    if field not in item:
      return Problem(where, shown, f"missing field {field!r}")
    if not isinstance(item[field], kind):
      return Problem(where, shown, f"field {field!r} is a {type(item[field]).__name__}, "
                                   f"expected {'a string' if kind is str else 'a list'}")
  if not video.strip():
    return Problem(where, shown, "field 'video' is empty")
  qa = []
  for j, pair in enumerate(item["QA"]):
    if not isinstance(pair, dict) or not isinstance(pair.get("q"), str) or not isinstance(
        pair.get("a"), str):
      return Problem(where, shown, f"QA[{j}] is not an object with string fields 'q' and 'a'")
    qa.append((pair["q"], pair["a"]))
  source = item.get("source", _default_source(video, "hawk"))
  if not isinstance(source, str):
    return Problem(where, shown, f"field 'source' is a {type(source).__name__}, expected a string")
  texts = [("video", video), ("description", item["description"]), ("source", source)]
  texts += [(f"QA[{j}]", q + a) for j, (q, a) in enumerate(qa)]
  for field, value in texts:
    bad = _check_utf8(value, field)
    if bad:
      return Problem(where, video.encode("utf-8", "replace").decode("utf-8"), bad)
  return Entry(where=where, video=video, video_path=_join(videos_dir, video), source=source,
               description=item["description"], qa=tuple(qa))


def read_hawk_annotations(path: str, videos_dir: str) -> tuple[list[Entry], list[Problem]]:
  """Entries and problems from a HAWK annotation JSON list, in file order."""
  text = _read_text(path)
  try:
    items = json.loads(text)
  except json.JSONDecodeError as e:
    raise AnnotationError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(items, list):
    raise AnnotationError(f"{path}: expected a JSON list of entries, got a "
                          f"{type(items).__name__}")
  name = posixpath.basename(str(path))
  entries, problems = [], []
  for i, item in enumerate(items):
    result = _hawk_entry(item, f"{name}[{i}]", videos_dir)
    (entries if isinstance(result, Entry) else problems).append(result)
  return entries, problems


def _caption_entry(video: Any, caption: Any, where: str, videos_dir: str,
                   source: str) -> Entry | Problem:
  shown = video if isinstance(video, str) else ""
  for field, value in (("video", video), ("caption", caption)):
    if value is None or (isinstance(value, str) and not value.strip()):
      return Problem(where, shown, f"missing field {field!r}")
    if not isinstance(value, str):
      return Problem(where, shown, f"field {field!r} is a {type(value).__name__}, "
                                   f"expected a string")
    bad = _check_utf8(value, field)
    if bad:
      return Problem(where, shown.encode("utf-8", "replace").decode("utf-8"), bad)
  return Entry(where=where, video=video, video_path=_join(videos_dir, video), source=source,
               caption=caption.strip())


def _read_caption_csv(path: str, videos_dir: str, source: str):
  text = _read_text(path)
  reader = csv.DictReader(io.StringIO(text, newline=""))
  needed = {"page_dir", "videoid", "name"}
  if reader.fieldnames is None or not needed <= set(reader.fieldnames):
    raise AnnotationError(f"{path}: CSV header {reader.fieldnames} lacks the WebVid columns "
                          f"{sorted(needed)}")
  name = posixpath.basename(str(path))
  entries, problems = [], []
  for row in reader:
    where = f"{name}:{reader.line_num}"
    page_dir, videoid = row.get("page_dir"), row.get("videoid")
    if not page_dir or not videoid:
      problems.append(Problem(where, "", "missing field 'page_dir' or 'videoid'"))
      continue
    video = f"{page_dir.strip()}/{videoid.strip()}.mp4"
    result = _caption_entry(video, row.get("name"), where, videos_dir, source)
    (entries if isinstance(result, Entry) else problems).append(result)
  return entries, problems


def _read_caption_jsonl(path: str, videos_dir: str, source: str):
  text = _read_text(path)
  name = posixpath.basename(str(path))
  entries, problems = [], []
  for line_num, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{name}:{line_num}"
    try:
      item = json.loads(line)
    except json.JSONDecodeError as e:
      problems.append(Problem(where, "", f"line is not valid JSON ({e})"))
      continue
    if not isinstance(item, dict):
      problems.append(Problem(where, "", f"line is a {type(item).__name__}, expected an object"))
      continue
    result = _caption_entry(item.get("video"), item.get("caption"), where, videos_dir,
                            item.get("source", source) if isinstance(item.get("source"), str)
                            else source)
    (entries if isinstance(result, Entry) else problems).append(result)
  return entries, problems


def read_caption_annotations(path: str, videos_dir: str,
                             source: str = "captions") -> tuple[list[Entry], list[Problem]]:
  """Entries and problems from a WebVid CSV, a folder of CSVs, or a JSON-lines file."""
  from etils import epath
  p = epath.Path(path)
  if p.is_dir():
    files = sorted(str(f) for f in p.iterdir() if f.name.endswith(".csv"))
    if not files:
      raise AnnotationError(f"{path}: folder holds no .csv caption files")
  else:
    files = [str(path)]
  entries, problems = [], []
  for f in files:
    read = _read_caption_jsonl if f.endswith((".jsonl", ".json")) else _read_caption_csv
    e, pr = read(f, videos_dir, source)
    entries += e
    problems += pr
  return entries, problems


def split_train_test(entries: list[Entry], test_fraction: float = 0.1,
                     seed: int = 42) -> tuple[list[Entry], list[Entry]]:
  """A seeded split of one file's entries (HAWK holds out 10% for test); order is kept."""
  n_test = int(round(len(entries) * test_fraction))
  perm = np.random.default_rng(seed).permutation(len(entries))
  test_ids = set(perm[:n_test].tolist())
  train = [e for i, e in enumerate(entries) if i not in test_ids]
  test = [e for i, e in enumerate(entries) if i in test_ids]
  return train, test
