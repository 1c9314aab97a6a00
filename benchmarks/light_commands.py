"""CPU seconds of the commands that do not train, each in a fresh process (goal: under 1 s each).

    .venv/bin/python benchmarks/light_commands.py [--store DIR]

Without ``--store`` a tiny two-run study is trained into a temporary folder first (about 10 s),
so that ``status``, ``report`` and ``rank`` have runs to read. Each command runs through
``light_command`` below, which also says whether it imported torch (it must not).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

#: Runs the studybench CLI with each command of the JSON list in argv[1], one after the other, and
#: prints {"torch": imported so far?, "cpu_s": CPU seconds of the process so far, "rc": exit code} per
#: command. ``ui`` would replace the process with the MLflow server: os.execve is stubbed out.
PROBE = textwrap.dedent(
    """
    import json, os, resource, sys
    os.execve = lambda *args: None
    from studybench.cli import app
    for args in json.loads(sys.argv[1]):
        try:
            app(args, standalone_mode=False)
            rc = 0
        except SystemExit as exit:
            rc = exit.code
        except Exception:
            rc = 2
        usage = resource.getrusage(resource.RUSAGE_SELF)
        found = {"torch": "torch" in sys.modules, "cpu_s": usage.ru_utime + usage.ru_stime, "rc": rc}
        print("PROBE " + json.dumps(found), flush=True)
    """
)

STUDY = """\
study: light
seeds: [0]
baseline: ce
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce, dice]
"""


def commands(out: Path) -> list[list[str]]:
    """Every command that does not train, as run from the folder that holds results/."""
    return [
        ["--help"],
        ["losses"],
        ["datasets"],
        ["schemes"],
        ["archs"],
        ["status", "study.yaml"],
        ["status", "--study", "light"],
        ["report", "--study", "light", "--out", str(out)],
        ["rank", "--study", "light"],
        ["ui"],
    ]


def light_commands(commands: list[list[str]], cwd: Path) -> list[dict]:
    """``{"torch": bool, "cpu_s": float, "rc": int}`` after each command, run in turn in one fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    found = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    if len(found) != len(commands):
        raise RuntimeError(f"the probe stopped after {len(found)} commands:\n{done.stdout}\n{done.stderr}")
    return found


def trained_store(folder: Path) -> Path:
    (folder / "study.yaml").write_text(STUDY)
    subprocess.run([sys.executable, "-m", "studybench.cli", "run", "study.yaml"], cwd=folder, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a folder with study.yaml and results/ of the 'light' study")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.store or trained_store(Path(tmp))
        print(f"{'command':<40} {'CPU s':>6}  torch")
        for command in commands(Path(tmp) / "report"):
            (found,) = light_commands([command], folder)
            print(f"{'studybench ' + ' '.join(command[:2]):<40} {found['cpu_s']:>6.2f}  {found['torch']}")


if __name__ == "__main__":
    main()
