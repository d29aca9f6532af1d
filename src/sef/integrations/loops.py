"""SEF in a loop that calls ``loss_fn(model(x), y)``: timm's ``train_one_epoch`` (through
``timm.task.ClassificationTask``), most hand-written loops.

The model wrapper is :class:`sef.SEF` itself: in train mode it returns :class:`sef.SEFOutput`
(global logits, group logits, feature map), all that :class:`sef.SEFLoss` needs, and in eval mode
plain logits. :class:`SEFCriterion` is the loss that takes that output and returns one number to
backpropagate, so neither the loop nor the model changes::

    model = sef.SEF("timm:resnet50", num_classes=200, groups=4)
    loss_fn = SEFCriterion(sef.SEFLoss(groups=4))
    loss = loss_fn(model(images), labels)   # a scalar tensor; loss_fn.terms has each term

``labels`` may be class indices or soft targets (timm's ``Mixup``: mixup, cutmix, smoothing).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional

from sef.losses import IGNORED, SEFLoss, _check_target, _values_readable, cross_entropy
from sef.model import SEFOutput


class SEFCriterion(nn.Module):
    """``loss_fn(output, target)``: Eq. 8's total for an :class:`~sef.SEFOutput` (an SEF in
    train mode), cross-entropy for plain logits (an SEF in eval mode, as validation loops call
    it). ``terms`` keeps the last training call's terms (ce, entropy, distill, group, total),
    detached, on the device: reading them is the caller's choice of when to wait for it.

    ``target`` is class indices [B] or class probabilities [B, K] (the soft targets of mixup,
    cutmix and label smoothing, as timm's ``Mixup`` makes them), in training and on plain logits.
    ``label_smoothing`` (0 to 1, excluded) turns class indices into probabilities, ``1 - eps`` on
    the label and ``eps / K`` on every class, as timm's ``LabelSmoothingCrossEntropy`` and
    torch's ``label_smoothing`` do; probabilities are taken as they are (``Mixup`` smooths them).
    With ``lam_warmup``, ``phi_warmup`` or ``lam_until``, tell the loss how far training is each
    step, as ``sef train`` does: ``criterion.loss.set_progress(epoch + step / steps)``.
    """

    def __init__(self, loss: SEFLoss, label_smoothing: float = 0.0):
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"label_smoothing={label_smoothing!r} is invalid: it must be at least 0 and under 1"
            )
        self.loss, self.label_smoothing = loss, label_smoothing
        self.terms: dict[str, Tensor] = {}

    def forward(self, output: SEFOutput | Tensor, target: Tensor) -> Tensor:
        if not isinstance(output, SEFOutput):  # SEFLoss's ce term: the same targets
            return cross_entropy(output, self._smoothed(target, output))
        terms = self.loss(output, self._smoothed(target, output.logits))
        self.terms = {name: value.detach() for name, value in terms.items()}
        return terms["total"]

    def _smoothed(self, target: Tensor, logits: Tensor) -> Tensor:
        """Class indices [B] as label-smoothed probabilities [B, K]; any other target as it is."""
        if not self.label_smoothing or target.dtype.is_floating_point or target.dim() != 1:
            return target
        _check_target(target, logits)  # a label out of range, named (not one_hot's "Class values")
        if _values_readable(target) and (target == IGNORED).any():
            raise ValueError(
                f"label_smoothing={self.label_smoothing} cannot smooth the label {IGNORED} (an "
                f"image to skip) into class probabilities; leave those images out of the batch, "
                f"or pass label_smoothing=0"
            )
        classes = logits.shape[-1]
        one_hot = functional.one_hot(target.long(), classes).float()
        return one_hot * (1 - self.label_smoothing) + self.label_smoothing / classes
