"""The fault suite (``make chaos``): scenarios on real local clusters; figures in docs/RELIABILITY.md."""
