"""`torchyard slurm submit | status | cancel | logs | list`: run job files through sbatch (see cli/main.py).

    torchyard slurm submit examples/trainjob.yaml            # prints the job id; --wait, --follow, --dry-run
    torchyard slurm status digits-mlp                        # or a job id, or the job file
    torchyard slurm logs -f digits-mlp
    torchyard slurm cancel digits-mlp
    torchyard slurm list

Job ids go to stdout, everything else to stderr, so `id=$(torchyard slurm submit f.yaml)` works. Exit codes:
0 done (with --wait: the job COMPLETED), 1 a Slurm error or a job that failed or cannot start, 2 a bad file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

from torchyard.contract import workdir
from torchyard.operator.api.jobfile import load_jobs, train_job_of
from torchyard.operator.cli.help import add_command
from torchyard.operator.errors import SlurmError, Unschedulable
from torchyard.operator.slurm.bridge import (
    SCRIPT,
    Record,
    find_record,
    local_records,
    log_paths,
    read_progress,
    read_record,
    submit_jobs,
    wait_for_job,
)
from torchyard.operator.slurm.client import SlurmClient
from torchyard.operator.slurm.observe import Observation, base_state, job_phase, task_states
from torchyard.operator.slurm.render import render_slurm


def register(commands: argparse._SubParsersAction) -> None:
    slurm = add_command(commands, "slurm", "submit job files to Slurm and follow them (sbatch, squeue)",
                        "torchyard slurm submit examples/trainjob.yaml --follow", "torchyard slurm list")
    actions = slurm.add_subparsers(dest="slurm_command", required=True, metavar="ACTION")

    submit = add_command(actions, "submit", "render, sbatch and record every job in FILE; print job ids",
                         "torchyard slurm submit examples/trainjob.yaml --wait")
    submit.add_argument("file", metavar="FILE", help="a YAML file of one or more TrainJobs/TestJobs")
    submit.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")
    submit.add_argument(
        "--wait", action="store_true", help="wait until the job finishes; exit 0 if COMPLETED"
    )
    submit.add_argument("--follow", action="store_true", help="like --wait, printing the job's output")
    submit.add_argument(
        "--train-job", type=Path, metavar="FILE", help="file with the TrainJob a TestJob's fromTrainJob names"
    )
    submit.set_defaults(func=_slurm(submit_command))

    target_help = "job name, Slurm job id, or job file"
    status = add_command(actions, "status", "state, reason, nodes, elapsed, exit code, last checkpoint",
                         "torchyard slurm status digits-mlp")
    status.add_argument("target", metavar="NAME|ID", help=target_help)
    status.set_defaults(func=_slurm(status_command))

    cancel = add_command(actions, "cancel", "scancel the job", "torchyard slurm cancel digits-mlp")
    cancel.add_argument("target", metavar="NAME|ID", help=target_help)
    cancel.set_defaults(func=_slurm(cancel_command))

    logs = add_command(actions, "logs", "print the job's output (stdout, then stderr)",
                       "torchyard slurm logs digits-mlp --follow")
    logs.add_argument("target", metavar="NAME|ID", help=target_help)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job finishes")
    logs.add_argument("--run", type=int, metavar="N", help="of a sweep (slurm.sweep): the run to print")
    logs.set_defaults(func=_slurm(logs_command))

    listing = add_command(actions, "list", "torchyard jobs: recorded under ./work_dirs and queued in Slurm",
                          "torchyard slurm list")
    listing.set_defaults(func=_slurm(list_command))


def _slurm(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except SlurmError as err:
            _say(args, str(err))
            return 1

    return run


def _say(args: argparse.Namespace, message: str) -> None:
    print(f"torchyard slurm {args.slurm_command}: {message}", file=sys.stderr, flush=True)


def submit_command(args: argparse.Namespace) -> int:
    jobs = load_jobs(args.file)
    extra = load_jobs(args.train_job) if args.train_job else []
    if args.dry_run:
        for job in jobs:
            sys.stdout.write(render_slurm(job, train_job_of(job, jobs, extra)))
        return 0
    client = SlurmClient()

    def submitted(record: Record, after: str | None) -> None:
        print(record.job_id, flush=True)
        waits = f", after job {after} succeeds" if after else ""
        first_log = log_paths(record, run=0 if record.runs else None)[0]
        _say(args, f"{record.kind} {record.name} is Slurm job {record.job_id}{waits}{_sweep_note(record)}; "
                   f"logs: {first_log}")
        _check_startable(client, record)

    records = submit_jobs(jobs, extra, client, on_submitted=submitted)
    if not (args.wait or args.follow):
        return 0
    code = 0
    for record in records:
        code = max(code, _wait(args, client, record, follow=args.follow))
    return code


def _sweep_note(record: Record) -> str:
    if not record.runs:
        return ""
    last = len(record.runs) - 1
    return f", a sweep of {len(record.runs)} runs (array tasks 0-{last}, each in <work dir>/N/)"


def _check_startable(client: SlurmClient, record: Record) -> None:
    """A request that can never be met fails the submission at once (the job is cancelled)."""
    info = client.show_job(record.job_id)
    if info is not None and job_phase(info).unsatisfiable:
        _cancel_unschedulable(client, record, job_phase(info).message)


def _cancel_unschedulable(client: SlurmClient, record: Record, message: str) -> None:
    client.cancel(record.job_id)
    raise Unschedulable(f"{message}. Cancelled job {record.job_id}.")


def _wait(args: argparse.Namespace, client: SlurmClient, record: Record, follow: bool) -> int:
    def changed(info: dict[str, str], seen: Observation) -> None:
        record.remember(info)
        _say(args, f"job {record.job_id} {base_state(info.get('JobState', ''))}: {seen.message}")

    if follow and record.runs:
        _say(args, f"{record.name} is a sweep: its runs' states follow; for one run's output, "
                   f"torchyard slurm logs {record.name} --run N --follow")
    tail = _Tail(record) if follow and not record.runs else None
    try:
        info = wait_for_job(client, record.job_id, changed, tick=tail.poll if tail else lambda: None)
    except Unschedulable as err:
        _cancel_unschedulable(client, record, str(err))
    if tail:
        tail.poll()
    if info is None:
        _say(args, f"job {record.job_id} finished; Slurm no longer reports its state")
        return 1
    return 0 if base_state(info.get("JobState", "")) == "COMPLETED" else 1


class _Tail:
    """Prints what the job's stdout/stderr files gained since the last poll."""

    def __init__(self, record: Record, job_id: str | None = None, run: int | None = None) -> None:
        self.files = list(zip(log_paths(record, job_id, run), (sys.stdout, sys.stderr), strict=True))
        self.offsets = [0, 0]

    def poll(self) -> None:
        for i, (path, stream) in enumerate(self.files):
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offsets[i])
                    data = handle.read()
            except OSError:
                continue
            if data:
                self.offsets[i] += len(data)
                stream.write(data.decode(errors="replace"))
                stream.flush()


