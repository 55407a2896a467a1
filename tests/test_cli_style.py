"""One command-line style: every console script answers --help with exit 0, a usage line, the
shared --log_level flag and help text for every flag; the launcher script too."""
import importlib.metadata
import subprocess

import pytest

from tests.support import ROOT


def _scripts():
  eps = importlib.metadata.entry_points(group="console_scripts")
  return sorted((ep for ep in eps if ep.name.startswith("hawk-")), key=lambda ep: ep.name)


EXPECTED = {"hawk-extract", "hawk-train", "hawk-describe", "hawk-chat", "hawk-evaluate",
            "hawk-convert", "hawk-plan", "hawk-demo", "hawk-show", "hawk-synthetic",
            "hawk-tokenizer", "hawk-timeline"}


def test_the_console_scripts_are_installed():
  missing = EXPECTED - {ep.name for ep in _scripts()}
  assert not missing, (f"console scripts {sorted(missing)} are not installed: "
                       "pip install -e . (setup.py entry_points)")


def _options_without_help(text: str) -> list[str]:
  """Option lines of argparse's --help with no description after them."""
  lines = text.splitlines()
  # Only the option lists (argparse's "options:" and a group's), not the description above.
  first = next((i for i, line in enumerate(lines) if line.endswith(":") and
                not line.startswith(" ") and "options" in line), len(lines))
  lines = lines[first:]
  bad = []
  for i, line in enumerate(lines):
    stripped = line.strip()
    if not line.startswith("  -") or stripped in ("-h, --help",):
      continue
    parts = stripped.split("  ", 1)
    described = len(parts) > 1 and parts[1].strip()
    follows = i + 1 < len(lines) and lines[i + 1].startswith(" " * 6) and \
        not lines[i + 1].strip().startswith("-")
    if not described and not follows:
      bad.append(stripped)
  return bad


@pytest.mark.parametrize("ep", _scripts(), ids=lambda ep: ep.name)
def test_help_exits_0_with_every_flag_described(ep, capsys):
  main = ep.load()
  with pytest.raises(SystemExit) as e:
    main(["--help"])
  assert e.value.code in (0, None)
  out = capsys.readouterr().out
  assert out.startswith("usage:"), out[:200]
  assert "--log_level" in out
  assert _options_without_help(out) == []


def test_the_cpu_launcher_answers_help_without_making_anything(tmp_path):
  r = subprocess.run(["bash", str(ROOT / "launch/local_cpu.sh"), "--help"], cwd=tmp_path,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stdout + r.stderr
  assert list(tmp_path.iterdir()) == []  # no folder named --help (or anything else)


def test_a_missing_optional_dependency_is_one_line_naming_the_extra(monkeypatch, capsys):
  from hawk_jax import console
  real = console.importlib.util.find_spec
  monkeypatch.setattr(console.importlib.util, "find_spec",
                      lambda name, *a: None if name == "torch" else real(name, *a))
  from hawk_jax.convert import cli
  with pytest.raises(SystemExit) as e:
    cli.main(["to-torch", "--checkpoint", "/nonexistent", "--out", "x.pth"])
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      "error: convert to-torch needs torch: pip install -e '.[torch]' (or pip install "
      "'hawk-jax[torch]')\n")


def test_print_config_and_the_closest_key(capsys):
  import json

  from hawk_jax.train import __main__ as train_cli
  spec = f"{ROOT / 'configs/stage1_pretrain.py'}:size=tiny"
  assert train_cli.main(["--config", spec, "--config.train.batch_size=8", "--print_config"]) == 0
  cfg = json.loads(capsys.readouterr().out)
  assert cfg["train"]["batch_size"] == 8 and cfg["size"] == "tiny"
  with pytest.raises(SystemExit) as e:
    train_cli.main(["--config", spec, "--config.train.batchsize=8", "--print_config"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1].endswith(
      "--config.train.batchsize: the config has no field 'batchsize'; did you mean "
      "--config.train.batch_size?"), err
