"""Entry of the frozen worker (build/worker/bundle/bin/worker)."""

import multiprocessing

multiprocessing.freeze_support()  # pool processes re-enter here; must come first

from stem_cli.worker import main_entry  # noqa: E402

main_entry()
