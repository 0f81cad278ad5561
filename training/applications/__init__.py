"""Applications, one module each (its config dataclass and its ``Application``), registered by name; their held-out
evaluation lives beside them in ``<family>_eval.py``, their networks in ``training/networks``, their losses in
``training/objectives``. ``sr_base`` and ``genbase`` are the shared bases of the SR and digit applications."""
