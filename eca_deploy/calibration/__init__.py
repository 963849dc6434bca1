"""The precision stage: FP16 conversion, INT8 calibration (statistics, calibrators, cache) and Q/DQ placement."""
