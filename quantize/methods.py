"""The activation-range methods of edgecnn's int8 and what each needs (no heavy imports here).

The default is the one that kept MobileNetV2 closest to float on held-out real photos
(``benchmarks/quantize_fidelity.py``; numbers in ``benchmarks/results/quantize_fidelity_*.json``).
"""

METHODS = {
    "minmax": "min/max of every calibration activation (per tensor)",
    "percentile": "clip each activation to its 0.01%/99.99% percentiles (histogram based)",
    "histogram": "range that minimises the L2 quantisation error of the activation histogram "
                 "(PT2E HistogramObserver; litert-torch's default)",
}
# Fewest calibration images per method: tails and histograms need more samples than extremes.
MIN_CALIB_IMAGES = {"minmax": 8, "percentile": 32, "histogram": 16}
DEFAULT_METHOD = "percentile"
# --method auto: candidates tried, and the share of calibration images held back to judge them.
AUTO_CANDIDATES = ("minmax", "percentile", "histogram")
AUTO_HOLDOUT = 0.25
MIN_AUTO_IMAGES = 48  # 36 to calibrate (>= percentile's 32) + 12 to judge
# Weight rounding onto the int8 grid (the scales are the observers' either way).
ROUNDINGS = {
    "nearest": "round each weight to the nearest int8 step (default)",
    "adaround": "AdaRound: up or down per weight, learned to keep each layer's output on the calibration "
                "images (Nagel et al. 2020; minutes of CPU)",
}
DEFAULT_ROUNDING = "nearest"
