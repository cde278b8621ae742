"""Readable reference implementations of the code the course asks students to write.

Each module here is a short, plain version of one core idea — ASPP and the DeepLabV3+ decoder,
the SILog loss, multi-head self-attention, the adaptive-bins head — written to be *read*: the
notebooks display their source with ``inspect.getsource`` and check them for equality against
the library modules in :mod:`cvaia.models` and :mod:`cvaia.losses` (which add the options,
checks and fast paths the workbook needs). Nothing else in cvaia imports this package.
"""