def _resolve(args: argparse.Namespace, client: SlurmClient) -> tuple[Record | None, str]:
    record = find_record(args.target, client)
    if record is not None:
        return record, record.job_id
    if args.target.isdigit():
        return None, args.target
    raise SlurmError(
        f"no job {args.target!r}: no record in work_dirs/{args.target}/ and no such job in squeue; "
        "pass the job id or the job file"
    )


def status_command(args: argparse.Namespace) -> int:
    client = SlurmClient()
    record, job_id = _resolve(args, client)
    info = client.show_job(job_id)
    if info is None and record is None:
        raise SlurmError(f"Slurm does not know job {job_id} (finished long ago, or never existed)")
    rows: list[tuple[str, str]] = [("job", job_id + (f" ({record.kind} {record.name})" if record else ""))]
    if info is not None:
        if record is not None:
            record.remember(info)
        seen = job_phase(info)
        rows += [
            ("state", f"{base_state(info.get('JobState', ''))} -> {seen.phase.value} ({seen.reason})"),
            ("reason", info.get("Reason", "")),
            ("message", seen.message),
            ("nodes", info.get("NodeList") or "(none yet)"),
            ("elapsed", info.get("RunTime", "")),
            ("time limit", info.get("TimeLimit", "")),
            ("exit code", info.get("ExitCode", "")),
            ("restarts", info.get("Restarts", "0")),
        ]
    else:
        rows += [
            ("state", f"{record.last_state or 'unknown'} (last seen; Slurm has forgotten the job)"),
            ("exit code", record.exit_code or "unknown"),
        ]
    if record is not None and record.runs:
        rows += [("work dir", record.work_dir), ("logs", f"{record.work_dir}/N/slurm-{job_id}_N.out")]
    elif record is not None:
        metrics = workdir.last_val_metrics(record.work_dir)
        rows += [
            ("checkpoint", workdir.read_pointer(record.work_dir, "latest") or "(none yet)"),
            ("metrics", "  ".join(f"{k}: {v:.4g}" for k, v in metrics.items()) or "(none yet)"),
            ("work dir", record.work_dir),
            ("logs", str(log_paths(record, job_id)[0])),
        ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if record is not None and record.runs:
        _print_runs(read_progress(record.kind, record.work_dir, record.runs, task_states(info or {}))["runs"])
    return 0


def _print_runs(runs: list[dict]) -> None:
    """A sweep's runs, one line each: what each tried and what it reached."""
    table = [("RUN", "STATE", "METRICS", "CHECKPOINT", "OPTIONS")]
    for run in runs:
        metrics = "  ".join(f"{k}: {v:.4g}" for k, v in run.get("metrics", {}).items()) or "-"
        checkpoint = run.get("bestCheckpoint") or run.get("lastCheckpoint") or "-"
        options = " ".join(run["cfgOptions"])
        table.append((str(run["index"]), run.get("state", "?"), metrics, checkpoint, options))
    print()
    _print_table(table)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(value.ljust(width) for value, width in zip(r, widths, strict=True)).rstrip())


