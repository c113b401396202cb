import os
import stat
import subprocess
from pathlib import Path

import pytest

from torchyard.contract.ports import DEFAULT_MASTER_PORT, slurm_port, slurm_port_shell
from torchyard.trainer.config import ConfigError
from torchyard.trainer.dist import DistEnv, first_slurm_host, parse_launcher_env

TORCHRUN_ENV = {  # rank 5 of 2 nodes x 4 processes, as torchrun exports it on the second node
    "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
    "MASTER_ADDR": "digits-mlp-node-0.digits-mlp", "MASTER_PORT": "29500",
    "GROUP_RANK": "1", "TORCHELASTIC_RUN_ID": "none",
}
SLURM_ENV = {  # task 6 of `srun --nodes=2 --ntasks-per-node=4` in job 123456
    "SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_NTASKS": "8", "SLURM_NNODES": "2",
    "SLURM_JOB_NODELIST": "gpu[003-004]", "SLURM_JOB_ID": "123456", "SLURM_NODEID": "1",
}
MPI_ENV = {
    "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29600",
}


@pytest.fixture
def no_scontrol(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def fake_scontrol(directory: Path, hostnames: list[str]) -> Path:
    """An `scontrol` that answers `scontrol show hostnames LIST` with ``hostnames``, one a line."""
    directory.mkdir(exist_ok=True)
    script = directory / "scontrol"
    body = "\n".join(hostnames)
    script.write_text(f'#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 2\nprintf "%s\\n" "{body}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


# ---- none / pytorch ----------------------------------------------------------------------------------


def test_none_is_a_single_process_whatever_the_environment() -> None:
    info = parse_launcher_env("none", TORCHRUN_ENV)

    assert info == DistEnv()
    assert not info.distributed and info.is_main


def test_pytorch_reads_torchrun_variables() -> None:
    info = parse_launcher_env("pytorch", TORCHRUN_ENV)

    assert info == DistEnv(rank=5, world_size=8, local_rank=1, local_world_size=4,
                           master_addr="digits-mlp-node-0.digits-mlp", master_port=29500)
    assert info.distributed and not info.is_main


def test_pytorch_local_world_size_defaults_to_world_size() -> None:
    env = {k: v for k, v in TORCHRUN_ENV.items() if k != "LOCAL_WORLD_SIZE"}

    assert parse_launcher_env("pytorch", env).local_world_size == 8


@pytest.mark.parametrize("name", ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"])
def test_pytorch_missing_variable_names_it_and_says_use_torchrun(name: str) -> None:
    env = {k: v for k, v in TORCHRUN_ENV.items() if k != name}

    with pytest.raises(ConfigError, match=rf"--launcher pytorch: environment variable\(s\) {name} ") as err:
        parse_launcher_env("pytorch", env)
    assert "torchrun" in str(err.value)


def test_pytorch_empty_variable_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        parse_launcher_env("pytorch", {**TORCHRUN_ENV, "MASTER_ADDR": ""})


@pytest.mark.parametrize(("name", "value"),
                         [("RANK", "five"), ("WORLD_SIZE", "8.0"), ("MASTER_PORT", "auto")])
def test_pytorch_non_integer_value_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}='{value}' is not an integer"):
        parse_launcher_env("pytorch", {**TORCHRUN_ENV, name: value})


# ---- slurm -------------------------------------------------------------------------------------------


def test_slurm_reads_srun_variables_and_derives_port_from_job_id(no_scontrol: None) -> None:
    info = parse_launcher_env("slurm", SLURM_ENV)

    assert info.rank == 6 and info.world_size == 8 and info.local_rank == 2
    assert info.local_world_size == 4
    assert info.master_addr == "gpu003"
    assert info.master_port == slurm_port(int(SLURM_ENV["SLURM_JOB_ID"]))
    assert info.master_port != DEFAULT_MASTER_PORT and 1024 < info.master_port < 65536


def test_slurm_two_jobs_on_one_node_get_different_ports(no_scontrol: None) -> None:
    ports = {parse_launcher_env("slurm", {**SLURM_ENV, "SLURM_JOB_ID": job}).master_port
             for job in ("123456", "123457", "987")}

    assert len(ports) == 3


def test_slurm_port_is_the_same_for_every_task_of_a_job(no_scontrol: None) -> None:
    envs = [{**SLURM_ENV, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % 4)} for rank in range(8)]

    ports = {parse_launcher_env("slurm", env).master_port for env in envs}

    assert len(ports) == 1


def test_slurm_master_port_and_addr_when_set_win(no_scontrol: None) -> None:
    env = {**SLURM_ENV, "MASTER_PORT": "31000", "MASTER_ADDR": "login-vip"}

    info = parse_launcher_env("slurm", env)

    assert (info.master_addr, info.master_port) == ("login-vip", 31000)


def test_slurm_job_id_is_not_needed_when_master_port_is_set(no_scontrol: None) -> None:
    env = {k: v for k, v in SLURM_ENV.items() if k != "SLURM_JOB_ID"}

    assert parse_launcher_env("slurm", {**env, "MASTER_PORT": "31000"}).master_port == 31000


def test_slurm_without_nnodes_assumes_one_node(no_scontrol: None) -> None:
    env = {k: v for k, v in SLURM_ENV.items() if k != "SLURM_NNODES"}

    assert parse_launcher_env("slurm", env).local_world_size == 8


@pytest.mark.parametrize("name", ["SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_NODELIST",
                                  "SLURM_JOB_ID"])
def test_slurm_missing_variable_names_it_and_says_use_srun(name: str, no_scontrol: None) -> None:
    env = {k: v for k, v in SLURM_ENV.items() if k != name}

    with pytest.raises(ConfigError, match=rf"--launcher slurm: environment variable\(s\) {name} not") as err:
        parse_launcher_env("slurm", env)
    assert "srun" in str(err.value)


@pytest.mark.parametrize("name", ["SLURM_NTASKS", "SLURM_NNODES", "SLURM_JOB_ID"])
def test_slurm_non_integer_value_is_a_config_error(name: str, no_scontrol: None) -> None:
    with pytest.raises(ConfigError, match=rf"--launcher slurm: {name}='2\(x2\)' is not an integer"):
        parse_launcher_env("slurm", {**SLURM_ENV, name: "2(x2)"})


# ---- mpi ---------------------------------------------------------------------------------------------


def test_mpi_reads_open_mpi_variables() -> None:
    info = parse_launcher_env("mpi", MPI_ENV)

    assert info == DistEnv(rank=3, world_size=4, local_rank=1, local_world_size=2, master_addr="10.0.0.7",
                           master_port=29600)


def test_mpi_defaults_port_and_local_size() -> None:
    env = {k: v for k, v in MPI_ENV.items() if k not in ("MASTER_PORT", "OMPI_COMM_WORLD_LOCAL_SIZE")}

    info = parse_launcher_env("mpi", env)

    assert (info.master_port, info.local_world_size) == (DEFAULT_MASTER_PORT, 4)


def test_mpi_single_process_needs_no_master_addr() -> None:
    env = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}

    info = parse_launcher_env("mpi", env)

    assert not info.distributed and info.master_addr == "127.0.0.1"


