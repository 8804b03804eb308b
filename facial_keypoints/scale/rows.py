"""``fkp-batch``'s Parquet rows: one per face, and one per image that has none.

An image's rows are made from the JSON entry that ``fkp-detect --json`` writes for it
(``batch.image_entry``, each face ``Face.to_json``), so that the two agree to the digit:

* a face: ``face`` its index in the image (0, 1, ...), ``box`` [x, y, w, h], ``keypoints``
  68 [x, y] pairs in the image's pixels, ``score``, ``confidence``, ``roll`` (rounded as in
  the JSON), ``error`` null (or the reason where the model gave keypoints that are not finite
  numbers: ``keypoints`` null);
* an image with no face: one row with ``face`` null, no box or keypoints, ``error`` null;
* an unreadable image: one row with ``face`` null and ``error`` the reason.

Every row has the image's ``path`` (absolute path or URI), ``width`` and ``height`` (null when
unreadable) and the ``markup`` of its keypoints. So every image processed has at least one row,
which is how a rerun knows it is done.
"""
from __future__ import annotations

import pyarrow as pa

from facial_keypoints.landmarks import N_KEYPOINTS

SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("face", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("box", pa.list_(pa.float64(), 4)),
    pa.field("keypoints", pa.list_(pa.list_(pa.float64(), 2), N_KEYPOINTS)),
    pa.field("score", pa.float64()),
    pa.field("confidence", pa.float64()),
    pa.field("roll", pa.float64()),
    pa.field("markup", pa.string()),
    pa.field("error", pa.string()),
])
FACE_FIELDS = ("box", "keypoints", "score", "confidence", "roll")


def image_rows(entry, markup) -> list[dict]:
    """The rows of one image from its ``fkp-detect`` JSON entry (``batch.image_entry``)."""
    base = {"path": entry["path"], "width": entry["width"], "height": entry["height"],
            "markup": markup}
    if entry["error"] is not None or not entry["faces"]:
        return [{**base, "face": None, "error": entry["error"]}]
    return [{**base, "face": i, **{k: face[k] for k in FACE_FIELDS},
             "error": face.get("error")} for i, face in enumerate(entry["faces"])]


def table(rows) -> pa.Table:
    """Rows as an Arrow table of ``SCHEMA`` (what a Parquet file holds)."""
    return pa.Table.from_pylist(rows, schema=SCHEMA)
