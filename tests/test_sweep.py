"""Sweeps as submitit jobs (cvaia.cluster): local jobs are real subprocesses on the CPU; the
SLURM path runs up to ``sbatch``, which a stand-in script answers (no cluster here)."""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

import pytest
from helpers import tiny_config
from submitit.helpers import DelayedSubmission

import cvaia.train
from cvaia import cluster
from cvaia.__main__ import main
from cvaia.commands import sweep as command
from cvaia.commands.sweep import parse_grid
from cvaia.config import ConfigError, make_config
from cvaia.runs import Run, get_run, run_dir_for, sweep

tiny_cfg = partial(tiny_config, max_val_images=2)


@pytest.fixture()
def job_env(isolated_dirs, monkeypatch):
    """Isolated store; one thread per job process; no fault injection unless a test sets it."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.delenv(cluster.FAULT_ENV, raising=False)
    return isolated_dirs


@pytest.fixture()
def no_training_here(monkeypatch):
    """Training in this (the submitting) process fails the test: jobs must train elsewhere."""
    def boom(*a, **k):
        raise AssertionError("trained in the submitting process, not in a job")

    monkeypatch.setattr(cvaia.train, "train", boom)


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch):
    """``srun`` and ``sbatch`` stand-ins on PATH: sbatch answers like SLURM, submits nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho \"Submitted batch job 4242\"\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _wait_ended(job, timeout_s=120.0):
    t0 = time.monotonic()
    while not job.done():
        assert time.monotonic() - t0 < timeout_s, f"job {job.job_id} still running after {timeout_s} s"
        time.sleep(0.2)


