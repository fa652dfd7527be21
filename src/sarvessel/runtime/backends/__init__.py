"""Detector backends: a batch of uint8 tiles in, detections in tile coordinates out."""
