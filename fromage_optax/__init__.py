"""fromage_optax: the Fromage optimiser (Bernstein et al., 2020) for optax.

Fromage moves every tensor by the same relative amount per step:
W ← (W − η·(‖W‖/‖g‖)·g)/√(1+η²), optionally capping ‖W‖ at p_bound·‖W₀‖.
"""

from fromage_optax._diagnostics import (
    MonitorRelativeTrustState,
    deep_relative_trust,
    log_deep_relative_trust,
    monitor_relative_trust,
    relative_trust_metrics,
    relative_update_norms,
)
from fromage_optax._fromage import FromageState, fromage
from fromage_optax._layer_axes import scanned_layer_axes
from fromage_optax._recipes import fromage_with_adamw, kernel_mask
from fromage_optax._scale_by_fromage import ScaleByFromageState, scale_by_fromage
from fromage_optax._weight_norm import (
    BoundWeightNormState,
    ControlWeightNormState,
    bound_weight_norm,
    control_weight_norm,
)

__version__ = "0.1.0"

__all__ = (
    "BoundWeightNormState",
    "ControlWeightNormState",
    "FromageState",
    "MonitorRelativeTrustState",
    "ScaleByFromageState",
    "bound_weight_norm",
    "control_weight_norm",
    "deep_relative_trust",
    "fromage",
    "fromage_with_adamw",
    "kernel_mask",
    "log_deep_relative_trust",
    "monitor_relative_trust",
    "relative_trust_metrics",
    "relative_update_norms",
    "scale_by_fromage",
    "scanned_layer_axes",
)
