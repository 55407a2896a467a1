"""The launch scripts' --dry-run: the exact gcloud / xpk / srun / ssh commands for given
arguments (parsed back with shlex, so the quoting is checked too), and clear errors on missing
or bad arguments."""
import fnmatch
import os
import shlex
import subprocess

import pytest

from tests import support

ROOT = str(support.ROOT)


def _run(script, *args):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)


def _lines(result):
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.strip().splitlines()]


def _opt(argv, flag):
  return argv[argv.index(flag) + 1]


TPU = ["--project", "proj", "--zone", "us-west4-a", "--tpu", "hawk-v5e",
       "--accelerator", "v5litepod-64"]


def test_tpu_pod_dry_run_stage2():
  lines = _lines(_run("tpu_pod.sh", "--dry-run", *TPU, "--stage", "2", "--size", "hawk7b",
                      "--workdir", "gs://b/stage2", "--data", "gs://b/data/hawk",
                      "--from_stage", "gs://b/stage1", "--batch", "128", "--",
                      "--config.optim.peak_lr=2e-5"))
  create = lines[0]
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "describe"]
  cut = create.index("||")  # reuse the slice when it exists, else create it
  assert create[cut + 1:cut + 6] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
  assert _opt(create[cut:], "--accelerator-type") == "v5litepod-64"
  assert _opt(create[cut:], "--version") == "v2-alpha-tpuv5-lite"
  assert _opt(create[cut:], "--zone") == "us-west4-a" and _opt(create[cut:], "--project") == "proj"
  ssh = [line for line in lines if line[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
  assert all("--worker=all" in line for line in ssh)
  install = [line for line in ssh if "pip install" in _opt(line, "--command")]
  assert install and '".[tpu]"' in _opt(install[0], "--command")
  remote = shlex.split(_opt(ssh[-1], "--command").split("&& cd ~/hawk-jax &&")[1])
  train = remote[:remote.index("2>&1")]
  assert train == ["python3", "-m", "hawk_jax.train", "--distributed", "--config",
                   "configs/stage2_finetune.py:size=hawk7b,variant=paper",
                   "--workdir", "gs://b/stage2", "--config.data.dir=gs://b/data/hawk",
                   "--config.init.from_stage=gs://b/stage1", "--config.train.batch_size=128",
                   "--config.train.chip=v5e", "--config.optim.peak_lr=2e-5"]
  scp = lines[-1]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "logs/hawk-v5e" in scp
  assert not any("delete" in line for line in lines)


def test_tpu_pod_stage3_teardown_and_clone():
  lines = _lines(_run("tpu_pod.sh", "--dry-run", *TPU, "--stage", "3", "--workdir", "gs://b/s3",
                      "--data", "gs://b/data/hawk", "--from_stage", "gs://b/stage2", "--repo",
                      "https://github.com/x/hawk-jax.git", "--branch", "main", "--spot",
                      "--teardown"))
  assert "--spot" in lines[0]
  assert any("git clone --depth 1 --branch main https://github.com/x/hawk-jax.git"
             in _opt(line, "--command") for line in lines if "--command" in line)
  run = [line for line in lines
         if "--command" in line and "-m hawk_jax.eval " in _opt(line, "--command")]
  # every host of the slice joins the sharded evaluation
  assert run and "--worker=all" in run[0]
  assert "-m hawk_jax.eval --distributed --checkpoint gs://b/stage2" in _opt(run[0], "--command")
  assert "--checkpoint gs://b/stage2 --data_dir gs://b/data/hawk --out gs://b/s3" in _opt(
      run[0], "--command")
  assert lines[-1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "hawk-v5e"]
  only = _lines(_run("tpu_pod.sh", "--dry-run", "--project", "p", "--zone", "z", "--tpu", "t",
                     "--teardown"))
  assert only == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "t", "--zone", "z",
                   "--project", "p", "--quiet"]]


@pytest.mark.parametrize("missing,flag", [("--project", "--project"),
                                          ("--workdir", "--workdir"),
                                          ("--accelerator", "--accelerator")])
def test_tpu_pod_missing_argument(missing, flag):
  args = TPU + ["--stage", "1", "--workdir", "gs://b/w", "--data", "gs://b/d"]
  i = args.index(missing)
  del args[i:i + 2]
  r = _run("tpu_pod.sh", "--dry-run", *args)
  assert r.returncode == 2 and f"error: {flag} is required" in r.stderr and not r.stdout


def test_tpu_pod_bad_values():
  r = _run("tpu_pod.sh", "--dry-run", *TPU, "--stage", "4", "--workdir", "w", "--data", "d")
  assert r.returncode == 2 and "--stage must be 1, 2 or 3" in r.stderr
  r = _run("tpu_pod.sh", "--dry-run", *TPU, "--stage", "1", "--size", "huge", "--workdir", "w",
           "--data", "d")
  assert r.returncode == 2 and "--size must be" in r.stderr
  r = _run("tpu_pod.sh", "--dry-run", *TPU, "--stage", "3", "--workdir", "w", "--data", "d")
  assert r.returncode == 2 and "--from_stage" in r.stderr
  r = _run("tpu_pod.sh", "--bogus")
  assert r.returncode == 2 and "unknown argument '--bogus'" in r.stderr
  r = _run("tpu_pod.sh", "--dry-run", *TPU, "--stage", "1", "--workdir")
  assert r.returncode == 2 and "--workdir needs a value" in r.stderr


