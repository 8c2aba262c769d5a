"""Neural networks. Built only from :class:`~sketchcolor.config.ModelConfig`; they know nothing of
noise schedules, prediction types or colour spaces (``models`` never imports ``schedules``)."""

from .unet import UNet

__all__ = ["UNet"]
