"""The supervisor: claims jobs, hands them to worker processes, writes their outcomes back.

`loop` is the supervision loop (signals, workers, claims, deadlines) and hands the rest to
modules named for what they decide: `outcomes` (what happens to a job when its attempt ends),
`pacing` (how much to claim and queue), `writeback` (writing outcomes in batches),
`store_health`, `housekeeping` (heartbeats, recovery, pruning), `claims`, `job_events`
(counting and logging transitions) and `status` (title, systemd, views).
"""

from jobd.supervisor.loop import BootError, Supervisor, new_node_id
from jobd.supervisor.settings import SupervisorSettings

__all__ = ["BootError", "Supervisor", "SupervisorSettings", "new_node_id"]
