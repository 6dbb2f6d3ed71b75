"""Sacred experiment, presets and the ablation matrix (imports esrgan; never imported by it)."""

import warnings

# sacred 0.8.7 imports pkg_resources (hence setuptools<81), which warns on import. Users read
# that warning as a fault of this suite, so it is silenced here, before any submodule imports
# sacred; only this one message is filtered, every other warning still shows.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
