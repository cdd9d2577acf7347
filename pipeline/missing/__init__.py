"""Every way of making a modality missing; training strategies and evaluation share this package.

Absent means the modality's mask is False at that step (masks go into attention), with the values
zeroed as well by default (`zero_fill`). Everything takes and returns dicts {modality: array} of
numpy arrays or torch tensors, never modifies its inputs, and draws its randomness only from the
`numpy.random.Generator` it is given, so a given seed always makes the same steps missing.

    ops         the shared array operations (drop_modalities, clip_zero, frame_zero, frame_repeat,
                availability) and the papers' evaluation levels
    strategies  training strategies, applied to each training batch (`make_strategy`)
    conditions  evaluation conditions, applied to the test data (`parse_conditions`)

Each submodule's docstring documents its part (the strategies and condition forms are listed there).
The names below are re-exported so that `from pipeline.missing import …` keeps working.
"""

from pipeline.missing.conditions import (
    ACCEPTED_FORMS,
    AllPresent,
    Availability,
    Burst,
    ClipZero,
    Condition,
    ConditionContext,
    FrameRepeat,
    FrameZero,
    Imbalanced,
    MissingModality,
    OnePresent,
    RandomMissing,
    WeakestMissing,
    condition_seed,
    parse_conditions,
)
from pipeline.missing.inputs import (
    CONVENTIONS,
    InputConventionError,
    MissingInput,
    full_valid,
    model_inputs,
)
from pipeline.missing.ops import (
    AVAILABILITY_SHARES,
    BURST_MEAN_STEPS,
    CLIP_ZERO_LEVELS,
    FRAME_LEVELS,
    IMBALANCE_FACTOR,
    MECHANISM_LEVELS,
    RANDOM_MISSING_RATES,
    Arrays,
    ConditionError,
    availability,
    bursts,
    clip_zero,
    drop_modalities,
    exact_missing,
    frame_repeat,
    frame_zero,
    imbalanced_missing,
    one_present,
    weakest_missing,
)
from pipeline.missing.strategies import (
    STRATEGIES,
    AuxFormerTraining,
    ClipZeroTraining,
    DynamicTraining,
    EliminateTraining,
    FrameRepeatTraining,
    FrameZeroTraining,
    Standard,
    Strategy,
    StrategyError,
    make_strategy,
    strategy_names,
    validate_strategy_params,
)

__all__ = [
    "CONVENTIONS",
    "InputConventionError",
    "MissingInput",
    "full_valid",
    "model_inputs",
    "ACCEPTED_FORMS",
    "AVAILABILITY_SHARES",
    "CLIP_ZERO_LEVELS",
    "FRAME_LEVELS",
    "RANDOM_MISSING_RATES",
    "STRATEGIES",
    "AllPresent",
    "Arrays",
    "AuxFormerTraining",
    "Availability",
    "ClipZero",
    "ClipZeroTraining",
    "Condition",
    "ConditionError",
    "DynamicTraining",
    "EliminateTraining",
    "FrameRepeat",
    "FrameRepeatTraining",
    "FrameZero",
    "FrameZeroTraining",
    "MissingModality",
    "RandomMissing",
    "Standard",
    "Strategy",
    "StrategyError",
    "availability",
    "clip_zero",
    "condition_seed",
    "drop_modalities",
    "frame_repeat",
    "frame_zero",
    "make_strategy",
    "parse_conditions",
    "strategy_names",
    "validate_strategy_params",
]
__all__ += [
    "BURST_MEAN_STEPS",
    "IMBALANCE_FACTOR",
    "MECHANISM_LEVELS",
    "Burst",
    "ConditionContext",
    "Imbalanced",
    "OnePresent",
    "WeakestMissing",
    "bursts",
    "exact_missing",
    "imbalanced_missing",
    "one_present",
    "weakest_missing",
]