@pytest.mark.parametrize("script", ["tpu_pod.sh", "xpk.sh", "gpu.sh"])
def test_help(script):
  r = _run(script, "--help")
  assert r.returncode == 0 and "Usage:" in r.stdout and "--dry-run" in r.stdout


def test_xpk_dry_run():
  lines = _lines(_run("xpk.sh", "--dry-run", "--cluster", "hawk-gke", "--project", "proj",
                      "--zone", "us-east5-a", "--tpu_type", "v5litepod-64", "--num_slices", "2",
                      "--workload", "hawk-s1", "--stage", "1", "--size", "hawk7b", "--workdir",
                      "gs://b/s1", "--data", "gs://b/captions"))
  assert len(lines) == 1
  xpk = lines[0]
  assert xpk[:3] == ["xpk", "workload", "create"]
  assert _opt(xpk, "--cluster") == "hawk-gke" and _opt(xpk, "--tpu-type") == "v5litepod-64"
  assert _opt(xpk, "--num-slices") == "2" and _opt(xpk, "--workload") == "hawk-s1"
  assert _opt(xpk, "--base-docker-image") == "python:3.11"
  assert _opt(xpk, "--script-dir") == ROOT
  command = shlex.split(_opt(xpk, "--command"))
  start = command.index("hawk_jax.train") - 2
  assert command[start:] == ["python3", "-m", "hawk_jax.train", "--distributed", "--config",
                             "configs/stage1_pretrain.py:size=hawk7b,variant=paper", "--workdir",
                             "gs://b/s1", "--config.data.dir=gs://b/captions",
                             "--config.train.chip=v5e"]
  image = _lines(_run("xpk.sh", "--dry-run", "--cluster", "c", "--project", "p", "--zone", "z",
                      "--tpu_type", "v5p-128", "--docker_image", "gcr.io/p/hawk:1", "--stage",
                      "2", "--workdir", "gs://w", "--data", "gs://d"))[0]
  assert _opt(image, "--docker-image") == "gcr.io/p/hawk:1" and "--script-dir" not in image
  assert _opt(image, "--command").startswith("python3 -m hawk_jax.train --distributed")
  delete = _lines(_run("xpk.sh", "--dry-run", "--cluster", "c", "--project", "p", "--zone", "z",
                       "--workload", "w", "--delete"))
  assert delete == [["xpk", "workload", "delete", "--workload", "w", "--cluster", "c",
                     "--project", "p", "--zone", "z"]]
  r = _run("xpk.sh", "--dry-run", "--project", "p", "--zone", "z", "--stage", "1")
  assert r.returncode == 2 and "error: --cluster is required" in r.stderr


