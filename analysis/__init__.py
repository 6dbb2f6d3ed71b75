"""Read the run store, summarise the ablation matrix, write reports (never trains).

``load`` turns a Sacred file store or MongoDB database into tidy frames, ``labels`` names
variants and metrics, ``tables`` and ``figures`` summarise them, ``report`` writes
``reports/<name>/``: ``python -m analysis.report --store runs --name NAME``.
"""
