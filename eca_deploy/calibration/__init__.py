"""The precision stage, in rooms: quantize.py (the entry: dispatch through precisions.PRECISIONS), fp16.py (FP16
conversion), int8/ (statistics: collect, calibrators, cache), qdq/ (placement, rewrite), search/ (accuracy:
evaluate, sensitivity, fallback)."""
