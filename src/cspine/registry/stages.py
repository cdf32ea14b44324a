"""The CT pipeline's stages, by name: the model folders of a RUN and what ``cspine ct train --stage``
accepts. Nothing here imports torch."""

from __future__ import annotations

#: Stage 1 (C1..C7 segmentation): its model folder is ``RUN/seg``.
SEG = "seg"
#: Stage 2 (per-vertebra classifier): its model folder is ``RUN/cls``.
CLS = "cls"
#: Both stages, in order, with the pseudo-labels between them.
ALL = "all"

#: The stages of a RUN folder, in the order they run.
CT_STAGES: tuple[str, ...] = (SEG, CLS)
#: What ``cspine ct train --stage`` accepts.
TRAIN_STAGES: tuple[str, ...] = (*CT_STAGES, ALL)


def check_train_stage(stage: str) -> str:
    """``stage`` when ``--stage`` accepts it.

    Raises:
        CspineError: any other name (the message lists the choices).
    """
    if stage not in TRAIN_STAGES:
        from cspine.errors import CspineError

        raise CspineError(f"unknown --stage {stage!r}; choose {', '.join(TRAIN_STAGES[:-1])} or {ALL}")
    return stage
