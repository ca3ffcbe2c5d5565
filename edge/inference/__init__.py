"""On-device inference: TFLite models through the LiteRT interpreter (``runtime``), checked against
their model cards (``card``, which needs neither numpy nor LiteRT).
"""
