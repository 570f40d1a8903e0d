"""An epoch's minibatches: how many, of what sizes, and the rules they must meet.

An epoch over ``N`` examples with ``batch_size`` ``B`` (the whole split when larger) runs
``N // B`` full minibatches and, when ``B`` does not divide ``N``, one last, smaller
minibatch of the ``N % B`` left over, so every example is used once per epoch.

Two rules, checked before any training (:func:`check`): data parallel over ``devices``
splits every minibatch, the last included, evenly; batch norm's training mode needs 2
or more examples in every batch it normalizes (each device's, when each normalizes its
own shard), since one example has variance 0.
"""

from __future__ import annotations

from typing import NamedTuple


class BatchSizeError(ValueError):
    """A batch size whose minibatches break a rule of :func:`check` (the message says
    which minibatch, and what to choose instead)."""


class Minibatches(NamedTuple):
    size: int  # examples in a full minibatch: min(batch_size, N)
    full: int  # full minibatches per epoch
    rest: int  # examples in the last, smaller minibatch (0: there is none)

    @property
    def per_epoch(self) -> int:
        """Updates per epoch."""
        return self.full + (self.rest > 0)


def minibatches(num_examples: int, batch_size: int) -> Minibatches:
    """The minibatches of one epoch over ``num_examples`` (module docstring)."""
    size = min(batch_size, num_examples)
    return Minibatches(size, *divmod(num_examples, size))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return minibatches(num_examples, batch_size).per_epoch


def check(num_examples: int, batch_size: int, *, devices: int = 1, batchnorm: bool = False,
          normalized_per_device: bool = True) -> None:
    """Raise :class:`BatchSizeError` (saying which minibatch, and what to choose) unless
    every minibatch splits evenly over ``devices`` and, with ``batchnorm``, every batch
    it normalizes holds 2 or more examples: each device's shard when
    ``normalized_per_device`` (``shard_map``), else the whole minibatch (``gspmd``)."""
    mb = minibatches(num_examples, batch_size)
    last = (f"the last minibatch of each epoch ({num_examples} % {mb.size} = {mb.rest} "
            "examples)")
    if mb.size % devices:
        raise BatchSizeError(f"the global batch of {mb.size} examples does not split evenly "
                             f"over {devices} devices; choose a batch size that is a multiple "
                             f"of {devices}")
    if mb.rest % devices:
        raise BatchSizeError(f"{last} does not split evenly over {devices} devices; choose a "
                             f"batch size that leaves a multiple of {devices} (e.g. one that "
                             f"divides {num_examples})")
    if not batchnorm:
        return
    shards = devices if normalized_per_device else 1
    smallest = (mb.rest or mb.size) // shards
    if smallest >= 2:
        return
    per = f", {smallest} per device under shard_map" if shards > 1 else ""
    which = (last[:-1] + per + ")" if mb.rest
             else f"a minibatch of {mb.size} examples" + (f" ({per[2:]})" if per else ""))
    raise BatchSizeError(f"batch norm normalizes each minibatch by its own statistics, and "
                         f"{which} is a batch of {smallest}, whose variance is 0: choose a "
                         "batch size that leaves every minibatch 2 or more examples"
                         + (" per device" if shards > 1 else ""))
