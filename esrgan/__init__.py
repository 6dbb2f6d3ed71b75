"""esrgan-lab library: ESRGAN networks, losses, data, metrics and training as plain functions.

Nothing in this package imports Sacred, pymongo, ``experiments/`` or ``analysis/``.
"""

__version__ = "0.1.0"
