"""INT8 statistics: the calibration pass (collect), range choices (calibrators), the range cache (cache)."""
