"""``fkp-batch``'s Parquet rows: one per face, and one per image that has none.

A worker hands over one record per image (``image_record``: its fields and its faces as a
list); the command's process makes the rows from them (``rows_of``). An image's record is made
from the JSON entry that ``fkp-detect --json`` writes for it
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
import pyarrow.compute as pc

from facial_keypoints.landmarks import N_KEYPOINTS

BOX = pa.list_(pa.float64(), 4)
KEYPOINTS = pa.list_(pa.list_(pa.float64(), 2), N_KEYPOINTS)
SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("face", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("box", BOX),
    pa.field("keypoints", KEYPOINTS),
    pa.field("score", pa.float64()),
    pa.field("confidence", pa.float64()),
    pa.field("roll", pa.float64()),
    pa.field("markup", pa.string()),
    pa.field("error", pa.string()),
])
FACE_FIELDS = ("box", "keypoints", "score", "confidence", "roll", "error")
IMAGE_FIELDS = ("path", "width", "height", "markup")
#: What a worker hands over: one record per image, its faces a list (``rows_of`` makes the
#: rows). Ray moves a record whole, so an image's faces always travel together.
RECORD = pa.schema([*(SCHEMA.field(k) for k in IMAGE_FIELDS), SCHEMA.field("error"),
                    pa.field("faces", pa.list_(pa.struct(
                        [SCHEMA.field(k) for k in FACE_FIELDS])))])


def image_record(entry, markup) -> dict:
    """One image's record (``RECORD``) from its ``fkp-detect`` JSON entry
    (``batch.image_entry``, each face ``Face.to_json``)."""
    return {"path": entry["path"], "width": entry["width"], "height": entry["height"],
            "markup": markup, "error": entry["error"],
            "faces": [{k: face.get(k) for k in FACE_FIELDS} for face in entry["faces"]]}


def records_table(records) -> pa.Table:
    return pa.Table.from_pylist(records, schema=RECORD)


def rows_of(records: pa.Table) -> pa.Table:
    """The rows (``SCHEMA``) of image records, in their order: one per face, one for an image
    with none. Arrow's kernels do it, not Python per row: the command's process, through
    which every row passes, stays fast."""
    records = records.combine_chunks()
    faces = records.column("faces").chunk(0) if records.num_rows else \
        pa.array([], RECORD.field("faces").type)
    n_faces = pc.list_value_length(faces).fill_null(0)
    parent = pc.list_parent_indices(faces)
    flat = pc.list_flatten(faces)
    offsets = faces.offsets   # (of a slice: into the whole values; list_flatten starts at 0)
    first = pc.subtract(pc.take(offsets, parent), offsets[0])
    with_faces = {k: pc.take(records.column(k), parent) for k in IMAGE_FIELDS}
    with_faces.update({k: flat.field(k) for k in FACE_FIELDS})
    with_faces["face"] = pc.subtract(pa.array(range(len(flat)), pa.int64()), first).cast(
        pa.int32())
    with_faces["_order"] = parent
    bare = records.filter(pc.equal(n_faces, 0))
    without = {k: bare.column(k) for k in (*IMAGE_FIELDS, "error")}
    without.update({k: pa.nulls(bare.num_rows, SCHEMA.field(k).type)
                    for k in ("face", *FACE_FIELDS) if k != "error"})
    without["_order"] = pc.indices_nonzero(pc.equal(n_faces, 0))
    parts = [pa.table({k: part[k] for k in (*SCHEMA.names, "_order")}).cast(
        pa.schema([*SCHEMA, pa.field("_order", pa.int64())]))
        for part in (with_faces, without)]
    both = pa.concat_tables(parts).sort_by([("_order", "ascending"), ("face", "ascending")])
    return both.drop_columns(["_order"])


def table(rows) -> pa.Table:
    """Rows (dicts) as an Arrow table of ``SCHEMA`` (what a Parquet file holds)."""
    return pa.Table.from_pylist(rows, schema=SCHEMA)
