"""The errors drox reports to its user as one line (exit code 2), never as a traceback.

* :class:`ConfigError`: a config value, option or name is wrong; the message names the key and the fix.
* :class:`NonFiniteError`: a tensor that must be finite (rewards, advantages, loss) holds NaN or inf.

``drox.tasks.TaskError`` (data) and ``drox.models.loading.ModelError`` (weights) live with their loaders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # torch is imported by the checks that need it: the error types import nothing heavy
    import torch


class ConfigError(ValueError):
    """A config value is out of range; the message names the key and the allowed values."""



def first_line(e: BaseException, with_type: bool = False, with_cause: bool = True) -> str:
    """One line for the user out of an exception: the first line of its message (the type's name when the message
    is empty), ``"TypeName: "`` before it with ``with_type``, and with ``with_cause`` the first line of a chained
    ``__cause__``'s message after it in parentheses (Hydra and verl chain the useful part there).

    Example: ``ValueError("bad key\\nmore")`` raised ``from KeyError("k")`` -> ``"bad key ('k')"``.
    """
    text = str(e).strip() or type(e).__name__
    head = text.splitlines()[0]
    if with_type and str(e).strip():
        head = f"{type(e).__name__}: {head}"
    cause = e.__cause__ if with_cause else None
    if cause is not None and str(cause).strip():
        head = f"{head} ({str(cause).strip().splitlines()[0]})"
    return head


class NonFiniteError(RuntimeError):
    """A tensor that must be finite holds NaN or inf. Attributes: ``name``, ``step``, ``source``,
    ``num_nan``, ``num_inf``, ``numel``."""

    def __init__(
        self, message: str, name: str, step: int, source: Optional[str], num_nan: int, num_inf: int, numel: int
    ):
        super().__init__(message)
        self.name, self.step, self.source = name, step, source
        self.num_nan, self.num_inf, self.numel = num_nan, num_inf, numel


def check_finite(name: str, t: "torch.Tensor", step: int, source: Optional[str] = None) -> "torch.Tensor":
    """Raise :class:`NonFiniteError` if ``t`` has NaN or inf entries; return ``t`` unchanged otherwise.

    The message is one line, e.g.
    ``step 3: NaN in rewards (source 'outcome'): 2 NaN, 0 inf of 8 entries; first at index (1, 0)``.
    Integer/bool tensors are always finite. Costs one device sync.
    """
    import torch

    if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()):
        return t
    with torch.no_grad():
        nan = torch.isnan(t)
        inf = torch.isinf(t)
        num_nan = int(nan.sum().item())
        num_inf = int(inf.sum().item())
    if num_nan == 0 and num_inf == 0:
        return t
    kind = "NaN/inf" if num_nan and num_inf else ("NaN" if num_nan else "inf")
    src = f" (source {source!r})" if source is not None else ""
    first = torch.nonzero(nan | inf)[0].tolist()
    where = f"; first at index {tuple(first)}" if first else ""
    msg = f"step {step}: {kind} in {name}{src}: {num_nan} NaN, {num_inf} inf of {t.numel()} entries{where}"
    raise NonFiniteError(msg, name, step, source, num_nan, num_inf, t.numel())


def check_weights_finite(params, step: int, when: str) -> None:
    """Raise :class:`NonFiniteError` when any parameter holds NaN or inf (one fused reduction: a NaN or inf
    anywhere makes the sum of all parameter sums non-finite). Guards the optimizer step and checkpoints, so
    that non-finite weights are never trained on or written."""
    import torch

    params = [p for p in params]
    if not params:
        return
    with torch.no_grad():
        total = torch.stack([p.detach().float().sum() for p in params]).sum()
    if torch.isfinite(total):
        return
    bad = [i for i, p in enumerate(params) if not bool(torch.isfinite(p.detach()).all())]
    if not bad:  # only the float32 sum overflowed: every weight is finite
        return
    msg = (f"step {step}: non-finite weights {when}: {len(bad)} of {len(params)} parameter tensors hold NaN/inf; "
           "lower trainer.lr or set trainer.max_grad_norm, then resume from the last checkpoint (it is finite)")
    raise NonFiniteError(msg, "weights", step, None, len(bad), 0, len(params))
