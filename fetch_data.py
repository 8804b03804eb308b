"""Fetch the course dataset into data/ and the course photos into images/course/
(``fkp-fetch-data``).

    python fetch_data.py --help
"""
import sys

from facial_keypoints.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("fetch_data", "fetch_data.py"))
