"""Entry of the frozen producer (build/enqueue/bundle/bin/enqueue)."""

import multiprocessing

multiprocessing.freeze_support()

from stem_cli.enqueue import main_entry  # noqa: E402

main_entry()
