"""Keypoints for whole collections on Ray Data (``fkp-batch``), from one machine to a cluster.

* ``sources``: which images an INPUT names (a folder, a glob, a text file of paths or URIs, on
  any file system fsspec reaches: local, ``s3://``, ``gs://``, ...), and reading one of them;
* ``rows``: the Parquet schema and an image's rows (one per face, one per face-free or
  unreadable image), made from the JSON entry ``fkp-detect --json`` writes for it;
* ``store``: the output dataset: its settings file, the images already in it (what a rerun
  skips), and each Parquet file written whole or not at all;
* ``job``: the Ray Data job (an actor pool, one ``KeypointPipeline`` per worker) and a local
  Ray started and stopped for it, or an existing cluster joined.

Needs the ``[scale]`` extra (``pip install 'facial-keypoints[scale]'``: Ray Data, PyArrow,
fsspec); nothing outside this package imports it.
"""