@pytest.mark.parametrize("name",
                         ["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"])
def test_mpi_missing_variable_names_it_and_says_use_mpirun(name: str) -> None:
    env = {k: v for k, v in MPI_ENV.items() if k != name}

    with pytest.raises(ConfigError, match=rf"--launcher mpi: environment variable\(s\) {name} not") as err:
        parse_launcher_env("mpi", env)
    assert "mpirun" in str(err.value)


def test_mpi_several_processes_without_master_addr_says_how_to_export_it() -> None:
    env = {k: v for k, v in MPI_ENV.items() if k != "MASTER_ADDR"}

    with pytest.raises(ConfigError, match=r"MASTER_ADDR is not set.*mpirun -x MASTER_ADDR"):
        parse_launcher_env("mpi", env)


def test_mpi_non_integer_local_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OMPI_COMM_WORLD_LOCAL_SIZE='two' is not an integer"):
        parse_launcher_env("mpi", {**MPI_ENV, "OMPI_COMM_WORLD_LOCAL_SIZE": "two"})


def test_unknown_launcher_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'torchrun' is unknown; choose one of none, pytorch, slurm, mpi"):
        parse_launcher_env("torchrun", TORCHRUN_ENV)


# ---- first_slurm_host --------------------------------------------------------------------------------


@pytest.mark.parametrize(("nodelist", "first"), [
    ("node01", "node01"),
    ("gpu[003-005,007]", "gpu003"),
    ("gpu[007,003-005]", "gpu007"),
    ("a[1-2],b3", "a1"),
    ("b3,a[1-2]", "b3"),
    ("node[3-4]-ib", "node3-ib"),
    ("rack[1-2]-gpu[01-04],cpu01", "rack1-gpu01"),
    (" node01 ", "node01"),
])
def test_first_slurm_host_expands_list_without_scontrol(nodelist: str, first: str, no_scontrol: None) -> None:
    assert first_slurm_host(nodelist) == first


def test_first_slurm_host_unreadable_list_is_a_config_error(no_scontrol: None) -> None:
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST=','"):
        first_slurm_host(",")


def test_first_slurm_host_asks_scontrol_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The answer differs from the hand expansion ("gpu003") to show scontrol's is the one used.
    monkeypatch.setenv("PATH", str(fake_scontrol(tmp_path / "bin", ["gpu-a", "gpu-b"])) + os.pathsep
                       + os.environ.get("PATH", ""))

    assert first_slurm_host("gpu[003-004]") == "gpu-a"


def test_first_slurm_host_falls_back_when_scontrol_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text("#!/bin/sh\necho 'scontrol: error: no controller' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))

    assert first_slurm_host("gpu[003-004]") == "gpu003"


def test_slurm_master_addr_comes_from_scontrol(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(fake_scontrol(tmp_path / "bin", ["gpu003.cluster", "gpu004.cluster"])))

    assert parse_launcher_env("slurm", SLURM_ENV).master_addr == "gpu003.cluster"


def test_slurm_port_rule_is_the_one_the_sbatch_scripts_use(no_scontrol: None) -> None:
    """The trainer's --launcher slurm and the scripts' shell arithmetic agree on every job's port."""
    for job_id in (1, 123456, 2**31 - 1):
        shell = subprocess.run(["/bin/bash", "-c", f"SLURM_JOB_ID={job_id}; echo {slurm_port_shell()}"],
                               capture_output=True, text=True, check=True).stdout
        info = parse_launcher_env("slurm", {**SLURM_ENV, "SLURM_JOB_ID": str(job_id)})
        assert info.master_port == int(shell) == slurm_port(job_id)
