"""Imported by tests.preload.probe: records the pid of each process that imports it."""

import os

with open(os.environ["JOBD_PRELOAD_LOG"], "a") as log:
    log.write(f"{os.getpid()}\n")