# ---- local jobs (subprocesses) ---------------------------------------------------------------------
@pytest.mark.slow
def test_two_config_grid_runs_as_two_local_jobs(tiny_root, job_env, no_training_here):
    cfg = tiny_cfg(tiny_root)
    ex = cluster.executor_from_name("local", array_parallelism=2)
    got = sweep(cfg, {"optimizer_lr": [1e-3, 1e-4]}, executor=ex)
    assert all(isinstance(r, Run) and r.is_done for r in got)
    assert [r.config.optimizer_lr for r in got] == [1e-3, 1e-4]
    assert [r.path for r in got] == [run_dir_for(c) for c in (cfg, cfg.replace(optimizer_lr=1e-4))]
    # two jobs, each its own process, logs under <store>/_submitit/<job id>/
    logs = sorted((job_env["runs"] / "_submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2 and len({p.parent.name for p in logs}) == 2
    assert all("Job completed successfully" in p.read_text() for p in logs)

    # Submitting the finished sweep again submits nothing and returns the same runs.
    again = sweep(cfg, {"optimizer_lr": [1e-3, 1e-4]}, executor=cluster.executor_from_name("local", wait=False))
    assert again.jobs == {} and len(again.finished) == 2
    table = again.results_table()
    assert list(table["optimizer_lr"]) == [1e-3, 1e-4] and table["miou"].notna().all()


@pytest.mark.slow
def test_killed_job_resumes_on_resubmission(tiny_root, job_env, monkeypatch, no_training_here):
    cfg = tiny_cfg(tiny_root, num_epochs=2, log_every=1)
    run_dir = run_dir_for(cfg)
    monkeypatch.setenv(cluster.FAULT_ENV, "1:KILL")  # SIGKILL right after epoch 1's checkpoint
    first = sweep(cfg, {}, executor=cluster.executor_from_name("local", wait=False))
    (job,) = first.jobs.values()
    _wait_ended(job)
    assert not (run_dir / "done.json").exists() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert json.loads((run_dir / "config.json").read_text())["resumed"] == []

    monkeypatch.delenv(cluster.FAULT_ENV)
    (run,) = sweep(cfg, {}, executor=cluster.executor_from_name("local"))
    assert run.path == run_dir and run.is_done
    assert [(r["at_epoch"], r["at_step"]) for r in run.meta["resumed"]] == [(1, 2)]
    assert list(run.epochs.epoch) == [1, 2] and list(run.history.step) == [1, 2, 3, 4]


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes(tiny_root, job_env, monkeypatch, no_training_here):
    """SIGUSR2 (SLURM's pre-emption / time-limit signal): submitit calls TrainJob.checkpoint and
    requeues the job, which resumes the run. Submitted with force=True: the requeued call must
    not force (that would restart the run afresh and move the partial one aside)."""
    cfg = tiny_cfg(tiny_root, num_epochs=2, seed=1)
    monkeypatch.setenv(cluster.FAULT_ENV, "1:USR2")
    (run,) = sweep(cfg, {}, force=True, executor=cluster.executor_from_name("local"))
    assert run.is_done
    assert [r["at_epoch"] for r in run.meta["resumed"]] == [1]
    assert list(run.epochs.epoch) == [1, 2]
    assert not list(run.path.parent.glob(run.path.name + ".old-*"))
    (log,) = (job_env["runs"] / "_submitit").glob("*/*_0_log.out")
    text = log.read_text()
    assert "this job is preempted" in text and "Requeued job" in text
    assert text.count("Job completed successfully") == 1
    # the requeued call that finished the run: same config, no force
    (pickle,) = log.parent.glob("*_submitted.pkl")
    requeued = DelayedSubmission.load(pickle).function
    assert isinstance(requeued, cluster.TrainJob) and not requeued.force
    assert requeued.cfg.config_hash() == cfg.config_hash()


@pytest.mark.slow
def test_gpus_style_tasks_train_one_ddp_run(tiny_root, job_env, no_training_here):
    """tasks_per_node=2 on the CPU: submitit starts 2 processes, each a DDP rank (gloo)."""
    cfg = tiny_cfg(tiny_root, batch_size=2, seed=2)
    (run,) = sweep(cfg, {}, executor=cluster.executor_from_name("local", tasks_per_node=2))
    assert run.is_done and run.meta["world_size"] == 2
    assert run.done["summary"]["world_size"] == 2
    logs = sorted((job_env["runs"] / "_submitit").glob("*/*_log.out"))
    assert [p.name.split("_")[1] for p in logs] == ["0", "1"]  # one log per task


def test_failed_job_is_reported_with_its_run(tiny_root, job_env, tmp_path):
    bad = tiny_cfg(tmp_path / "no_such_data")
    with pytest.raises(cluster.SweepError) as info:
        sweep(bad, {}, executor=cluster.executor_from_name("local"))
    (run_dir, message), = info.value.failures
    assert run_dir == run_dir_for(bad)
    assert "no_such_data" in message and "log" in message
    assert info.value.runs == [None]


@pytest.mark.slow
def test_diverged_runs_are_results_or_errors(tiny_root, job_env, no_training_here):
    """diverged="none" (the notebooks' grids): a run that diverges in its job is None; asked
    again it is None without a job. The default raises before anything is submitted."""
    from cvaia.runs import TrainingDiverged

    cfg = tiny_cfg(tiny_root, optimizer="sgd", optimizer_lr=1e30, log_every=1)
    ex = cluster.executor_from_name("local")
    assert ex.run_configs([cfg, cfg.replace(workers=0)], diverged="none") == [None, None]
    assert Run(run_dir_for(cfg)).diverged["step"] >= 1
    again = cluster.executor_from_name("local", wait=False).run_configs([cfg], diverged="none")
    assert again.jobs == {} and again.wait() == [None]
    with pytest.raises(TrainingDiverged, match="recorded earlier"):
        sweep(cfg, {}, executor=ex)


# ---- submitit's debug executor (in this process) ---------------------------------------------------
def test_duplicate_configs_are_submitted_and_trained_once(tiny_root, job_env, monkeypatch):
    calls = []
    real_train = cvaia.train.train

    def counting(cfg, *a, **k):
        calls.append(cfg.config_hash())
        return real_train(cfg, *a, **k)

    monkeypatch.setattr(cvaia.train, "train", counting)
    cfg = tiny_cfg(tiny_root)
    grid = {"workers": [0, 2], "quiet": [True, False]}  # fields outside the hash: one config
    submitted = sweep(cfg, grid, executor=cluster.executor_from_name("debug", wait=False))
    assert len(submitted.configs) == 4 and len(submitted.jobs) == 1
    got = submitted.wait()
    assert len(got) == 4 and len({r.path for r in got}) == 1 and got[0].is_done
    assert calls == [cfg.config_hash()]
    # what the job ran: TrainJob (checkpointable) of that config, store pinned
    (job,) = submitted.jobs.values()
    fn = job.submission().function
    assert isinstance(fn, cluster.TrainJob) and hasattr(fn, "checkpoint")
    assert fn.environ["CVAIA_RUNS_DIR"] == str(job_env["runs"].resolve())
    # the in-process sweep gives the same runs
    assert sweep(cfg, grid) == got


# ---- SLURM: up to sbatch --------------------------------------------------------------------------
def test_slurm_array_parameters_and_batch_script(tiny_root, job_env, fake_slurm):
    cfg = tiny_cfg(tiny_root)
    get_run(cfg)  # a finished run is not submitted again
    ex = cluster.executor_from_name(
        "slurm", wait=False, partition="gpu", gpus_per_node=2, timeout_min=90, mem_gb=32,
        cpus_per_task=8, array_parallelism=2, account="my_lab", qos="high", constraint="a100",
        setup=["module load cuda/12"], additional_parameters={"mail-type": "END"})
    built = ex.build(job_env["runs"] / "check" / "%j")
    params = built.parameters
    assert {k: params[k] for k in ("partition", "gpus_per_node", "ntasks_per_node", "time", "mem",
                                   "cpus_per_task", "array_parallelism", "account", "qos",
                                   "constraint", "setup", "additional_parameters", "job_name")} == {
        "partition": "gpu", "gpus_per_node": 2, "ntasks_per_node": 2, "time": 90, "mem": "32GB",
        "cpus_per_task": 8, "array_parallelism": 2, "account": "my_lab", "qos": "high",
        "constraint": "a100", "setup": ["module load cuda/12"],
        "additional_parameters": {"mail-type": "END"}, "job_name": "cvaia-sweep"}

    grid = {"optimizer_lr": [1e-3, 1e-4, 1e-5], "workers": [0, 2]}  # 6 points, 3 configs, 1 finished
    submitted = sweep(cfg, grid, executor=ex)
    assert len(submitted.configs) == 6 and len(submitted.finished) == 1
    assert sorted(submitted.job_ids) == ["4242_0", "4242_1"]
    assert submitted.folder == job_env["runs"].resolve() / "_submitit" / "%j"
    script = (job_env["runs"] / "_submitit" / "4242" / "4242_submission.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --time=90", "#SBATCH --mem=32GB",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --account=my_lab", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --mail-type=END", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=cvaia-sweep", "module load cuda/12"):
        assert line in script.splitlines(), line
    assert "srun" in script and "submitit.core._submit" in script
    # each array task's pickle: the TrainJob of one of the two unfinished configs
    hashes = set()
    for job in submitted.jobs.values():
        fn = DelayedSubmission.load(job.paths.submitted_pickle).function
        assert isinstance(fn, cluster.TrainJob) and not fn.force
        hashes.add(fn.cfg.config_hash())
    assert hashes == {cfg.replace(optimizer_lr=lr).config_hash() for lr in (1e-4, 1e-5)}


def test_sweep_command_submits_a_slurm_array(tiny_root, job_env, fake_slurm, capsys):
    rc = main(["sweep", "--grid", "optimizer_lr=1e-4,1e-5", "--executor", "slurm", "--no_wait",
               "--partition", "gpu", "--gpus_per_node", "4", "--timeout_min", "30", "--qos", "low",
               "--slurm_setup", "source env.sh", "--slurm_param", "mail-type=END",
               "--dataset_root", str(tiny_root), "--num_epochs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2 job(s) submitted (slurm): 4242_0 4242_1" in out
    script = (job_env["runs"] / "_submitit" / "4242" / "4242_submission.sh").read_text().splitlines()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --time=30", "#SBATCH --qos=low",
                 "#SBATCH --mail-type=END", "source env.sh"):
        assert line in script, line


def test_slurm_needs_a_cluster(job_env, monkeypatch, tiny_root):
    monkeypatch.setenv("PATH", "/nonexistent")
    ex = cluster.executor_from_name("slurm")
    with pytest.raises(ConfigError, match="srun"):
        sweep(tiny_cfg(tiny_root, seed=5), {}, executor=ex)


# ---- the DDP variables of a task -------------------------------------------------------------------
def test_torch_distributed_env_from_slurm_variables(monkeypatch):
    for var in ("SUBMITIT_EXECUTOR", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    slurm = dict(SLURM_JOB_ID="77", SLURM_NTASKS="8", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="1",
                 SLURM_PROCID="5", SLURM_LOCALID="1", SLURM_JOB_NODELIST="gpu[03-04]")
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    env = cluster.torch_distributed_env()
    port = int(env.pop("MASTER_PORT"))
    assert env == {"MASTER_ADDR": "gpu03", "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                   "LOCAL_WORLD_SIZE": "4"}
    assert 20000 <= port <= 60000 and cluster.torch_distributed_env()["MASTER_PORT"] == str(port)
    # one node: the loopback address; every rank of the job derives the same port
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    one = cluster.torch_distributed_env()
    assert (one["MASTER_ADDR"], one["WORLD_SIZE"], one["RANK"], one["MASTER_PORT"]) == ("127.0.0.1", "2", "0", str(port))


# ---- options and the grid -------------------------------------------------------------------------
def test_executor_options_are_checked():
    assert cluster.executor_from_name("inprocess") is None
    with pytest.raises(ConfigError, match="executor"):
        cluster.executor_from_name("kubernetes")
    with pytest.raises(ConfigError, match="--nodes"):
        cluster.executor_from_name("local", nodes=2)
    with pytest.raises(ConfigError, match="--gpus_per_node"):
        cluster.executor_from_name("slurm", gpus_per_node=-1)
    ex = cluster.executor_from_name("local", gpus_per_node=2)
    assert ex.tasks_per_job == 2 and ex.parameters["gpus_per_node"] == 2
    with pytest.raises(ConfigError, match="--device: cuda:1"):
        ex.run_configs([make_config(device="cuda:1")])
    with pytest.raises(ConfigError, match="no GPU"):
        cluster.executor_from_name("local").run_configs([make_config(device="cuda")])
    with pytest.raises(TypeError, match="executor_from_name"):
        sweep(make_config(), {}, executor=object())


def test_parse_grid(tmp_path):
    assert parse_grid(["optimizer_lr=1e-3,1e-4", "tasks=semseg;semseg,depth", "aspp_rates=3,6,9;"]) == {
        "optimizer_lr": ["1e-3", "1e-4"], "tasks": ["semseg", "semseg,depth"], "aspp_rates": ["3,6,9", ""]}
    (tmp_path / "g.yaml").write_text("model_name: [deeplabv3p, deeplabv3p_multitask]\nseed: 3\n")
    assert parse_grid(["num_epochs=1,2"], str(tmp_path / "g.yaml")) == {
        "model_name": ["deeplabv3p", "deeplabv3p_multitask"], "seed": [3], "num_epochs": ["1", "2"]}
    (tmp_path / "g.json").write_text(json.dumps({"optimizer": ["sgd", "adam"]}))
    assert parse_grid([], str(tmp_path / "g.json")) == {"optimizer": ["sgd", "adam"]}
    for items, match in ((["optimiser_lr=1"], "did you mean optimizer_lr"), (["seed"], "FIELD=V1"),
                         (["seed=1", "seed=2"], "given twice"), (["seed=,"], "no values")):
        with pytest.raises(ConfigError, match=match):
            parse_grid(items)
    (tmp_path / "bad.yaml").write_text("[1, 2")
    with pytest.raises(ConfigError, match="bad.yaml"):
        parse_grid([], str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        parse_grid([], str(tmp_path / "missing.yaml"))
    # the command's own flags and the config's flags do not collide (argparse would raise)
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["--grid", "seed=1,2", "--seed", "4", "--executor", "local"])
    assert (args.grid, args.seed, args.executor) == (["seed=1,2"], "4", "local")
