"""Recordings: capture gameplay at 10 FPS and convert it into action datasets."""
