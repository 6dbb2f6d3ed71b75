"""Sacred experiment, presets and the ablation matrix (imports esrgan; never imported by it)."""
