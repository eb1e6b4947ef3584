"""synaug: fix data imbalance in image classification with generated data (SYNAuG).

The paper's three steps are modules: :mod:`synaug.plan` (uniformization),
:mod:`synaug.generate` (text-to-image / img2img / pool generators), :mod:`synaug.train`
(Mixup training, last-layer fine-tuning); :mod:`synaug.data`, :mod:`synaug.metrics` and
:mod:`synaug.cli` sit around them, and one :class:`~synaug.manifest.Manifest` flows through all.
"""
from .errors import SynaugError
from .manifest import Manifest

__all__ = ["Manifest", "SynaugError"]
__version__ = "0.1.0"
