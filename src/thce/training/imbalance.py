"""The field's imbalance losses as a training stage: :func:`train_with_imbalance_loss` trains an encoder end to end
with the loss its method's settings built (:mod:`thce.losses.imbalance`, where each loss, its settings and the
registry live), with the loss's head, sampler and schedule; softmax methods treat background as one more class."""

from __future__ import annotations

import numpy as np
import torch

from thce.losses.imbalance import ImbalanceLoss
from thce.models import EventDetector
from thce.sampling import weighted_sampling_order
from thce.training.data import TrainingData, detection_validation, embed, training_clips
from thce.training.engine import Learner, RunContext, Selection, Stage, StageConfig, fit_stage

# ----------------------------------------------------------------------------------------------- training


def train_with_imbalance_loss(
    model: EventDetector, data: TrainingData, stage: StageConfig, ctx: RunContext, *, method: str
) -> EventDetector:
    """Train ``model`` (an encoder with the head its loss expects, the loss as ``model.scorer``) end to end with
    that loss and its sampler or schedule; early stopping on ``stage.selection``. Returns ``model``."""
    loss_fn = model.scorer
    if not isinstance(loss_fn, ImbalanceLoss):
        raise TypeError(f"model.scorer must be an ImbalanceLoss, got {type(loss_fn).__name__}")
    device = ctx.device
    model.to(device)
    train_idx, val_idx = data.splits["train"], data.splits["val"]
    train_class = torch.as_tensor(data.class_index[train_idx], dtype=torch.long, device=device)
    val_class = torch.as_tensor(data.class_index[val_idx], dtype=torch.long, device=device)
    weights = loss_fn.sampling_weights(data.class_index[train_idx])
    epoch_order = None
    if weights is not None:  # class-balanced oversampling: N draws with replacement per epoch

        def epoch_order(generator: torch.Generator) -> np.ndarray:
            return weighted_sampling_order(weights, generator=generator).numpy()

    def validation() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            emb = embed(model.encoder, data, val_idx, ctx, "val").to(device)
            outputs = model.head(emb)
            loss = loss_fn(outputs, val_class).item()
            return detection_validation(model.detection_scores(outputs).float().cpu().numpy(), data, loss)

    learner = Learner(
        model, lambda p, x, mix=None: loss_fn(model(x), train_class[p]), data_parallel=True,
        batch_weight=lambda p: loss_fn.batch_weight(train_class[p]),
    )  # fmt: skip
    # mixup off: only the BCE and THCE stages mix their targets
    clips = training_clips(data, ctx, epoch_order=epoch_order, on_epoch_start=loss_fn.set_epoch, mixup=False)
    fit_stage(Stage(method=method, name="end-to-end", learner=learner, data=clips, schedule=stage.schedule(),
                    selection=Selection(validation, stage.selection)), ctx)  # fmt: skip
    return model
