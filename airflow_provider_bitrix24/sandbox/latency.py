"""
How long a real portal takes to answer, so that benchmarks and tests can see what that speed does to a client.

A call to a cloud portal costs, in this order:

* half the **network round trip** on the way in;
* the portal's **per-request overhead**: bootstrap, authentication and limit checks, the part of ``time.duration``
  outside ``time.processing``;
* the method's **processing** time; a ``batch`` processes its commands one after the other, so its processing is
  the sum of its commands' (as the batch answers of the documentation show);
* half the network round trip on the way out.

The portal's ``time`` block covers the middle two: ``duration`` is overhead plus processing and ``processing`` is the
method's share (a batch's the sum of its commands'); with the operating limit on, ``operating`` is charged with the
same processing time. The model is applied with sleeps taken outside every lock of the portal, so concurrent
requests are processed in parallel, as a portal's PHP workers process them.

The model is off by default (tests stay fast). Switch it on with ``SandboxConfig(latency="realistic")``,
``bitrix24-sandbox --latency realistic`` or ``POST /_sandbox/config {"latency": "realistic"}``; override any figure
with ``network_round_trip``, ``request_overhead`` or ``processing_time`` (method -> seconds, ``"*"`` for every method
not listed), with or without the preset.

The ``realistic`` preset, built from documented answers (seconds):

=============================================  =======  ===========================================================
figure                                         value    source
=============================================  =======  ===========================================================
network round trip                             0.050    stated, not measured: a client in the portal's region over
                                                        the public internet, on a kept-alive HTTPS connection
per-request overhead                           0.052    ``imopenlines.message.quick.save`` docs page example:
                                                        ``duration 0.083 - processing 0.031`` (cross-checks: the
                                                        batch page example ``0.0501 - 0.0102 = 0.040``, the 2023
                                                        history example ``0.149 - 0.068 = 0.081``)
``imopenlines.message.quick.save``             0.031    quick.save docs page example, ``processing``
``imopenlines.session.history.get``            0.068    history docs page example of 2023 (``start``
                                                        1685712569.097672, duration 0.149, processing 0.068); the
                                                        current example (reference §7.2.1) reports processing 0 and
                                                        a duration of at most 0.143
``imopenlines.dialog.get``                     0.371    reference §7.3 example: duration at most 0.423, minus the
                                                        overhead (processing reported as 0)
``imopenlines.crm.chat.get``                   0.540    reference §7.5 example: duration at most 0.592, minus the
                                                        overhead (processing reported as 0)
``imopenlines.session.open``                   0.228    session.open docs page example: duration at most 0.280,
                                                        minus the overhead (processing reported as 0)
every other method (``"*"``)                   0.0045   batch docs page example (reference §4.3): its commands
                                                        ``user.current`` and ``department.get`` took 0.0031 and
                                                        0.0059; the mean
=============================================  =======  ===========================================================

The current documentation examples of ``session.history.get``, ``dialog.get``, ``crm.chat.get`` and
``session.open`` have a ``start`` in whole seconds, so their ``duration`` is ``finish - floor(start)``: an upper
bound that includes an unknown part of the second before the request began. Where no example with a fractional
``start`` exists, the preset takes that bound (a portal at least as slow as the documented one), and where one
exists (history, 2023) it takes the measurement. Modelled client-side times: one quick.save 0.133 s, one
history call 0.170 s, a batch of 50 quick.saves 1.652 s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_bitrix24.sandbox.config import SandboxConfig

#: The longest any one modelled figure may be: the cloud cuts a request off after 60 s.
MAX_SECONDS = 60.0
#: The key of ``processing_time`` that applies to every method not listed.
ANY_METHOD = "*"


@dataclass(frozen=True)
class LatencyModel:
    """
    Modelled times of one portal, in seconds.

    :param round_trip: Network round trip per HTTP request (half before the portal sees it, half after it answers).
    :param overhead: The portal's own work per request, outside any method.
    :param processing: Processing time per method (lower-case name), ``"*"`` for every method not listed.
    """

    round_trip: float = 0.0
    overhead: float = 0.0
    processing: Mapping[str, float] = field(default_factory=dict)

    def processing_of(self, method: str) -> float:
        """Modelled processing time of one call of ``method`` (0 when nothing applies)."""
        return self.processing.get(method, self.processing.get(ANY_METHOD, 0.0))


PRESETS: Mapping[str, LatencyModel] = MappingProxyType(
    {
        "off": LatencyModel(),
        "realistic": LatencyModel(
            round_trip=0.050,
            overhead=0.052,
            processing=MappingProxyType(
                {
                    "imopenlines.message.quick.save": 0.031,
                    "imopenlines.session.history.get": 0.068,
                    "imopenlines.dialog.get": 0.371,
                    "imopenlines.crm.chat.get": 0.540,
                    "imopenlines.session.open": 0.228,
                    ANY_METHOD: 0.0045,
                }
            ),
        ),
    }
)


def model_of(config: SandboxConfig) -> LatencyModel:
    """The model a config asks for: its ``latency`` preset with its explicit figures laid over it."""
    preset = PRESETS[config.latency]
    processing = {**preset.processing, **config.processing_time}
    return LatencyModel(
        round_trip=preset.round_trip if config.network_round_trip is None else config.network_round_trip,
        overhead=preset.overhead if config.request_overhead is None else config.request_overhead,
        processing=processing,
    )


def check_seconds(name: str, value: object) -> float:
    """A modelled figure: a number of seconds from 0 to :data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0.0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"{name} must be between 0 and {MAX_SECONDS:g} seconds, not {value!r}")
    return seconds
