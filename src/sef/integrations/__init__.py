"""SEF inside other people's training code, one route per module (docs/integrations.md):

- :mod:`~sef.integrations.loops`: any loop that calls ``loss_fn(model(x), y)`` (timm's
  ``train_one_epoch`` through ``timm.task.ClassificationTask``, hand-written loops)
- :mod:`~sef.integrations.lightning`: a LightningModule (the ``lightning`` extra)

Experiment trackers for ``sef train`` (W&B, MLflow) are :mod:`sef.trackers`. Nothing here is
imported by ``import sef``; each module imports what it needs when it is imported.
"""
