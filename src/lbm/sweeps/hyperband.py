"""W&B's hyperband early termination: at each milestone (the n-th logged value of the metric), a running
run whose metric is behind the best 1/eta of all runs that reached that milestone is stopped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lbm.sweeps.sweep_file import Hyperband


def runs_to_stop(
    hyperband: Hyperband,
    histories: Mapping[int, Sequence[float]],
    running: set[int],
    maximize: bool,
) -> dict[int, str]:
    """Run number -> why, for the running runs that fall behind their band; `histories` holds every run's
    logged values of the metric (finished runs included)."""
    sign = -1.0 if maximize else 1.0
    signed = {n: [sign * v for v in h] for n, h in histories.items() if h}
    thresholds = {}
    for band in hyperband.bands:
        at_band = sorted(h[band - 1] for h in signed.values() if len(h) >= band)
        if at_band:
            thresholds[band] = at_band[int(len(at_band) / hyperband.eta)]
    stop = {}
    for number in running:
        history = signed.get(number, [])
        reached = [band for band in thresholds if band <= len(history)]
        if not reached:
            continue
        band = max(reached)
        value = history[band - 1] if hyperband.strict else min(history)
        if value > thresholds[band]:
            stop[number] = (
                f"hyperband: metric {sign * value:g} at milestone {band} is behind the band's "
                f"threshold {sign * thresholds[band]:g}"
            )
    return stop
