"""The accuracy search: judging candidates against FP32 (evaluate), per-layer sensitivity, the float fallback."""
