"""The datasets: the course's (YouTube Faces frames) and 300-W's, and their download."""
