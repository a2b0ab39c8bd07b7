"""`lbm watch`: post the job transitions of a region to its Slack webhook, for any backend, until stopped."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

from lbm.cli.entry import ArgumentParser
from lbm.cli.sagey import add_site_options, region_from


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="lbm watch",
        description="Post RUNNING, FAILED (and, if the site asks, SUCCEEDED) of a region's jobs to Slack.",
    )
    add_site_options(p)
    p.add_argument("--once", action="store_true", help="look once, post what changed, and exit")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    from lbm.errors import LbmError
    from lbm.jobs.local.home import lbm_home
    from lbm.jobs.registry import backend_for, backend_info
    from lbm.jobs.watcher import JobWatcher
    from lbm.notify.slack import SlackNotifier

    region = region_from(args)
    notifier = SlackNotifier.from_settings(region.slack)
    if notifier is None:
        raise LbmError(
            f"region {region.name} has no Slack webhook to post to: set notifications.slack in the site file "
            "and the webhook URL in the variable or file it names"
        )
    watcher = JobWatcher(backend_for(region), notifier, lbm_home() / "watch" / f"{region.name}.sqlite")
    try:
        if args.once:
            watcher.poll()
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(f"watching region {region.name} ({region.backend}); stop with Ctrl-C", flush=True)
        watcher.run(max(1.0, backend_info(region.backend).poll_interval_s), stop)
        return 0
    finally:
        watcher.close()
