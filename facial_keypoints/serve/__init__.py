"""``fkp-serve``: a web page to try the model on a photo or a live webcam, and a JSON API on the
same server (``app``: FastAPI on uvicorn; the page, its script and style in ``static/``, served
from the package, no CDN). Needs the ``[serve]`` extra: ``pip install 'facial-keypoints[serve]'``.
"""
