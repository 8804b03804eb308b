"""Fetch the course dataset into data/ and the course photos into images/course/
(``fkp-fetch-data``).

    python fetch_data.py --help
"""
import sys

from facial_keypoints.cli.fetch_data import main

if __name__ == "__main__":
    sys.exit(main())
