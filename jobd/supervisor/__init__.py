"""The supervisor: claims jobs, hands them to worker processes, writes their outcomes back.

`loop` is the supervision loop (signals, workers, claims, deadlines); it hands the rest to
modules named for what they decide:

- `outcomes`: what happens to a job when its attempt ends (pure);
- `pacing`: how much to claim and how many jobs each worker may hold (pure);
- `dispatch`: the claim in flight, beside the write-back, and the hand-out after it;
  `claims`: when to claim, and the claim statements; `handout`: the claimed jobs and who gets
  them;
- `reports`: what a worker's messages and its death mean for its jobs;
- `deadlines`: stopping a job at its timeout, on a cancel or at the end of a drain;
- `writeback`: the outcomes waiting to be written, written in batches;
- `store_health`: whether the store answers; `housekeeping`: heartbeats, lease recovery,
  maintenance and pruning;
- `job_events`: counting and logging each job transition; `status`: the process title,
  systemd, the views of the workers;
- `settings`: the part of the configuration the supervisor reads; `event_loop`: both
  threads' event loops (uvloop's when installed).
"""

from jobd.supervisor.loop import BootError, Supervisor, new_node_id
from jobd.supervisor.settings import SupervisorSettings

__all__ = ["BootError", "Supervisor", "SupervisorSettings", "new_node_id"]
