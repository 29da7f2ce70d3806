"""A parent run as `python -m tests.preload.probe`, as `jobd run` is under `python -m
jobd.cli`: it starts two workers through jobd's WorkerFactory and prints their pids."""

import tests.preload.marker  # noqa: F401  (a module the parent imports, as jobd.cli does)
from jobd.pipe import Ready, Stop
from jobd.workers import WorkerFactory

if __name__ == "__main__":
    factory = WorkerFactory(["jobd.handlers.builtin"])
    workers = [factory.spawn(i) for i in (1, 2)]
    for w in workers:
        assert w.conn.poll(30) and isinstance(w.receive(), Ready)
        w.send(Stop())
        w.process.join(30)
    print(" ".join(str(w.pid) for w in workers))
