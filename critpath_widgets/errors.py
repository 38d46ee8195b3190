"""Exception types: every error we raise on purpose derives from CritpathError."""

from __future__ import annotations


class CritpathError(Exception):
    """Base class of all errors raised on purpose by critpath_widgets."""


class InputError(CritpathError, ValueError):
    """An input tensor, image, target or parameter value is not acceptable."""


class InputTypeError(CritpathError, TypeError):
    """An argument has the wrong type (say a list where a tensor is needed)."""


class ModelError(CritpathError, ValueError):
    """The model cannot be explained as given (no recordable sites, odd output...)."""


class WeightsDownloadError(ModelError):
    """torchvision's pretrained weights could not be downloaded (offline, say)."""

    def __init__(self, message: str, model: str, reason: str) -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason


class OptionError(CritpathError, ValueError):
    """An unknown method, scope, granularity or keyword option."""


class Cancelled(CritpathError):
    """A long computation was cancelled through its progress callback."""


class FoldingWarning(UserWarning):
    """BatchNorm folding stands aside and the model runs as it is (say, while a user's
    hook sits on a module that folding replaces); the results stay exact."""


class SiteWarning(UserWarning):
    """The sites are not what the paper's results assume: activations that are not
    piecewise linear (the pathway gradient is then a masked gradient, not the exact
    local linear model), or modules that are not activations at all."""


__all__ = [
    "CritpathError",
    "InputError",
    "InputTypeError",
    "ModelError",
    "OptionError",
    "WeightsDownloadError",
    "Cancelled",
    "FoldingWarning",
    "SiteWarning",
]
