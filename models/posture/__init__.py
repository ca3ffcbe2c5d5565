"""Posture classifier: one 16 x 32 mat frame -> empty / supine / prone / left / right."""