def cancel_command(args: argparse.Namespace) -> int:
    client = SlurmClient()
    record, job_id = _resolve(args, client)
    client.cancel(job_id)
    name = f" ({record.kind} {record.name})" if record else ""
    _say(args, f"cancelled job {job_id}{name}")
    return 0


def logs_command(args: argparse.Namespace) -> int:
    client = SlurmClient()
    record, job_id = _resolve(args, client)
    if record is None:
        info = client.show_job(job_id) or {}
        script = Path(info.get("Command", ""))
        record = read_record(script.parent) if script.name == SCRIPT else None
        if record is None:
            raise SlurmError(
                f"job {job_id} was not submitted by torchyard; see its StdOut in scontrol show job"
            )
    tail = _Tail(record, job_id, args.run)
    tail.poll()
    if args.follow:
        wait_for_job(client, job_id, tick=tail.poll)
        tail.poll()
    return 0


def _array_row(client: SlurmClient, job_id: str) -> dict[str, str] | None:
    """A sweep's row for list: squeue lists its runs apart (<id>_<task>), so its state is theirs together."""
    info = client.show_job(job_id)
    if info is None:
        return None
    runs = task_states(info)
    return {"JobState": f"{base_state(info.get('JobState', ''))} ({len(runs)} runs)",
            "Reason": info.get("Reason", ""), "RunTime": info.get("RunTime", ""),
            "NodeList": info.get("NodeList", "")}  # fmt: skip


def list_command(args: argparse.Namespace) -> int:
    client = SlurmClient()
    records = {r.job_id: r for r in local_records()}
    queued = {row["JobId"]: row for row in client.jobs() if Path(row.get("Command", "")).name == SCRIPT}
    for job_id, row in queued.items():
        if job_id not in records:
            found = read_record(Path(row["Command"]).parent)
            if found is not None and found.job_id == job_id:
                records[job_id] = found
    header = ("JOBID", "KIND", "NAME", "STATE", "REASON", "ELAPSED", "NODES", "WORK DIR")
    rows = [header]
    for job_id, record in sorted(records.items(), key=lambda item: int(item[0])):
        row = queued.get(job_id) or (_array_row(client, job_id) if record.runs else None)
        state = row["JobState"] if row else (record.last_state or "?") + "*"
        rows.append(
            (
                job_id,
                record.kind,
                record.name,
                state,
                row["Reason"] if row else record.last_reason,
                row["RunTime"] if row else "",
                row["NodeList"] if row else "",
                record.work_dir,
            )
        )
    _print_table(rows)
    if any(not queued.get(job_id) and not records[job_id].runs for job_id in records):
        print("* last state seen; Slurm no longer lists the job", file=sys.stderr)
    return 0
