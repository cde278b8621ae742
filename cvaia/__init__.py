"""cvaia — multi-task driving perception workbook: semantic segmentation and monocular depth.

Sub-packages and modules:

- :mod:`cvaia.data`     miniscapes reader/writers, synthetic street scenes, augmentation
- :mod:`cvaia.models`   encoder, ASPP, DeepLabV3+ decoder, attention, multi-task models
- :mod:`cvaia.losses`   cross-entropy, SILog, task weighting
- :mod:`cvaia.metrics`  confusion matrix, mIoU, SI-logRMSE, grader score
- :mod:`cvaia.config`   the one configuration dataclass
- :mod:`cvaia.train`, :mod:`cvaia.runs`  training engine and run store
- :mod:`cvaia.plots`, :mod:`cvaia.widgets`  figures and interactive widgets
"""

__version__ = "0.1.0"
