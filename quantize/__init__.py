"""edgecnn.quantize: int8 post-training quantisation with real calibration images, and the
fidelity report (agreement, SQNR, per-layer) that says what it cost."""
