"""The keypoint model: its runtimes, the pipeline (the API), networks, checkpoints, export."""