def test_gpu_srun_dry_run():
  lines = _lines(_run("gpu.sh", "--dry-run", "--launcher", "srun", "--nodes", "4",
                      "--partition", "a3", "--time", "24:00:00", "--stage", "2", "--size",
                      "hawk7b", "--variant", "released", "--workdir", "/shared/s2", "--data",
                      "/shared/hawk", "--from_stage", "/shared/s1", "--repo_dir", "/shared/code"))
  assert len(lines) == 1
  srun = lines[0]
  assert srun[:5] == ["srun", "--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                      "--partition=a3"]
  assert srun[5:8] == ["--time=24:00:00", "bash", "-c"]
  assert shlex.split(srun[8]) == [
      "cd", "/shared/code", "&&", "python3", "-m", "hawk_jax.train", "--distributed",
      "--config", "configs/stage2_finetune.py:size=hawk7b,variant=released", "--workdir",
      "/shared/s2", "--config.data.dir=/shared/hawk", "--config.init.from_stage=/shared/s1"]
  one = _lines(_run("gpu.sh", "--dry-run", "--launcher", "srun", "--nodes", "4", "--stage", "3",
                    "--workdir", "/s3", "--data", "/d", "--from_stage", "/s2"))[0]
  assert one[1] == "--nodes=1" and "-m hawk_jax.eval " in one[-1]


def test_gpu_ssh_dry_run():
  r = _run("gpu.sh", "--dry-run", "--launcher", "ssh", "--hosts", "gpu-a,gpu-b,gpu-c",
           "--port", "9000", "--stage", "1", "--size", "hawk7b", "--workdir", "/r/s1", "--data",
           "/d/captions", "--repo_dir", "/code", "--logs", "/tmp/line")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  assert lines[0] == "mkdir -p /tmp/line" and lines[-1] == "wait"
  for i, (line, host) in enumerate(zip(lines[1:-1], ["gpu-a", "gpu-b", "gpu-c"])):
    argv = shlex.split(line)
    assert argv[:2] == ["ssh", host] and argv[-4:] == [">", f"/tmp/line/{host}.log", "2>&1", "&"]
    remote = shlex.split(argv[2])
    assert remote[:3] == ["cd", "/code", "&&"]
    assert remote[3:6] == ["JAX_COORDINATOR_ADDRESS=gpu-a:9000", "JAX_NUM_PROCESSES=3",
                           f"JAX_PROCESS_ID={i}"]
    assert remote[6:10] == ["python3", "-m", "hawk_jax.train", "--distributed"]
  assert len(lines) == 5
  r = _run("gpu.sh", "--dry-run", "--launcher", "ssh", "--stage", "1", "--workdir", "w",
           "--data", "d")
  assert r.returncode == 2 and "error: --hosts is required" in r.stderr
  r = _run("gpu.sh", "--dry-run", "--stage", "1", "--workdir", "w", "--data", "d")
  assert r.returncode == 2 and "--launcher" in r.stderr
  r = _run("gpu.sh", "--dry-run", "--launcher", "mpirun", "--stage", "1", "--workdir", "w",
           "--data", "d")
  assert r.returncode == 2 and "--launcher must be srun, ssh or local" in r.stderr


XPK = ["--cluster", "c", "--project", "p", "--zone", "z", "--tpu_type", "v5litepod-64",
       "--stage", "2", "--workdir", "gs://w", "--data", "gs://d", "--from_stage", "gs://s1"]


def test_xpk_build_image_dry_run():
  lines = _lines(_run("xpk.sh", "--dry-run", *XPK, "--build_image", "gcr.io/p/hawk-jax:v1"))
  assert len(lines) == 3
  build, push, xpk = lines
  assert build[:2] == ["docker", "build"] and _opt(build, "-t") == "gcr.io/p/hawk-jax:v1"
  assert _opt(build, "--platform") == "linux/amd64"  # TPU hosts, whatever machine builds
  assert _opt(build, "-f") == os.path.join(ROOT, "Dockerfile") and build[-1] == ROOT
  assert push == ["docker", "push", "gcr.io/p/hawk-jax:v1"]
  assert xpk[:3] == ["xpk", "workload", "create"]
  assert _opt(xpk, "--docker-image") == "gcr.io/p/hawk-jax:v1"
  assert "--base-docker-image" not in xpk and "--script-dir" not in xpk
  command = _opt(xpk, "--command")
  assert "pip" not in command  # installed in the image, not at container start
  assert command.startswith("python3 -m hawk_jax.train --distributed --config "
                            "configs/stage2_finetune.py:size=hawk7b,variant=paper")


@pytest.mark.parametrize("images", [["--build_image", "a:1", "--docker_image", "b:1"],
                                    ["--build_image", "a:1", "--base_docker_image", "py:3"],
                                    ["--docker_image", "b:1", "--base_docker_image", "py:3"]])
def test_xpk_one_image_source(images):
  r = _run("xpk.sh", "--dry-run", *XPK, *images)
  assert r.returncode == 2 and "give one of --build_image" in r.stderr and not r.stdout


def test_xpk_build_image_needs_a_value():
  r = _run("xpk.sh", "--dry-run", *XPK, "--build_image")
  assert r.returncode == 2 and "--build_image needs a value" in r.stderr


def _docker_lines(name):
  """The file's instructions: comments dropped, continuation lines joined."""
  text = (support.ROOT / name).read_text(encoding="utf-8")
  text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
  return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def test_dockerfile_installs_the_project():
  lines = _docker_lines("Dockerfile")
  assert lines[0] == "FROM python:3.11-slim"
  assert "ARG EXTRAS=tpu" in lines
  runs = [line for line in lines if line.startswith("RUN ")]
  assert any('pip install ".[${EXTRAS}]"' in line for line in runs)  # the dependencies
  copies = [line for line in lines if line.startswith("COPY ")]
  assert "COPY . ." in copies
  after_copy = runs[[i for i, line in enumerate(runs)
                     if lines.index(line) > lines.index("COPY . .")][0]]
  assert "pip install --no-deps ." in after_copy  # the checkout itself, after its code
  assert "WORKDIR /app" in lines  # the stage commands name configs/ by relative path
  assert any(line.startswith("USER ") for line in lines)
  # the XPK command runs from the image's working directory: configs/ must be there
  assert "configs/" not in "\n".join(_docker_lines(".dockerignore"))


def test_dockerignore_keeps_data_and_runs_out():
  ignored = set(_docker_lines(".dockerignore"))
  assert {".git", "data/", "workdir*", "runs/"} <= ignored
  for kept in ("hawk_jax", "data_pipelines", "configs", "setup.py", "pyproject.toml"):
    assert not any(fnmatch.fnmatch(kept, p.rstrip("/")) for p in ignored), kept
