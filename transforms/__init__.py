"""Beam PTransforms of copydesk, one composite per stage, and the pure functions they wrap."""
