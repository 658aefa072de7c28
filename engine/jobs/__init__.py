"""Jobs: the job file (TOML, validated with every error at once), the job state machine
(pure: events in, state and instructions out; the output directory's lock rules), the runner
(a front over the stages, resumable; each stage's call in _stage_calls), an increment's
``[increment]`` and its previous job's checks (_increment), one record per run and the registry of jobs, the
directory's lock, and the structured job log (NIRs masked)."""

from nirlink.kernels._lazy import lazy_front

_LAZY = {
    "._spec": ("JobSpec", "STAGES", "load_job", "parse_job"),
    "._state": ("JobState", "TERMINAL", "apply"),
    "._runner": ("Job",),
    "._registry": ("find_job", "find_run", "job_paths", "latest_run", "list_jobs", "new_job_id", "read_state",
                   "register_job", "request_cancel", "version"),
    "._joblog": ("JobLog", "mask_fields", "mask_nirs"),
}

__all__ = [name for names in _LAZY.values() for name in names]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
