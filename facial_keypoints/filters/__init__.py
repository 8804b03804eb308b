"""Using the keypoints: drawing, face filters and art, face geometry (alignment, pose)."""
