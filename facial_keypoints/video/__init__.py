"""Video: faces tracked across frames, One Euro smoothing, videos through the pipeline."""
