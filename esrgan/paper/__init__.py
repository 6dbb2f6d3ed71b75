"""What the ESRGAN paper says, as data: its switches, its claims, its published numbers.

Every other layer reads these tables instead of writing the paper's values again:
``switches`` (the six changes ESRGAN makes to SRGAN), ``setting`` (its training setting),
``departures`` (how a run's config differs from that setting), ``published`` (the paper's
benchmark numbers) and ``claims`` (what the paper claims and the evidence each claim needs).
"""
