"""Training the keypoint models (PyTorch: pip install 'facial-keypoints[train]')."""
